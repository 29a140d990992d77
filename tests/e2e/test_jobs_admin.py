"""Administrators see failed jobs and put them back, through the API and the CLI."""

from __future__ import annotations

import uuid

import pytest
from rq.registry import FailedJobRegistry

from jobs import cli as jobs_cli_module
from tests.support.accounts import STRONG_PASSWORD
from webapp.outbox.models import DEAD, PENDING, SENT

FAILED = "/api/v1/admin/jobs/failed"


@pytest.fixture
def dead_letters(jobs_app, smtp_sink, work_jobs, queue_email, outbox):
    """Three dead messages (the server refused them), then a server that accepts again."""
    smtp_sink.reply = "550 5.7.1 Rejected by policy"
    # A real registration: a replayed verification email gets a fresh token for its account.
    registered = jobs_app.test_client().post(
        "/api/v1/auth/register",
        json={"email": "dead@example.com", "password": STRONG_PASSWORD, "name": "Dee"},
        headers={"X-Request-ID": "req-dead-0001"},
    )
    assert registered.status_code == 201, registered.json
    ids = [
        outbox("verify_email")[0].id,
        queue_email("new_login"),
        queue_email("welcome"),
    ]
    work_jobs(jobs_app)
    smtp_sink.reply = "250 2.0.0 OK"
    return ids


def test_failed_jobs_are_for_administrators_only(client, member):
    assert client.get(FAILED).status_code == 401
    refused = client.get(FAILED, headers=member.headers)
    assert refused.status_code == 403
    assert refused.content_type == "application/problem+json"
    assert client.post(f"{FAILED}/requeue", headers=member.headers).status_code == 403


def test_an_administrator_lists_failed_jobs_with_their_reason(client, admin, dead_letters):
    response = client.get(FAILED, headers=admin.headers)

    assert response.status_code == 200
    items = response.json["items"]
    # (the administrator's own welcome email was refused too)
    assert {str(i) for i in dead_letters} <= {item["id"] for item in items}
    verify = next(item for item in items if item["template"] == "verify_email")
    assert verify["queue"] == "high"
    assert verify["attempts"] == 3
    assert "550 5.7.1 Rejected by policy" in verify["last_error"]
    assert verify["request_id"] == "req-dead-0001"
    assert verify["in_failed_registry"] is True
    filtered = client.get(FAILED, query_string={"queue": "low"}, headers=admin.headers)
    assert {item["template"] for item in filtered.json["items"]} == {"welcome"}
    assert str(dead_letters[2]) in {item["id"] for item in filtered.json["items"]}
    paged = client.get(FAILED, query_string={"limit": 2}, headers=admin.headers)
    assert len(paged.json["items"]) == 2
    assert 'rel="next"' in paged.headers["Link"]


def test_requeueing_one_failed_job_delivers_its_email_once(
    client, admin, dead_letters, jobs_app, smtp_sink, work_jobs, outbox, rq_connection
):
    verify_id = dead_letters[0]

    response = client.post(f"{FAILED}/{verify_id}/requeue", headers=admin.headers)

    assert response.status_code == 202
    assert response.json == {"id": str(verify_id), "status": "enqueued"}
    assert str(verify_id) not in FailedJobRegistry("high", connection=rq_connection)
    again = client.post(f"{FAILED}/{verify_id}/requeue", headers=admin.headers)
    assert again.status_code == 409
    assert again.json["type"].endswith("/job-not-failed")
    work_jobs(jobs_app)
    assert [m.subject for m in smtp_sink.wait_for(1)] == [
        "Confirm your email address for Gatehouse"
    ]
    assert outbox("verify_email")[0].status == SENT
    assert {m.status for m in outbox() if m.id != verify_id} == {DEAD}


def test_requeueing_an_unknown_job_is_not_found(client, admin):
    response = client.post(f"{FAILED}/{uuid.uuid4()}/requeue", headers=admin.headers)
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert client.post(f"{FAILED}/not-a-job/requeue", headers=admin.headers).status_code == 404


