"""Observability in-process: JSON log lines with correlation ids, no secret in any log output
after the auth flows, OpenTelemetry spans (Flask, SQLAlchemy, Redis, the job) linked parent to
child, and /metrics with route templates and the scrape-time gauges.

The multiprocess aggregation over gunicorn workers, and everything against a real Prometheus and
Alertmanager, is in tests/e2e/test_observability_stack.py.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

import observability.logging as log_setup
from tests.support.accounts import STRONG_PASSWORD, Account

UUID_RE = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"


def _token_from(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def _mail(sink: Any, recipient: str, subject_start: str) -> Any:
    [mail] = [m for m in sink.to(recipient) if m.subject.startswith(subject_start)]
    return mail


# --- logs ----------------------------------------------------------------------------------------


def test_log_lines_are_json_with_request_and_user_ids(
    client: FlaskClient, member: Account, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    request_id = "obs-test-" + uuid.uuid4().hex
    response = client.get(
        "/api/v1/users/me", headers={**member.headers, "X-Request-ID": request_id}
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id

    lines = json_lines()
    matching = [
        line
        for line in lines
        if line["logger"] == "gatehouse.access" and line.get("request_id") == request_id
    ]
    assert len(matching) == 1, lines[-5:]
    access = matching[0]
    assert access["user_id"] == str(member.id)
    assert access["level"] == "INFO"
    assert access["message"] == "request"
    assert (access["method"], access["route"], access["status"]) == ("GET", "/api/v1/users/me", 200)
    assert access["duration_ms"] > 0
    assert access["timestamp"]
    # Present (null without tracing; see the tracing test for real ids).
    assert "trace_id" in access
    assert "span_id" in access


def _access_lines(lines: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [
        (line["path"], line["status"]) for line in lines if line["logger"] == "gatehouse.access"
    ]


def test_sampling_drops_successful_fast_requests_only(
    make_app: Callable[..., Flask],
    member: Account,
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    client = make_app(access_log_sample=0.0, access_log_slow_ms=60_000).test_client()
    assert client.get("/api/v1/users/me", headers=member.headers).status_code == 200
    assert client.get("/api/v1/users/me").status_code == 401
    assert client.get("/api/v1/no-such-thing").status_code == 404
    assert (
        client.post("/api/v1/auth/login", data="{", content_type="application/json").status_code
        == 400
    )
    assert _access_lines(json_lines()) == [
        ("/api/v1/users/me", 401),
        ("/api/v1/no-such-thing", 404),
        ("/api/v1/auth/login", 400),
    ]


def test_sampling_never_drops_a_slow_request(
    make_app: Callable[..., Flask],
    member: Account,
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """With the threshold at 0 ms every request is slow: none is sampled away."""
    client = make_app(access_log_sample=0.0, access_log_slow_ms=0).test_client()
    for _ in range(3):
        assert client.get("/api/v1/users/me", headers=member.headers).status_code == 200
    assert _access_lines(json_lines()) == [("/api/v1/users/me", 200)] * 3


def test_a_full_sample_logs_every_request(
    make_app: Callable[..., Flask],
    member: Account,
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    client = make_app(access_log_sample=1.0, access_log_slow_ms=60_000).test_client()
    for _ in range(3):
        assert client.get("/api/v1/users/me", headers=member.headers).status_code == 200
    assert _access_lines(json_lines()) == [("/api/v1/users/me", 200)] * 3


def test_no_password_token_or_authorization_header_reaches_any_log(
    root_logging: logging.Logger,
    capfd: pytest.CaptureFixture[str],
    jobs_app: Flask,
    smtp_sink: Any,
    work_jobs: Callable[..., int],
    json_lines: Callable[[], list[dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Register, verify, log in (right and wrong), refresh (and reuse), change the password,
    reset it, log out — with the emails really sent by the job code — then scan every byte of log
    output: the JSON lines of the root logger, the records as pytest's log capture holds them,
    stdout (where the app's own handler writes) and stderr.

    """
    app = jobs_app
    client = app.test_client()
    # The app's own stdout handler, bound to the stdout captured now (as `create_app` does at
    # start), at the most talkative level: DEBUG must not leak either.
    log_setup.configure("DEBUG")
    caplog.set_level(logging.DEBUG)
    # Except the test's own SMTP server (aiosmtpd), which logs every DATA line at DEBUG: it is the
    # mailbox the links are sent to, not Gatehouse.
    smtp_server_log = logging.getLogger("mail.log")
    smtp_server_level = smtp_server_log.level
    smtp_server_log.setLevel(logging.INFO)
    secrets: list[str] = []
    email = f"secret-{uuid.uuid4().hex[:8]}@example.com"
    first, second, third, wrong = (
        STRONG_PASSWORD,
        "quiet-Harbor-71-meadow",
        "amber-Falcon-58-river",
        "wrong-Guess-00-attempt",
    )
    secrets += [first, second, third, wrong]

    assert (
        client.post(
            "/api/v1/auth/register", json={"email": email, "password": first, "name": "Secret"}
        ).status_code
        == 201
    )
    work_jobs(app)
    verify_token = _token_from(_mail(smtp_sink, email, "Confirm your email").link)
    secrets.append(verify_token)
    assert client.post("/api/v1/auth/verify-email", json={"token": verify_token}).status_code == 204

    assert (
        client.post("/api/v1/auth/login", json={"email": email, "password": wrong}).status_code
        == 401
    )
    login = client.post("/api/v1/auth/login", json={"email": email, "password": first})
    assert login.status_code == 200, login.json
    access, refresh = login.json["access_token"], login.json["refresh_token"]
    secrets += [access, refresh]
    bearer = {"Authorization": f"Bearer {access}"}
    assert client.get("/api/v1/users/me", headers=bearer).status_code == 200
    assert (
        client.get(
            "/api/v1/users/me", headers={"Authorization": "Bearer not-a-valid-token-" + wrong}
        ).status_code
        == 401
    )

    rotated = client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
    assert rotated.status_code == 200
    secrets += [rotated.json["access_token"], rotated.json["refresh_token"]]
    # Reuse of the old refresh token: detected, the session revoked.
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": refresh}).status_code == 401

    again = client.post("/api/v1/auth/login", json={"email": email, "password": first})
    assert again.status_code == 200
    secrets += [again.json["access_token"], again.json["refresh_token"]]
    bearer = {"Authorization": f"Bearer {again.json['access_token']}"}
    changed = client.post(
        "/api/v1/auth/password",
        json={"current_password": first, "new_password": second},
        headers=bearer,
    )
    assert changed.status_code == 204, changed.json

    assert client.post("/api/v1/auth/password-reset", json={"email": email}).status_code == 202
    work_jobs(app)
    reset_token = _token_from(_mail(smtp_sink, email, "Reset your").link)
    secrets.append(reset_token)
    assert (
        client.post(
            "/api/v1/auth/password-reset/confirm", json={"token": reset_token, "password": third}
        ).status_code
        == 200
    )
    final = client.post("/api/v1/auth/login", json={"email": email, "password": third})
    assert final.status_code == 200
    secrets += [final.json["access_token"], final.json["refresh_token"]]
    final_bearer = {"Authorization": f"Bearer {final.json['access_token']}"}
    assert client.post("/api/v1/auth/logout", headers=final_bearer).status_code == 204
    work_jobs(app)  # the new-login alerts and the rest of the outbox go through the workers too

    smtp_server_log.setLevel(smtp_server_level)
    lines = json_lines()
    assert any(line["logger"] == "gatehouse.access" for line in lines)
    assert any(line["logger"].startswith(("jobs", "rq")) for line in lines), "no worker line"
    captured = capfd.readouterr()
    raw_records = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    outputs = {
        "root logger (JSON lines)": "\n".join(json.dumps(line) for line in lines),
        "raw log records": raw_records,
        "stdout": captured.out,
        "stderr": captured.err,
    }
    assert len(set(secrets)) == len(secrets) >= 14
    stdout_loggers = {json.loads(line)["logger"] for line in captured.out.splitlines() if line}
    assert "gatehouse.access" in stdout_loggers, "the app's handler writes to stdout"
    for where, text in outputs.items():
        for secret in secrets:
            at = text.find(secret)
            assert at < 0, f"a secret appears in {where}: ...{text[max(0, at - 300) : at + 80]}"
        assert "Bearer ey" not in text, where


