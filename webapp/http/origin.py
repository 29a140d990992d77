"""The `Origin` of the current request, for services (which never read the request)."""

from __future__ import annotations

from flask import g, request

from webapp.context import Origin
from webapp.http import request_id


def client_ip() -> str:
    """The client's address (the proxy's forwarded one when TRUSTED_PROXIES says so: ProxyFix)."""
    return request.remote_addr or "unknown"


def request_origin() -> Origin:
    principal = g.get("principal")
    return Origin(
        ip=client_ip(),
        user_agent=request.user_agent.string or None,
        request_id=request_id.current(),
        actor_id=principal.user_id if principal is not None else None,
        api_key_id=principal.api_key_id if principal is not None else None,
    )