def test_requeueing_all_failed_jobs_works_after_redis_lost_its_failed_registry(
    client, admin, dead_letters, jobs_app, smtp_sink, work_jobs, rq_connection, outbox
):
    rq_connection.flushdb()  # a Redis restart: the failed-job registry is gone
    listed = client.get(FAILED, headers=admin.headers).json["items"]
    assert {item["in_failed_registry"] for item in listed} == {False}

    response = client.post(f"{FAILED}/requeue", headers=admin.headers)

    assert response.status_code == 202
    assert response.json == {"requeued": len(listed)}
    assert client.get(FAILED, headers=admin.headers).json["items"] == []
    work_jobs(jobs_app)
    assert len(smtp_sink.wait_for(len(listed))) == len(listed)
    assert {m.status for m in outbox()} == {SENT}


def test_the_cli_lists_and_replays_failed_jobs(
    jobs_app, dead_letters, smtp_sink, work_jobs, outbox
):
    runner = jobs_app.test_cli_runner()

    listed = runner.invoke(args=["jobs", "failed"])
    assert listed.exit_code == 0, listed.output
    assert all(str(i) in listed.output for i in dead_letters)
    assert "550 5.7.1 Rejected by policy" in listed.output

    one = runner.invoke(args=["jobs", "replay", str(dead_letters[1])])
    assert one.exit_code == 0, one.output
    assert f"replayed {dead_letters[1]} (enqueued)" in one.output
    twice = runner.invoke(args=["jobs", "replay", str(dead_letters[1])])
    assert twice.exit_code != 0
    assert "only dead letters are requeued" in twice.output
    rest = runner.invoke(args=["jobs", "replay", "--all"])
    assert "replayed 2 failed jobs" in rest.output
    work_jobs(jobs_app)

    assert len(smtp_sink.wait_for(3)) == 3
    assert runner.invoke(args=["jobs", "failed"]).output.strip() == "no failed jobs"


def test_the_cli_refuses_a_replay_without_a_target_or_with_a_malformed_id(jobs_app):
    runner = jobs_app.test_cli_runner()
    assert runner.invoke(args=["jobs", "replay"]).exit_code == 2
    assert runner.invoke(args=["jobs", "replay", "--all", str(uuid.uuid4())]).exit_code == 2
    malformed = runner.invoke(args=["jobs", "replay", "nope"])
    assert malformed.exit_code == 2
    assert "not a job id" in malformed.output


def test_the_cli_replays_into_the_outbox_when_redis_is_unreachable(
    make_app, app, smtp_sink, dead_letters, outbox
):
    from tests.support.waiting import free_port

    offline = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0", smtp_url=smtp_sink.url)
    result = offline.test_cli_runner().invoke(args=["jobs", "replay", str(dead_letters[0])])

    assert result.exit_code == 0, result.output
    assert "redis unreachable" in result.output
    assert f"replayed {dead_letters[0]} (pending)" in result.output
    assert outbox("verify_email")[0].status == PENDING


def test_the_cli_dispatches_once_and_runs_a_burst_worker(
    jobs_app, smtp_sink, queue_email, outbox, monkeypatch
):
    import signal

    queue_email("welcome")
    runner = jobs_app.test_cli_runner()

    dispatched = runner.invoke(args=["jobs", "dispatch"])
    assert dispatched.exit_code == 0, dispatched.output
    assert "enqueued 1 messages in 1 jobs" in dispatched.output
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        worked = runner.invoke(args=["jobs", "worker", "--burst", "--in-process"])
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert worked.exit_code == 0, worked.output
    assert len(smtp_sink.wait_for(1)) == 1
    assert outbox("welcome")[0].status == SENT
    unknown = runner.invoke(args=["jobs", "worker", "--queues", "urgent"])
    assert unknown.exit_code == 2
    assert jobs_cli_module.jobs_cli.name == "jobs"