# --- traces --------------------------------------------------------------------------------------


def test_tracing_is_off_without_an_endpoint(app: Flask, make_app: Callable[..., Flask]) -> None:
    from observability import tracing

    assert tracing.init_app(make_app(), None) is False


def test_spans_of_flask_sqlalchemy_redis_and_the_job_are_linked(
    traced: tuple[Flask, Any],
    smtp_sink: Any,
    work_jobs: Callable[..., int],
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    from opentelemetry.trace import SpanKind

    app, exporter = traced
    client = app.test_client()
    email = f"traced-{uuid.uuid4().hex[:8]}@example.com"
    register = client.post(
        "/api/v1/auth/register", json={"email": email, "password": STRONG_PASSWORD, "name": "T"}
    )
    assert register.status_code == 201
    request_id = register.headers["X-Request-ID"]
    work_jobs(app)
    assert smtp_sink.to(email), "the verification email was not sent"
    login = client.post("/api/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD})
    assert login.status_code in (200, 403)  # verification may be required: spans either way

    spans = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    [register_span] = [
        s for s in servers if s.attributes.get("http.route") == "/api/v1/auth/register"
    ]
    trace_id = register_span.context.trace_id

    def descends_from(span: Any, ancestor: Any) -> bool:
        parent = span.parent
        while parent is not None:
            if parent.span_id == ancestor.context.span_id:
                return True
            parent = by_id[parent.span_id].parent if parent.span_id in by_id else None
        return False

    in_request = [s for s in spans if s.context.trace_id == trace_id and s is not register_span]
    sql = [s for s in in_request if s.attributes.get("db.system") == "postgresql"]
    assert sql, "no SQLAlchemy span in the registration's trace"
    assert all(descends_from(s, register_span) for s in sql)
    assert any(s.parent.span_id == register_span.context.span_id for s in sql)

    redis_spans = [s for s in spans if s.attributes.get("db.system") == "redis"]
    assert redis_spans, "no Redis span at all"
    assert any(
        s.parent is not None and s.context.trace_id in {x.context.trace_id for x in servers}
        for s in redis_spans
    ), "no Redis span inside a request"

    # The job that sent the verification email continues the request's trace.
    jobs = [s for s in spans if s.name.startswith("email.deliver") and s.kind == SpanKind.CONSUMER]
    assert jobs, "no job span"
    [job] = [s for s in jobs if s.context.trace_id == trace_id]
    assert descends_from(job, register_span)
    assert any(
        s.attributes.get("db.system") == "postgresql" and descends_from(s, job) for s in spans
    )

    # Log lines written inside the request carry its trace and span ids.
    [access] = [
        line
        for line in json_lines()
        if line["logger"] == "gatehouse.access" and line["request_id"] == request_id
    ]
    assert access["trace_id"] == format(trace_id, "032x")
    assert access["span_id"] == format(register_span.context.span_id, "016x")


# --- metrics -------------------------------------------------------------------------------------


def _samples(body: str) -> list[Any]:
    return [sample for family in text_string_to_metric_families(body) for sample in family.samples]


def test_metrics_use_route_templates_and_expose_the_scrape_time_gauges(
    app: Flask, client: FlaskClient, member: Account, redis_url: str
) -> None:
    from datetime import UTC, datetime, timedelta

    import redis
    from rq import Queue
    from rq.registry import FailedJobRegistry
    from sqlalchemy import func, select, update

    from webapp.extensions import db
    from webapp.outbox.models import PENDING, OutboxMessage

    def scraped(name: str) -> float:
        samples = _samples(client.get("/metrics").get_data(as_text=True))
        return float(sum(s.value for s in samples if s.name == name))

    registrations_before = scraped("gatehouse_registrations_total")
    other = uuid.uuid4()
    assert client.get(f"/api/v1/users/{member.id}", headers=member.headers).status_code == 200
    assert client.get(f"/api/v1/users/{other}", headers=member.headers).status_code in (403, 404)
    assert client.delete(f"/api/v1/auth/sessions/{other}", headers=member.headers).status_code in (
        403,
        404,
    )
    assert client.get("/no/such/path/12345").status_code == 404
    assert (
        client.post(
            "/api/v1/auth/register",
            json={
                "email": f"m-{uuid.uuid4().hex[:6]}@example.com",
                "password": STRONG_PASSWORD,
                "name": "M",
            },
        ).status_code
        == 201
    )
    # Real RQ state in the test Redis: one job waiting on `default`, one dead letter on `high`.
    connection = redis.Redis.from_url(redis_url)
    waiting = Queue("default", connection=connection).enqueue("builtins.len", "x")
    dead = Queue("high", connection=connection).enqueue("builtins.len", "y")
    FailedJobRegistry(queue=Queue("high", connection=connection)).add(dead, exc_string="boom")
    assert waiting.id
    # The oldest unsent message is five minutes old: the age gauge must say so, not just be >= 0.
    with app.app_context():
        db.session.execute(
            update(OutboxMessage).values(created_at=datetime.now(UTC) - timedelta(seconds=300))
        )
        db.session.commit()
        pending = db.session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == PENDING)
        )
        db.session.remove()
    assert pending

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    body = response.get_data(as_text=True)
    samples = _samples(body)

    http = [s for s in samples if s.name.startswith("flask_http_request_duration_seconds")]
    routes = {s.labels["url_rule"] for s in http}
    assert {"/api/v1/users/<uuid:user_id>", "/api/v1/auth/sessions/<uuid:session_id>"} <= routes
    assert "None" in routes  # the exporter's label of a path no rule matched
    for route in routes:
        assert str(member.id) not in route
        assert str(other) not in route
        assert "12345" not in route
    assert {s.labels["method"] for s in http} >= {"GET", "DELETE", "POST"}
    assert {s.labels["status"] for s in http} >= {"200", "201", "404"}
    buckets = {s.labels["le"] for s in http if s.name.endswith("_bucket")}
    assert {"0.005", "0.1", "0.5", "5.0", "+Inf"} <= buckets
    assert any(s.name == "flask_http_request_duration_seconds_count" for s in samples)
    assert any(s.name == "flask_http_request_total" for s in samples)
    assert any(s.name == "flask_exporter_info" and s.value == 1 for s in samples)

    def value(name: str, **labels: str) -> float:
        [found] = [s.value for s in samples if s.name == name and s.labels == labels]
        return float(found)

    assert value("gatehouse_queue_depth", queue="default") == 1
    assert value("gatehouse_queue_depth", queue="low") == 0
    assert value("gatehouse_dead_letter_jobs", queue="high") == 1
    assert value("gatehouse_redis_up") == 1
    assert value("gatehouse_database_up") == 1
    assert value("gatehouse_outbox_messages", status="pending") == pending
    assert value("gatehouse_outbox_messages", status="dead") == 0
    assert 300 <= value("gatehouse_outbox_oldest_unsent_age_seconds") < 360
    assert value("gatehouse_db_pool_capacity") > 0
    assert any(s.name == "gatehouse_build_info" and s.value == 1 for s in samples)
    assert value("gatehouse_registrations_total") == registrations_before + 1


