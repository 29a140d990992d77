"""Rendering an outbox message into an email: Jinja2 templates in `jobs/templates/`.

Each template has three files: `<name>.subject.txt`, `<name>.txt` (plain text) and `<name>.html`
(HTML, autoescaped). They see the message's payload (links already carry `PUBLIC_BASE_URL`),
`recipient`, `product` and `public_base_url`. A missing variable is an error, not an empty
string, so a broken template fails loudly in the tests instead of mailing nonsense.

The Message-ID is derived from the message's idempotency key: if a crash forces a resend, the
copy carries the same Message-ID and mail systems treat it as the same email.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from webapp.config import Settings
from webapp.outbox.service import TEMPLATES

PRODUCT = "Gatehouse"

_env = Environment(
    loader=PackageLoader("jobs", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def _when(value: str | datetime) -> str:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M UTC")


_env.filters["when"] = _when


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Envelope:
    """What a send needs, copied out of the outbox row (no database access while sending)."""

    template: str
    recipient: str
    idempotency_key: str
    payload: dict[str, Any]


def render(
    template: str, payload: dict[str, Any], *, recipient: str, settings: Settings
) -> Rendered:
    if template not in TEMPLATES:
        raise ValueError(f"unknown email template {template!r}")
    context = {
        **payload,
        "recipient": recipient,
        "product": PRODUCT,
        "public_base_url": settings.public_base_url,
    }
    subject = _env.get_template(f"{template}.subject.txt").render(context)
    return Rendered(
        subject=" ".join(subject.split()),
        text=_env.get_template(f"{template}.txt").render(context),
        html=_env.get_template(f"{template}.html").render(context),
    )


def warm_up() -> None:
    """Compile every template now, in the worker, so forked work-horses inherit them compiled."""
    for name in _env.list_templates():
        _env.get_template(name)


def message_id_for(idempotency_key: str, mail_from: str) -> str:
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "gatehouse.local"
    return f"<{digest}@{domain}>"


def compose(envelope: Envelope, settings: Settings) -> EmailMessage:
    rendered = render(
        envelope.template, envelope.payload, recipient=envelope.recipient, settings=settings
    )
    message = EmailMessage()
    message["From"] = settings.mail_from
    name = envelope.payload.get("name")
    message["To"] = (
        formataddr((str(name), envelope.recipient))
        if name
        else str(Address(addr_spec=envelope.recipient))
    )
    message["Subject"] = rendered.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id_for(envelope.idempotency_key, settings.mail_from)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    message["X-Gatehouse-Template"] = envelope.template
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message
