"""Business counters move when the events they count happen (read from a real /metrics scrape)."""

from __future__ import annotations

import re

from tests.support.accounts import STRONG_PASSWORD


def sample(client, name: str, **labels: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^{name}(?:\{{([^}}]*)\}})? (\S+)$", re.MULTILINE)
    for found_labels, value in pattern.findall(text):
        if ",".join(sorted(found_labels.split(","))) == wanted or (not labels and not found_labels):
            return float(value)
    return 0.0


def test_logins_are_counted_by_result(client, member):
    ok_before = sample(client, "gatehouse_logins_total", result="success")
    bad_before = sample(client, "gatehouse_logins_total", result="invalid_credentials")
    client.post("/api/v1/auth/login", json={"email": member.email, "password": STRONG_PASSWORD})
    client.post("/api/v1/auth/login", json={"email": member.email, "password": "wrong-" * 3})
    assert sample(client, "gatehouse_logins_total", result="success") == ok_before + 1
    assert sample(client, "gatehouse_logins_total", result="invalid_credentials") == bad_before + 1


def test_registrations_and_refreshes_are_counted(client, member):
    registered = sample(client, "gatehouse_registrations_total")
    refreshed = sample(client, "gatehouse_token_refreshes_total", result="success")
    reused = sample(client, "gatehouse_token_refreshes_total", result="reuse_detected")
    client.post(
        "/api/v1/auth/register",
        json={"email": "counted@example.com", "password": STRONG_PASSWORD, "name": "C"},
    )
    client.post("/api/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    client.post("/api/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    assert sample(client, "gatehouse_registrations_total") == registered + 1
    assert sample(client, "gatehouse_token_refreshes_total", result="success") == refreshed + 1
    assert sample(client, "gatehouse_token_refreshes_total", result="reuse_detected") == reused + 1


def test_auth_cache_lookups_are_counted_as_hits_after_the_first_miss(client, member):
    hits = sample(client, "gatehouse_cache_requests_total", cache="session", result="hit")
    client.get("/api/v1/users/me", headers=member.headers)
    client.get("/api/v1/users/me", headers=member.headers)
    after = sample(client, "gatehouse_cache_requests_total", cache="session", result="hit")
    assert after >= hits + 1


def test_lockouts_are_counted(make_app, member):
    client = make_app(lockout_threshold=2).test_client()
    before = sample(client, "gatehouse_lockouts_total", scope="account_ip")
    for _ in range(2):
        client.post("/api/v1/auth/login", json={"email": member.email, "password": "x" * 12})
    assert sample(client, "gatehouse_lockouts_total", scope="account_ip") == before + 1


def test_http_latency_is_labelled_by_url_rule_template_not_raw_path(client, admin, member):
    client.get(f"/api/v1/users/{member.id}", headers=admin.headers)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'url_rule="/api/v1/users/<uuid:user_id>"' in text
    assert str(member.id) not in text