def test_a_second_app_in_one_process_still_counts_and_probes_are_not_counted(
    make_app: Callable[..., Flask],
) -> None:
    """The exporter installs no hook at all when its info gauge is already registered: every app
    has a registry of its own, and the second one built here must count like the first."""
    for _ in range(2):
        client = make_app().test_client()
        for path in ("/health", "/ready", "/metrics", "/api/docs/assets/x.css", "/healthz"):
            client.get(path)
        samples = _samples(client.get("/metrics").get_data(as_text=True))
        counted = {
            s.labels["url_rule"]: s.value
            for s in samples
            if s.name == "flask_http_request_duration_seconds_count"
        }
        assert counted == {"None": 1.0}  # /healthz only: the others are excluded
        assert sum(s.value for s in samples if s.name == "flask_http_request_total") == 1


def test_requests_refused_by_an_earlier_hook_are_measured_too(
    make_app: Callable[..., Flask],
) -> None:
    """The edge check answers from the first before_request hook: the exporter, which times a
    request from its own hook, must have seen it already."""
    client = make_app().test_client()
    assert client.get("/api/v1/users/me?q=" + "x" * 5000).status_code == 414
    samples = _samples(client.get("/metrics").get_data(as_text=True))
    counted = {
        (s.labels["url_rule"], s.labels["status"]): s.value
        for s in samples
        if s.name == "flask_http_request_duration_seconds_count"
    }
    assert counted == {("/api/v1/users/me", "414"): 1.0}


