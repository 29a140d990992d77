"""Every Flask extension, created once here and bound to the app in `create_app`."""

from __future__ import annotations

from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy

from webapp.cache import RedisStore
from webapp.db import Base
from webapp.http.ratelimit import rate_limit_key

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = Api()
jwt = JWTManager()
limiter = Limiter(key_func=rate_limit_key)
redis_store = RedisStore()
