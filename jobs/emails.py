"""Rendering an outbox message into an email: Jinja2 templates in `jobs/templates/`.

Each template has three files: `<name>.subject.txt`, `<name>.txt` (plain text) and `<name>.html`
(HTML, autoescaped). They see the message's payload (links already carry `PUBLIC_BASE_URL`),
`recipient`, `product` and `public_base_url`. A missing variable is an error, not an empty
string, so a broken template fails loudly in the tests instead of mailing nonsense.

The Message-ID is derived from the message's idempotency key: if a crash forces a resend, the
copy carries the same Message-ID and mail systems treat it as the same email.

Messages are built with the `email.mime` classes: the same MIME as `EmailMessage` with the
default policy, which parses every header it is given and costs a job process ten times more
per email. Addresses that are not ASCII (SMTPUTF8) take the `EmailMessage` path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, parseaddr
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from jobs.settings import JobsSettings
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
    """Compile every template now, in the supervisor, so job processes inherit them compiled."""
    for name in _env.list_templates():
        _env.get_template(name)


def message_id_for(idempotency_key: str, mail_from: str) -> str:
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "gatehouse.local"
    return f"<{digest}@{domain}>"


_UTF8 = Charset("utf-8")
_UTF8.body_encoding = QP  # readable in the raw message, unlike base64
_UTF8.header_encoding = QP


def _headers(
    envelope: Envelope, rendered: Rendered, settings: JobsSettings, to: str
) -> list[tuple[str, str]]:
    return [
        ("From", settings.mail_from),
        ("To", to),
        ("Subject", rendered.subject),
        ("Date", formatdate(usegmt=True)),
        ("Message-ID", message_id_for(envelope.idempotency_key, settings.mail_from)),
        ("Auto-Submitted", "auto-generated"),  # RFC 3834: no auto-replies, please
        ("X-Gatehouse-Template", envelope.template),
    ]


def _text_part(text: str, subtype: str) -> MIMEText:
    # MIMEText takes a Charset as well as its name; typeshed declares the name only.
    return MIMEText(text, subtype, "us-ascii" if text.isascii() else _UTF8)  # type: ignore[arg-type]


def compose(envelope: Envelope, settings: Settings, jobs_settings: JobsSettings) -> Message:
    """The email of `envelope`: rendered with `settings` (`PUBLIC_BASE_URL`), sent as
    `jobs_settings.mail_from`."""
    rendered = render(
        envelope.template, envelope.payload, recipient=envelope.recipient, settings=settings
    )
    if not (envelope.recipient.isascii() and parseaddr(jobs_settings.mail_from)[1].isascii()):
        return _compose_international(envelope, rendered, jobs_settings)
    name = envelope.payload.get("name")
    to = formataddr((str(name), envelope.recipient)) if name else envelope.recipient
    message = MIMEMultipart("alternative")
    for header, value in _headers(envelope, rendered, jobs_settings, to):
        # formataddr already encoded a display name; other text is encoded here if it must be
        message[header] = value if value.isascii() else Header(value, _UTF8).encode()
    message.attach(_text_part(rendered.text, "plain"))
    message.attach(_text_part(rendered.html, "html"))
    return message


def _compose_international(
    envelope: Envelope, rendered: Rendered, settings: JobsSettings
) -> EmailMessage:
    """An address beyond ASCII: `EmailMessage`, which smtplib sends with SMTPUTF8."""
    name = str(envelope.payload.get("name") or "")
    to = str(Address(display_name=name, addr_spec=envelope.recipient))
    message = EmailMessage()
    for header, value in _headers(envelope, rendered, settings, to):
        message[header] = value
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message
