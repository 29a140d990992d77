"""The baseline: the least a Flask JSON endpoint can cost under our gunicorn configuration.

Served exactly like the API (`gunicorn -c gunicorn.conf.py bench.http.bare_app:app`) so the
difference between `GET /bare` and `GET /api/v1/users/me` is what Gatehouse itself adds:
middleware, token verification, the session/user lookup and serialization.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

app = Flask(__name__)


@app.get("/bare")
def bare() -> Response:
    return jsonify(status="ok", service="bare")
