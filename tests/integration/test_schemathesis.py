"""Property-based API testing: schemathesis generates requests from /api/openapi.json and checks
that no response is a server error and that every response matches what the document promises.

The run is bounded (25 examples per operation, positive and negative data, derandomized so it is
reproducible) and goes through the WSGI app in process, signed in as an administrator. A member
account exists so that generated `user_id` path parameters sometimes name a real user.

schemathesis' pytest integration (`@schema.parametrize` / `from_fixture`) does not run under the
pytest version pinned here, so the operations are driven through its strategy API instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.accounts import Account

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
RUN_SETTINGS = settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
)
# Operations after which the administrator's session may have ended: sign in again.
SESSION_ENDING = {
    ("POST", "/api/v1/auth/logout"),
    ("DELETE", "/api/v1/auth/sessions"),
    ("POST", "/api/v1/auth/password"),
}


class Caller:
    """A live administrator token, renewed when an operation may have ended its session."""

    def __init__(self, app: Flask, admin: Account) -> None:
        self._app = app
        self._admin = admin
        self._sign_in()

    def _sign_in(self) -> None:
        # From an address of its own: the fuzzed failed logins may lock out the fuzzer's IP.
        response = self._app.test_client().post(
            "/api/v1/auth/login",
            json={"email": self._admin.email, "password": self._admin.password},
            environ_base={"REMOTE_ADDR": "192.0.2.77"},
        )
        assert response.status_code == 200, response.get_json()
        self._admin.access_token = response.json["access_token"]

    def headers(self) -> dict[str, str]:
        return self._admin.headers

    def after(self, method: str, path: str) -> None:
        if (method.upper(), path) in SESSION_ENDING:
            self._sign_in()


@pytest.fixture
def api_schema(app: Flask, make_user: Callable[..., Account]) -> Any:
    loaded = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    real_user = str(make_user("user", login=False).id)

    @loaded.hook("flatmap_path_parameters")
    def _sometimes_a_real_user(_context: Any, path_parameters: dict[str, Any]) -> Any:
        if not path_parameters or "user_id" not in path_parameters:
            return st.just(path_parameters)
        return st.sampled_from([path_parameters, {**path_parameters, "user_id": real_user}])

    return loaded


def _run_operation(operation: Any, hooks: Any, caller: Caller) -> None:
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE, hooks=hooks),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE, hooks=hooks),
    )

    @RUN_SETTINGS
    @given(case=strategy)
    def run(case: Any) -> None:
        try:
            case.call_and_validate(headers=caller.headers(), checks=CHECKS)
        finally:
            caller.after(case.method, case.path)

    run()


def test_every_operation_answers_without_server_errors_and_as_documented(
    app: Flask, api_schema: Any, admin: Account
):
    caller = Caller(app, admin)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20, "the OpenAPI document lost operations"
    failures: dict[str, str] = {}
    for operation in operations:
        try:
            _run_operation(operation, api_schema.hooks, caller)
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report
            failures[operation.label] = str(exc)
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
