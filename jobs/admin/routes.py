"""/api/v1/admin/jobs (administrators): dead letters and their replay. Thin views over
`jobs.dead_letters`, which the `flask jobs` CLI uses too."""

from __future__ import annotations

import uuid
from typing import Any

import redis
from flask.views import MethodView
from flask_smorest import Blueprint

from jobs import dead_letters
from jobs.admin.schemas import (
    FailedJobListArgs,
    FailedJobPageOut,
    RequeuedAllOut,
    RequeuedOut,
)
from jobs.settings import current_jobs_settings
from webapp.extensions import db, redis_store
from webapp.http.access import requires
from webapp.http.pagination import link_header

blp = Blueprint(
    "admin_jobs",
    __name__,
    url_prefix="/api/v1/admin/jobs",
    description="Background jobs: failed jobs (dead letters) and their replay.",
)


def _redis() -> redis.Redis | None:
    """Redis when it answers; dead letters are in the database, so the routes work without it."""
    return redis_store.client if redis_store.available else None


@blp.route("/failed")
class FailedJobs(MethodView):
    @requires("jobs:manage")
    @blp.arguments(FailedJobListArgs, location="query", as_kwargs=True)
    @blp.response(200, FailedJobPageOut)
    def get(self, **args: Any) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Failed jobs: emails that failed their last try, newest first (`sort`: dead_at,
        created_at); filters `queue`, `template`; cursor or offset pagination."""
        page = dead_letters.list_dead(db.session, _redis(), **args)
        return page.body(), 200, link_header(page)


@blp.route("/failed/<uuid:job_id>/requeue")
class RequeueFailedJob(MethodView):
    @requires("jobs:manage")
    @blp.response(202, RequeuedOut)
    def post(self, job_id: uuid.UUID) -> dead_letters.Requeued:
        """Put one failed job back on its queue with a fresh set of tries (404 if there is no
        such failed job, 409 `job-not-failed` if it has not failed, 409 `job-not-replayable` if
        its email has no point any more; a token email is replayed with a fresh token)."""
        return dead_letters.requeue(db.session, _redis(), current_jobs_settings(), job_id)


@blp.route("/failed/requeue")
class RequeueAllFailedJobs(MethodView):
    @requires("jobs:manage")
    @blp.response(202, RequeuedAllOut)
    def post(self) -> dict[str, int]:
        """Put every failed job back on its queue."""
        return {"requeued": dead_letters.requeue_all(db.session, _redis(), current_jobs_settings())}
