"""Failed sign-ins tell no accounts apart, and nobody can keep an owner locked out.

The attacks: five wrong passwords to see whether a real account answers differently (429
`account-locked`) from an unknown email; a full-width (NFKC-changing) password to see whether a
real account costs one more Argon2 run; five failures every 15 minutes from anywhere to keep an
account (an administrator's) locked out.

OWASP ASVS 4.0.3:
- V2.2.1 — anti-automation that works (per email and client IP, per IP, and a slower per-email
  limit across all IPs) without letting an attacker lock the owner out: the wide limit delays
  (429 with the true `Retry-After`), it does not lock, and a device the owner used is exempt;
- V3.2.x/V2.5.x intent and V7.1.x — the same answer for unknown and known emails at every step
  (status, body, headers) and the same work (Argon2 runs), so neither reveals an account
  (timing is measured by `python -m bench.http.enumeration`, not here);
- V11.1.4 / V13.4.x — the rate limiter never shortens a lockout's `Retry-After`.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from tests.support.accounts import STRONG_PASSWORD
from tests.support.rows import audit_events
from webapp.security import passwords

LOGIN = "/api/v1/auth/login"
WRONG = "wrong-Password-but-long-77"
DEAD_REDIS = "redis://127.0.0.1:1/0"


def login(client, email: str, password: str = WRONG, ip: str = "192.0.2.10", **kwargs: Any):
    return client.post(
        LOGIN,
        json={"email": email, "password": password},
        environ_base={"REMOTE_ADDR": ip},
        **kwargs,
    )


def slug(response) -> str:
    return str(response.json["type"]).rsplit("/", 1)[-1]


def comparable(response) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Everything a client sees, minus what differs per request by design. A Retry-After is
    the whole seconds left, read at a slightly different moment for each of a pair: on a loaded
    machine the two may straddle a second, so it is compared apart (see `same_wait`)."""
    body = {k: v for k, v in response.json.items() if k not in ("request_id", "instance")}
    headers = {
        k: v for k, v in response.headers.items() if k not in ("X-Request-ID", "Retry-After")
    }
    return response.status_code, body, headers


def same_wait(one, other) -> bool:
    if "Retry-After" not in one.headers or "Retry-After" not in other.headers:
        return "Retry-After" not in one.headers and "Retry-After" not in other.headers
    return abs(int(one.headers["Retry-After"]) - int(other.headers["Retry-After"])) <= 1


# --- the same answer for unknown and known emails ----------------------------------------------


def test_unknown_and_known_emails_answer_identically_at_every_step_lockout_included(
    client, make_user
):
    account = make_user(login=False)
    ghost = "nobody-at-all@example.com"

    # LOCKOUT_THRESHOLD (5) failures, then the lockout
    steps = [(login(client, account.email), login(client, ghost)) for _ in range(6)]

    assert [known.status_code for known, _ in steps] == [401] * 5 + [429]
    for known, unknown in steps:
        assert comparable(known) == comparable(unknown)
        assert same_wait(known, unknown)
    assert slug(login(client, ghost, STRONG_PASSWORD)) == "account-locked"
    # Locked is locked: the right password does not tell the account apart either.
    assert (
        comparable(login(client, account.email, STRONG_PASSWORD))[:2]
        == comparable(login(client, ghost, STRONG_PASSWORD))[:2]
    )


def test_an_unknown_email_is_locked_and_audited_like_a_known_one(make_app):
    app = make_app(lockout_threshold=3)
    client = app.test_client()
    statuses = [login(client, "ghost@example.com").status_code for _ in range(4)]

    assert statuses == [401, 401, 401, 429]
    [event] = audit_events(app, "auth.lockout")
    assert event.details["scope"] == "account_ip"
    assert event.target_id is None


def test_the_answers_stay_identical_and_locks_still_apply_with_redis_down(make_app, make_user):
    app = make_app(redis_url=DEAD_REDIS, lockout_threshold=3)
    client = app.test_client()
    account = make_user(login=False)
    ghost = "nobody-while-redis-is-down@example.com"

    steps = [(login(client, account.email), login(client, ghost)) for _ in range(4)]

    assert [known.status_code for known, _ in steps] == [401, 401, 401, 429]
    for known, unknown in steps:
        assert comparable(known) == comparable(unknown)
        assert same_wait(known, unknown)


def test_a_full_width_password_costs_unknown_and_known_emails_the_same_argon2_runs(
    client, make_user, monkeypatch
):
    account = make_user(login=False)
    runs: list[str] = []
    real = passwords._argon2_matches

    def counted(stored_hash: str, password: str) -> bool:
        runs.append(stored_hash)
        return real(stored_hash, password)

    monkeypatch.setattr(passwords, "_argon2_matches", counted)
    # The full-width form of WRONG (U+FF01..U+FF5E): NFKC turns it back into ASCII.
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in WRONG)
    assert passwords.normalize_password(full_width) != full_width

    assert login(client, account.email, full_width).status_code == 401
    known_runs, runs[:] = len(runs), []
    assert login(client, "nobody-full-width@example.com", full_width).status_code == 401
    unknown_runs = len(runs)

    assert known_runs == unknown_runs == 2


