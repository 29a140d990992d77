"""Background jobs: email delivery from the transactional outbox over RQ.

- `dispatcher`: claims due outbox rows (`FOR UPDATE SKIP LOCKED`) and enqueues them on RQ;
  re-enqueues rows whose lease ran out (Redis keeps nothing across a restart).
- `tasks`: the RQ job functions; `delivery`: claim → SMTP send → record, exactly once in effect;
  `mailer`: SMTP behind a circuit breaker; `emails`: Jinja2 templates (text + HTML).
- `retry`: exponential backoff with jitter; `dead_letters`: list and replay dead messages.
- `worker`: `flask --app wsgi jobs worker` (queues high, default, low + the dispatcher), the one
  way to run jobs: `runtime` holds the application the worker binds;
  `cli`: the `jobs` command group; `admin`: /api/v1/admin/jobs (dead letters, replay); both are
  registered by the composition root (`webapp.factory`), which this package never imports;
  `devsink`: the development mail sink of `make run`.
- `settings`: `JobsSettings`, the variables only this package reads (`SMTP_*`, `MAIL_FROM`,
  `JOBS_*`), validated by the composition root at start-up beside webapp's `Settings`.

See docs/jobs.md for the design, the settings and the failure modes.
"""