def test_a_registry_shared_by_two_apps_is_refused_not_silently_left_uncounted() -> None:
    from prometheus_client import CollectorRegistry

    from observability.metrics import init_http_metrics

    shared = CollectorRegistry()
    init_http_metrics(Flask("first"), shared)
    with pytest.raises(RuntimeError, match="no request hook"):
        init_http_metrics(Flask("second"), shared)


def test_requests_answered_by_the_catch_all_handler_count_as_unexpected_errors(
    make_app: Callable[..., Flask],
) -> None:
    from sqlalchemy.exc import OperationalError

    app = make_app()

    @app.get("/bug-for-test")
    def bug() -> None:
        raise RuntimeError("a bug")

    @app.get("/outage-for-test")
    def outage() -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    client = app.test_client()

    def exceptions() -> dict[str, float]:
        samples = _samples(client.get("/metrics").get_data(as_text=True))
        return {
            s.labels["status"]: s.value
            for s in samples
            if s.name == "gatehouse_http_unexpected_errors_total" and s.labels["method"] == "GET"
        }

    before = exceptions()
    assert client.get("/bug-for-test").status_code == 500
    assert client.get("/outage-for-test").status_code == 503
    assert client.get("/outage-for-test").status_code == 503
    assert client.get("/no/such/path").status_code == 404  # an answer, not an exception
    after = exceptions()

    assert after.get("500", 0) - before.get("500", 0) == 1
    assert after.get("503", 0) - before.get("503", 0) == 2
    assert after.get("404", 0) == before.get("404", 0) == 0
    # To the exporter they are answers with a status (its exception counter is for exceptions
    # that escape every handler, which Flask's teardown sees).
    samples = _samples(client.get("/metrics").get_data(as_text=True))
    answered = {
        (s.labels["url_rule"], s.labels["status"]): s.value
        for s in samples
        if s.name == "flask_http_request_duration_seconds_count"
    }
    assert answered[("/bug-for-test", "500")] == 1
    assert answered[("/outage-for-test", "503")] == 2
    assert not [s for s in samples if s.name == "flask_http_request_exceptions_total"]


