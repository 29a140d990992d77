"""The SSRF guard's address checks and the Standard Webhooks signature (no network)."""

from __future__ import annotations

import base64
import ipaddress
import json

import pytest
import standardwebhooks

from webapp.webhooks import signing, ssrf

REFUSED = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # AWS/GCP/Azure metadata
    "169.254.170.2",  # ECS task credentials
    "100.100.100.200",  # Alibaba metadata (shared address space)
    "100.64.0.1",
    "0.0.0.0",  # noqa: S104 - an address under test, nothing binds
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.0.192",
    "198.18.0.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
]
ALLOWED = ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_private_and_special_addresses_are_refused(address):
    assert ssrf.refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_pass(address):
    assert ssrf.refusal(ipaddress.ip_address(address)) is None


def test_metadata_addresses_are_named_as_such():
    for address in ("169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254"):
        assert ssrf.refusal(ipaddress.ip_address(address)) == "cloud metadata address"


@pytest.mark.parametrize(
    "spelling",
    [
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "0x7f.1",
        "127.1",
        "017700000001",
        "[::ffff:7f00:1]",
    ],
)
def test_every_spelling_of_loopback_is_decoded_and_refused(spelling):
    address = ssrf.literal_address(spelling)

    assert address is not None
    assert ssrf.refusal(address) == "loopback address"


def test_a_host_name_is_no_literal():
    assert ssrf.literal_address("hooks.example.com") is None


@pytest.mark.parametrize(
    "url",
    [
        "https://2130706433/hook",
        "https://0x7f000001/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/hook",
        "https://api.localhost/hook",
        "https://10.1.2.3:8443/hook",
    ],
)
def test_urls_aimed_at_private_literals_are_refused_when_saved(url):
    with pytest.raises(ValueError, match="must not point"):
        ssrf.check_url(url, allow_private=False)


def test_only_https_unless_private_targets_are_allowed():
    with pytest.raises(ValueError, match="https"):
        ssrf.check_url("http://hooks.example.com/x", allow_private=False)
    with pytest.raises(ValueError, match="https"):
        ssrf.check_url("ftp://hooks.example.com/x", allow_private=True)
    with pytest.raises(ValueError, match="credentials"):
        ssrf.check_url("https://user:pw@hooks.example.com/x", allow_private=False)
    ssrf.check_url("https://hooks.example.com/x", allow_private=False)
    ssrf.check_url("http://127.0.0.1:8080/x", allow_private=True)


def test_resolution_refuses_names_that_resolve_to_private_addresses():
    # Resolved at delivery time: `localhost` comes back as a loopback address.
    with pytest.raises(ssrf.Refused, match="loopback"):
        ssrf.resolve("localhost", 443, allow_private=False)
    with pytest.raises(ssrf.Refused, match="loopback"):
        ssrf.resolve("2130706433", 443, allow_private=False)
    assert str(ssrf.resolve("127.0.0.1", 443, allow_private=True)) == "127.0.0.1"


def test_secrets_have_the_standard_webhooks_form():
    secret = signing.new_secret()

    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 64
    assert signing.new_secret() != secret


def test_signatures_verify_with_the_standardwebhooks_library():
    secret = signing.new_secret()
    body = json.dumps({"id": "e1", "type": "user.created"}).encode()
    timestamp = int(__import__("time").time())
    headers = signing.headers(secret, "e1", timestamp, body)

    assert standardwebhooks.Webhook(secret).verify(body, headers) == json.loads(body)
    tampered = body.replace(b"created", b"deleted")
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(tampered, headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(signing.new_secret()).verify(body, headers)
