"""Every Flask extension, created once here and bound to the app in `create_app`."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from flask import current_app
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from werkzeug.local import LocalProxy

from webapp.cache import RedisStore
from webapp.db import Base

# Objects stay usable after commit without a reload query: each use case commits once at its end
# and then only reads what it just wrote (responses, cache publication).
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()
api = Api()
jwt = JWTManager()


def _rate_limit_key() -> str:
    """Whom a request counts against: the HTTP layer's answer (`webapp.http.ratelimit`, which
    registers it), looked up so that this module imports nothing above it."""
    key: Callable[[], str] = current_app.extensions["gatehouse_rate_limit_key"]
    return key()


limiter = Limiter(key_func=_rate_limit_key)
# Per application (its Redis URL is a setting): resolved through the app in context.
redis_store = cast(RedisStore, LocalProxy(lambda: current_app.extensions["gatehouse_redis"]))
