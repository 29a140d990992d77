"""The main path a new user walks: register, verify by the emailed link, sign in, read /me."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tests.support.accounts import STRONG_PASSWORD


def test_register_verify_login_and_read_me(client, outbox):
    response = client.post(
        "/api/v1/auth/register",
        json={"email": "Ada@Example.com", "password": STRONG_PASSWORD, "name": "Ada"},
    )
    assert response.status_code == 201, response.json
    assert response.headers["Location"].endswith(f"/api/v1/users/{response.json['id']}")
    assert response.json["email_verified"] is False

    unverified = client.post(
        "/api/v1/auth/login", json={"email": "ada@example.com", "password": STRONG_PASSWORD}
    )
    assert unverified.status_code == 403
    assert unverified.json["type"].endswith("/email-unverified")

    [message] = outbox("verify_email")
    token = parse_qs(urlsplit(message.payload["link"]).query)["token"][0]
    assert client.post("/api/v1/auth/verify-email", json={"token": token}).status_code == 204

    login = client.post(
        "/api/v1/auth/login", json={"email": "ada@example.com", "password": STRONG_PASSWORD}
    )
    assert login.status_code == 200, login.json
    me = client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {login.json['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json["email"] == "Ada@Example.com"
    assert me.json["email_verified"] is True
    assert me.headers["ETag"]
