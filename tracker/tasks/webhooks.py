"""Events into delivery rows, written in the transaction that changed the task.

`enqueue` is called by `store.set_state` (every state change passes there) and by
archival when the copy is ready. It adds one `Delivery` per target: the global
TRACKER_NOTIFY_URL (named once per process by `configure`) and the task's own
`notify_url`. The body's `data` is the task as `GET /api/tasks/<id>` shows it, taken when
the transaction commits (a `before_commit` hook), so it is the state that was written, with
the task's id even for a task stored in that same transaction. Media links are kept as
paths here and signed only when sent (`signing.sign_links`): the database holds no link
that opens a video.
"""

from __future__ import annotations

import json
import secrets
import threading
from typing import Any

from sqlalchemy import Connection, bindparam, event, select
from sqlalchemy.orm import Session

from tracker import redact
from tracker.settings import Settings
from tracker.tasks.models import Delivery, Task, utcnow
from tracker.tasks.schema import iso, task_json

# a move into one of these states (or "archived": the copy is ready) is an event;
# moves into queued or submitting send nothing
EVENT_TYPES = {
    "pending": "task.pending",
    "processing": "task.processing",
    "completed": "task.completed",
    "failed": "task.failed",
    "rejected": "task.rejected",
    "timed_out": "task.timed_out",
    "archived": "task.archived",
}
_PENDING = "tracker_webhooks"

_config_lock = threading.Lock()
# the process's global target (TRACKER_NOTIFY_URL), set by `configure`
target = ""


def configure(settings: Settings | None) -> None:
    """Name this process's global target (TRACKER_NOTIFY_URL); mask its secrets in logs.

    Called where a process reads its settings (create_app, the worker, the CLI): every
    process of a deployment reads the same environment, so they agree.
    """
    global target
    with _config_lock:
        target = settings.notify_url if settings is not None else ""
    if settings is not None:
        redact.register(*settings.notify_secrets)


def global_target() -> str:
    return target


def wanted(what: str, notify_url: str | None) -> bool:
    """Whether a move to `what` of a task with this notify_url makes deliveries."""
    return what in EVENT_TYPES and bool(target or notify_url)


def new_webhook_id() -> str:
    """The `webhook-id`: one per event, the same on every attempt and redelivery."""
    return f"msg_{secrets.token_hex(12)}"


def enqueue(session: Session, task: Task, what: str) -> list[Delivery]:
    """Write the deliveries of one event (`what`: the new state, or "archived").

    Nothing is sent here: the worker sends committed rows. No target, no row.
    """
    kind = EVENT_TYPES.get(what)
    if kind is None:
        return []
    candidates = ((target, "global"), (task.notify_url, "task"))
    targets = [(url, name) for url, name in candidates if url]
    if not targets:
        return []
    now = utcnow()
    made = []
    for url, name in targets:
        delivery = Delivery(
            task=task,
            webhook_id=new_webhook_id(),
            type=kind,
            target=url,
            target_kind=name,
            state="pending",
            tries=0,
            attempts=[],
            created_at=now,
            next_attempt_at=now,
        )
        session.add(delivery)
        made.append(delivery)
    session.info.setdefault(_PENDING, []).extend(made)
    return made


def event_data(task: Task) -> dict[str, Any]:
    """The task as GET /api/tasks/<id> gives it, without events (media links as paths)."""
    return task_json(task, events=False)


_NOTIFY_URL = select(Task.notify_url).where(Task.id == bindparam("id_"))


def enqueue_in(conn: Connection, task_id: int, what: str) -> None:
    """`enqueue` for a change written in Core on `conn` (the callback route's hot path).

    Costs nothing when the move is no event, or when neither target is set; otherwise the
    task is read through the ORM on the same connection and transaction, and its deliveries
    are written with their bodies there and then (no commit of this session fills them).
    """
    if what not in EVENT_TYPES:
        return
    if not target and not conn.execute(_NOTIFY_URL, {"id_": task_id}).scalar():
        return
    with Session(bind=conn) as session:  # joins the connection's transaction, never commits it
        task = session.get(Task, task_id)
        if task is None:
            return
        enqueue(session, task, what)
        _fill(session)
        session.flush()


@event.listens_for(Session, "before_commit")
def _fill_payloads(session: Session) -> None:
    """Fill each new delivery's body with the task as this transaction leaves it."""
    _fill(session)


def _fill(session: Session) -> None:
    made: list[Delivery] | None = session.info.pop(_PENDING, None)
    if not made:
        return
    session.flush()  # ids for tasks stored in this transaction
    for delivery in made:
        body: dict[str, Any] = {"type": delivery.type, "timestamp": iso(delivery.created_at)}
        body["data"] = event_data(delivery.task)
        delivery.payload = json.dumps(body, ensure_ascii=True, separators=(",", ":"))


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)