# --- multiprocess files and the worker's endpoint ------------------------------------------------


def test_a_process_file_not_initialised_yet_does_not_break_the_scrape(tmp_path: Any) -> None:
    """A process creates its file empty and sizes it a moment later: prometheus_client's own
    collector fails on it (scrapes answered 500 while gunicorn replaced a worker)."""
    import struct

    from prometheus_client import CollectorRegistry, generate_latest, multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    from observability.metrics import MultiProcessCollector

    written = MmapedDict(str(tmp_path / "counter_101.db"))
    key = json.dumps(["gatehouse_registrations", "gatehouse_registrations_total", {}, "Accounts"])
    written.write_value(key, 3.0, 0.0)
    written.close()
    (tmp_path / "counter_102.db").touch()  # the process that is starting

    stock = CollectorRegistry()
    multiprocess.MultiProcessCollector(stock, path=str(tmp_path))
    with pytest.raises(struct.error):
        generate_latest(stock)
    fixed = CollectorRegistry()
    MultiProcessCollector(fixed, path=str(tmp_path))
    assert "gatehouse_registrations_total 3.0" in generate_latest(fixed).decode()


def test_worker_metrics_port_comes_from_the_argument_the_environment_or_9100(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from observability.worker import configured_port

    monkeypatch.delenv("METRICS_PORT", raising=False)
    assert configured_port() == 9100
    assert configured_port(9200) == 9200
    monkeypatch.setenv("METRICS_PORT", "9300")
    assert configured_port() == 9300
    for bad in ("ninety", "0", "70000"):
        monkeypatch.setenv("METRICS_PORT", bad)
        with pytest.raises(ValueError, match="METRICS_PORT"):
            configured_port()


def test_serve_metrics_exposes_the_worker_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Single-process mode here (the multiprocess endpoint runs in tests/e2e)."""
    import requests

    from observability import metrics
    from observability.worker import serve_metrics
    from tests.support.waiting import free_port

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("METRICS_ADDR", "127.0.0.1")
    port = free_port()
    metrics.JOBS.labels(queue="default", state="finished").inc()
    serve_metrics(port)
    body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = _samples(body)
    assert any(s.name == "gatehouse_build_info" and s.value == 1 for s in samples)
    assert any(
        s.name == "gatehouse_jobs_total" and s.labels == {"queue": "default", "state": "finished"}
        for s in samples
    )


def test_a_dead_work_horse_loses_its_live_gauges_not_its_counters(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client import REGISTRY, generate_latest

    from observability.worker import metrics_registry, process_exited

    for name in ("gauge_livesum_4242.db", "counter_4242.db"):
        (tmp_path / name).touch()
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    process_exited(4242)  # single-process mode: nothing to do
    assert (tmp_path / "gauge_livesum_4242.db").exists()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    process_exited(4242)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_4242.db"]
    registry = metrics_registry()  # multiprocess: the directory's files, not this process's
    assert registry is not REGISTRY
    assert b"gatehouse_" not in generate_latest(registry)  # the one file is not initialised


def test_api_keys_are_redacted_from_log_lines():
    from observability.logging import redact

    key = "gh_live_0123456789abcdef_" + "a2" * 26
    assert key not in redact(f"created {key} for someone")
