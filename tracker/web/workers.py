"""Live workers: `GET /api/workers` and the dashboard's workers panel and warning.

Each worker process keeps a row in `workers` (tracker/tasks/heartbeats.py) and rewrites its
`last_seen_at` every 10 s; a row not rewritten for 60 s (`heartbeat.STALE_AFTER`, from
TRACKER_WORKER_STALE_AFTER) is stale: the process was killed, or its machine is gone. A
clean stop deletes the row. With no live row, nothing sends, polls or archives: the
dashboard says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from tracker.tasks import heartbeats as heartbeat
from tracker.tasks.models import WorkerBeat, utcnow
from tracker.tasks.serialize import iso
from tracker.web.auth import request_has_token
from tracker.web.context import services
from tracker.web.errors import error

bp = Blueprint("workers", __name__)


@dataclass(frozen=True)
class Worker:
    id: str
    host: str
    pid: int
    started_at: datetime
    last_seen_at: datetime
    tasks_claimed: int
    paused_until: datetime | None
    stale: bool

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "started_at": iso(self.started_at),
            "last_seen_at": iso(self.last_seen_at),
            "tasks_claimed": self.tasks_claimed,
            "paused_until": iso(self.paused_until),
            "stale": self.stale,
        }


def workers() -> list[Worker]:
    """Every registered worker, live ones first, each group most recently started first."""
    now = utcnow()
    stale_before = heartbeat.stale_before(now)
    with services().db.read() as session:
        rows = session.scalars(select(WorkerBeat)).all()
        found = [
            Worker(
                id=row.id,
                host=row.host,
                pid=row.pid,
                started_at=row.started_at,
                last_seen_at=row.last_seen_at,
                tasks_claimed=row.tasks_claimed or 0,
                # a pause that has passed is no pause
                paused_until=row.paused_until
                if row.paused_until and row.paused_until > now
                else None,
                stale=row.last_seen_at < stale_before,
            )
            for row in rows
        ]
    return sorted(found, key=lambda w: (w.stale, -w.started_at.timestamp(), w.id))


@bp.get("/api/workers")
def list_workers() -> ResponseReturnValue:
    if not request_has_token(basic=False):
        response, status = error(401, "missing or wrong token (Authorization: Bearer <token>)")
        response.headers["WWW-Authenticate"] = 'Bearer realm="tracker"'
        return response, status
    return {"workers": [worker.json() for worker in workers()]}, 200


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    # the list page's panel and warning ask for them as they render (templates/_workers.html)
    app.jinja_env.globals["live_workers"] = workers
    app.jinja_env.globals["worker_stale_after"] = int(heartbeat.STALE_AFTER)
