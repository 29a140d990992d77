"""Registers every blueprint: one per resource under /api/v1, plus the operational routes."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api, Blueprint

from webapp.apikeys.routes import blp as api_keys_blp
from webapp.audit.routes import blp as audit_blp
from webapp.auth.routes import blp as auth_blp
from webapp.mfa.routes import blp as mfa_blp
from webapp.oauth.consent_routes import blp as oauth_consents_blp
from webapp.oauth.logout_pages import logout_bp as oauth_logout_bp
from webapp.oauth.pages import pages_bp as oauth_pages_bp
from webapp.oauth.routes import blp as oauth_clients_blp
from webapp.oauth.routes import provider_bp as oauth_provider_bp
from webapp.ops.routes import bp as ops_bp
from webapp.users.routes import blp as users_blp
from webapp.webhooks.routes import blp as webhooks_blp


def register_blueprints(app: Flask, api: Api, *, admin_jobs: Blueprint) -> None:
    """`admin_jobs` is the jobs package's /api/v1/admin/jobs, which the composition root hands
    in (webapp imports nothing of `jobs`); it keeps its place after audit in the API's docs."""
    for blueprint in (
        auth_blp,
        users_blp,
        audit_blp,
        admin_jobs,
        mfa_blp,
        api_keys_blp,
        oauth_clients_blp,
        oauth_consents_blp,
        webhooks_blp,
    ):
        api.register_blueprint(blueprint)
    app.register_blueprint(ops_bp)
    app.register_blueprint(oauth_provider_bp)
    app.register_blueprint(oauth_pages_bp)
    app.register_blueprint(oauth_logout_bp)
