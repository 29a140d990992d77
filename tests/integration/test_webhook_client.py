"""The webhook HTTP client against real local servers: the response limit, the total timeout,
one resolution pinned for the connection, TLS checked against the URL's host."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from webapp.webhooks import client as webhook_client


def test_the_client_reads_at_most_64_kib_and_keeps_to_its_total_timeout(receiver, monkeypatch):
    receiver.replies = [(200, b"x" * (200 * 1024), {})]
    response = webhook_client.post(receiver.url, b"{}", {}, allow_private=True)
    assert response.status == 200
    assert len(response.body) == webhook_client.MAX_RESPONSE_BYTES

    monkeypatch.setattr(webhook_client, "TOTAL_TIMEOUT", 0.5)
    receiver.delay = 2.0
    started = time.monotonic()
    with pytest.raises(webhook_client.SendFailed, match="timeout"):
        webhook_client.post(receiver.url, b"{}", {}, allow_private=True)
    assert time.monotonic() - started < 1.5


def test_the_resolved_address_is_pinned_and_checked_once(receiver, monkeypatch):
    """DNS rebinding: a name answering a public address to the check and a private one to the
    connection. Here the one resolution is the only one: the connection goes to what it
    returned, with the URL's host kept in `Host`."""
    import socket

    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    real, asked = socket.getaddrinfo, []

    def resolver(host, *args, **kwargs):
        asked.append(host)
        if host == "hooks.example.test":
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    url = f"http://hooks.example.test:{port}/hook"

    with pytest.raises(webhook_client.ssrf.Refused, match="loopback"):
        webhook_client.post(url, b"{}", {}, allow_private=False)
    assert receiver.requests == []

    asked.clear()
    response = webhook_client.post(url, b"{}", {}, allow_private=True)
    assert response.status == 200
    # The name once; then the connection is made to the address literal it gave.
    assert asked == ["hooks.example.test", "127.0.0.1"]
    [(headers, _)] = receiver.requests
    assert headers["host"] == f"hooks.example.test:{port}"


def _self_signed(tmp_path, name: str) -> tuple[str, str]:
    from datetime import UTC, datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_https_to_the_pinned_address_checks_the_certificate_against_the_url_host(
    tmp_path, monkeypatch
):
    import socket
    import ssl

    cert, key = _self_signed(tmp_path, "hooks.example.test")
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append(self.headers["host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    server.socket = server_tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, *a, **k: real("127.0.0.1" if host.endswith(".test") else host, *a, **k),
    )
    trusted = ssl.create_default_context(cafile=cert)
    try:
        response = webhook_client.post(
            f"https://hooks.example.test:{port}/hook", b"{}", {}, allow_private=True, tls=trusted
        )
        assert response.status == 204
        assert seen == [f"hooks.example.test:{port}"]
        # Another name pinned to the same address: the certificate does not match it.
        with pytest.raises(webhook_client.SendFailed, match=r"CERTIFICATE_VERIFY_FAILED"):
            webhook_client.post(
                f"https://other.example.test:{port}/hook",
                b"{}",
                {},
                allow_private=True,
                tls=trusted,
            )
    finally:
        server.shutdown()
        server.server_close()
