"""/api/v1/audit-events (administrators): cursor-paginated, filterable."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from webapp.audit import service
from webapp.audit.schemas import AuditEventPageOut, AuditListArgs
from webapp.db import read_only_session
from webapp.http.access import requires
from webapp.http.pagination import link_header

blp = Blueprint(
    "audit", __name__, url_prefix="/api/v1/audit-events", description="Security audit trail."
)


@blp.route("/")
class AuditEvents(MethodView):
    @requires("audit:read")
    @blp.arguments(AuditListArgs, location="query", as_kwargs=True)
    @blp.response(200, AuditEventPageOut)
    def get(self, **args: Any) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Audit events, newest first; filters `action`, `actor_id`, `api_key_id`, `target_id`,
        time range."""
        with read_only_session() as db:
            page = service.list_events(db, **args)
            body = page.body()
        return body, 200, link_header(page)
