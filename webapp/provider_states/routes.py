"""`POST /_pact/provider-states`: the hook the Pact verifier calls before each interaction (Pact's
provider-state change request: `{"state", "params", "action"}`), answering the values the
interaction's `fromProviderState` generators use. Test-only: the composition root mounts it only
with `GATEHOUSE_ENV=test` and `PACT_PROVIDER_STATES=true`. A plain Flask blueprint, outside the
API and its OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from webapp.errors import MalformedRequest
from webapp.extensions import db, limiter
from webapp.provider_states import states

bp = Blueprint("provider_states", __name__)
PATH = "/_pact/provider-states"


@bp.post(PATH)
@limiter.exempt
def change_state() -> Response:
    body: Any = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("state"), str):
        raise MalformedRequest("A provider-state change is a JSON object with a `state`.")
    if body.get("action", "setup") != "setup":
        # Each setup makes its own state true; nothing is torn down.
        return jsonify({})
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise MalformedRequest("A provider state's `params` is a JSON object.")
    return jsonify(states.set_up(db.session, body["state"], params))
