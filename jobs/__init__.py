"""Background jobs: email delivery from the transactional outbox over RQ.

- `dispatcher`: claims due outbox rows (`FOR UPDATE SKIP LOCKED`) and enqueues them on RQ;
  re-enqueues rows whose lease ran out (Redis keeps nothing across a restart).
- `tasks`: the RQ job functions; `delivery`: claim → SMTP send → record, exactly once in effect;
  `mailer`: SMTP behind a circuit breaker; `emails`: Jinja2 templates (text + HTML).
- `retry`: exponential backoff with jitter; `dead_letters`: list and replay dead messages.
- `worker`: `flask --app wsgi jobs worker` (queues high, default, low + the dispatcher);
  `cli`: the `jobs` command group; `devsink`: the development mail sink of `make run`.

See docs/jobs.md for the design, the settings and the failure modes.
"""
