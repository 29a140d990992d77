"""The fixtures every test can name, registered from tests/support (one module per concern):
a migrated app and a PostgreSQL and Redis database per test process, truncated between tests
(application, database), accounts, a real SMTP server, background jobs, a Redis server of a
test's own, the production server and job worker processes, a webhook receiver, headless
Chromium (browser)."""

pytest_plugins = [
    "tests.support.database",
    "tests.support.application",
    "tests.support.accounts",
    "tests.support.smtp",
    "tests.support.jobs",
    "tests.support.redis_server",
    "tests.support.gunicorn",
    "tests.support.workers",
    "tests.support.logs",
    "tests.support.tracing",
    "tests.support.webhooks",
    "tests.support.oidc",
    "tests.support.webhook_admin",
    "tests.support.browser",
    "tests.support.oauth_browser",
]
