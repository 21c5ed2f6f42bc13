"""The webhook delivery log: GET /api/tasks/<id>/deliveries, POST /api/deliveries/<id>/redeliver.

Behind the API's token like the rest of /api. The detail page shows the same list
(`delivery_rows`) with a Redeliver form of its own (dashboard, CSRF-checked).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from tracker.db import Database
from tracker.tasks import deliveries as queue
from tracker.tasks.models import Delivery, Task
from tracker.web.api import require_token
from tracker.web.context import services
from tracker.web.errors import error

bp = Blueprint("deliveries", __name__, url_prefix="/api")
bp.before_request(require_token)


def delivery_json(row: Delivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "type": row.type,
        "target": row.target,
        "state": row.state,
        "webhook_id": row.webhook_id,
        "attempts": list(row.attempts or []),
    }


def delivery_rows(db: Database, task_id: int) -> list[dict[str, Any]] | None:
    """The task's deliveries, newest first; None when there is no such task."""
    with db.read() as session:
        if session.get(Task, task_id) is None:
            return None
        rows = session.scalars(
            select(Delivery).where(Delivery.task_id == task_id).order_by(Delivery.id.desc())
        )
        return [delivery_json(row) for row in rows]


@bp.get("/tasks/<int:task_id>/deliveries")
def task_deliveries(task_id: int) -> ResponseReturnValue:
    rows = delivery_rows(services().db, task_id)
    if rows is None:
        return error(404, f"no task {task_id}")
    return {"deliveries": rows}


@bp.post("/deliveries/<int:delivery_id>/redeliver")
def redeliver(delivery_id: int) -> ResponseReturnValue:
    """Send it again, same webhook-id; 202: the worker sends it, not this request."""
    db = services().db
    if not queue.redeliver(db, delivery_id):
        return error(404, f"no delivery {delivery_id}")
    with db.read() as session:
        row = session.get(Delivery, delivery_id)
        if row is None:
            return error(404, f"no delivery {delivery_id}")
        return delivery_json(row), 202
