"""Registers every blueprint: one per resource under /api/v1, plus the operational routes."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api


def register_blueprints(app: Flask, api: Api) -> None:
    from webapp.admin_jobs.routes import blp as admin_jobs_blp
    from webapp.apikeys.routes import blp as api_keys_blp
    from webapp.audit.routes import blp as audit_blp
    from webapp.auth.routes import blp as auth_blp
    from webapp.mfa.routes import blp as mfa_blp
    from webapp.ops.routes import bp as ops_bp
    from webapp.users.routes import blp as users_blp

    for blueprint in (auth_blp, users_blp, audit_blp, admin_jobs_blp):
        api.register_blueprint(blueprint)
    for blueprint in (mfa_blp, api_keys_blp):
        api.register_blueprint(blueprint)
    app.register_blueprint(ops_bp)