# --- nobody else can lock the owner out ---------------------------------------------------------


def test_failures_from_an_attackers_ip_do_not_lock_the_owner_out_elsewhere(make_app, make_user):
    app = make_app(lockout_duration=900)
    client = app.test_client()
    admin = make_user("admin", login=False)
    attacker = [login(client, admin.email, ip="203.0.113.66").status_code for _ in range(6)]

    owner = login(client, admin.email, STRONG_PASSWORD, ip="198.51.100.20")

    assert attacker == [401] * 5 + [429]
    assert owner.status_code == 200
    # ...and the attacker's own lockout is untouched by the owner's success.
    assert login(client, admin.email, STRONG_PASSWORD, ip="203.0.113.66").status_code == 429


def test_the_per_account_limit_across_ips_delays_with_a_true_retry_after(make_app, make_user):
    app = make_app(lockout_account_threshold=4, lockout_window=900)
    client = app.test_client()
    account = make_user(login=False)
    ghost = "ghost-across-ips@example.com"
    for n in range(4):
        for email in (account.email, ghost):
            assert login(client, email, ip=f"203.0.113.{n + 1}").status_code == 401

    known = login(client, account.email, STRONG_PASSWORD, ip="198.51.100.30")
    unknown = login(client, ghost, STRONG_PASSWORD, ip="198.51.100.30")

    assert comparable(known) == comparable(unknown)
    assert same_wait(known, unknown)
    assert known.status_code == 429
    assert slug(known) == "login-throttled"
    # The first failure opened the 900 s window a moment ago: that is how long to wait.
    assert 890 <= int(known.headers["Retry-After"]) <= 900
    events = [e for e in audit_events(app, "auth.lockout") if e.details["scope"] == "account"]
    assert [e.target_id for e in events] == [account.id, None]


def test_the_per_account_limit_frees_itself_when_its_window_ends(make_app, make_user):
    app = make_app(lockout_account_threshold=2, lockout_window=2)
    client = app.test_client()
    account = make_user(login=False)
    for n in range(2):
        login(client, account.email, ip=f"203.0.113.{n + 1}")
    throttled = login(client, account.email, STRONG_PASSWORD, ip="198.51.100.40")
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) <= 2

    time.sleep(int(throttled.headers["Retry-After"]) + 0.2)

    assert login(client, account.email, STRONG_PASSWORD, ip="198.51.100.40").status_code == 200


def test_a_device_the_owner_signed_in_from_is_not_held_back_by_the_wide_limit(make_app, make_user):
    app = make_app(lockout_account_threshold=2)
    client = app.test_client()
    account = make_user(login=False)
    usual = {"ip": "198.51.100.50", "headers": {"User-Agent": "OwnersLaptop/1"}}
    assert login(client, account.email, STRONG_PASSWORD, **usual).status_code == 200
    for n in range(2):
        login(client, account.email, ip=f"203.0.113.{n + 1}")

    stranger = login(client, account.email, STRONG_PASSWORD, ip="198.51.100.51")
    owner = login(client, account.email, STRONG_PASSWORD, **usual)

    assert stranger.status_code == 429
    assert owner.status_code == 200


def test_a_lockout_still_follows_failures_of_one_ip_across_emails(make_app, make_user):
    app = make_app(lockout_ip_threshold=3)
    client = app.test_client()
    account = make_user(login=False)
    for n in range(3):
        login(client, f"spray{n}@example.com", ip="203.0.113.99")

    assert login(client, account.email, STRONG_PASSWORD, ip="203.0.113.99").status_code == 429
    assert login(client, account.email, STRONG_PASSWORD, ip="203.0.113.98").status_code == 200


# --- the rate limiter keeps the longer wait -----------------------------------------------------


@pytest.fixture
def limited_app(make_app, redis_url):
    redis.Redis.from_url(redis_url).flushdb()
    return make_app(
        ratelimit_enabled=True,
        ratelimit_auth="20 per minute",
        lockout_threshold=2,
        lockout_duration=900,
    )


def test_the_rate_limiter_never_shortens_a_lockouts_retry_after(limited_app, make_user):
    client = limited_app.test_client()
    account = make_user(login=False)
    for _ in range(2):
        login(client, account.email)

    locked = login(client, account.email, STRONG_PASSWORD)

    assert locked.status_code == 429
    assert slug(locked) == "account-locked"
    assert "RateLimit-Reset" in locked.headers  # the limiter did see this response
    assert int(locked.headers["Retry-After"]) > 60
    assert int(locked.headers["Retry-After"]) <= 900


# --- the fallback while Redis is away -----------------------------------------------------------


def test_the_per_process_fallback_counts_expires_and_stays_bounded():
    from webapp.auth.lockout import LocalCounters

    counters = LocalCounters(max_entries=3)
    assert counters.incr("a", 60)[0] == 1
    count, left = counters.incr("a", 60)
    assert count == 2
    assert 59 < left <= 60
    counters.set("gone", 1.0, ttl=-1)  # already expired
    assert counters.get("gone") is None

    for n in range(10):  # a flood of new keys (one per guessed email) cannot grow it
        counters.incr(f"flood{n}", 60)

    assert len(counters._values) <= 3
    assert counters.get("flood9") == 1
