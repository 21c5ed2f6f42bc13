"""Track a task made elsewhere (Luma's web app, another tool): `import_task`.

The upstream is asked once, before anything is stored: a task it does not know, or an
upstream that fails, leaves the database untouched. The answer then goes through
`lifecycle.apply` like any poll, so a completed import is archived and an unfinished one
followed (polled; it has no callback URL) like any other task.

An id already tracked is answered with the existing task, never a copy: the check is
repeated inside the write transaction, under a per-id lock on PostgreSQL (SQLite's BEGIN
IMMEDIATE already serializes writers), so two imports of one id at once store one task.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks import store as lifecycle
from tracker.tasks.models import Task, utcnow
from tracker.upstream.client import APIStatusError, LumaClient, UpstreamError
from tracker.upstream.dialects.imported import origin

# statuses by which an upstream says "no such task" to a GET of one id
NOT_KNOWN = (400, 404, 410, 422)


class UnknownUpstreamTask(LookupError):
    """The upstream does not know the id; `reason` is its own words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ImportFailed(Exception):
    """The upstream failed, could not be reached, or answered something not understood."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _existing(session: Session, upstream_id: str) -> Task | None:
    return session.scalar(
        select(Task).where(Task.upstream_id == upstream_id).order_by(Task.id).limit(1)
    )


def _lock_id(session: Session, db: Database, upstream_id: str) -> None:
    if db.is_postgres:
        key = int.from_bytes(hashlib.sha256(upstream_id.encode()).digest()[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def import_task(
    db: Database,
    settings: Settings,
    client: LumaClient,
    upstream_id: str,
    *,
    notify_url: str | None = None,
) -> tuple[Task, bool]:
    """(the task, True when it was stored now) for an upstream id already validated.

    `notify_url` (already checked by the address guard) is the new task's webhook target; an
    id already tracked keeps the target it has.

    Raises UnknownUpstreamTask (the upstream's words) or ImportFailed; nothing is stored then.
    """
    with db.read() as session:
        found = _existing(session, upstream_id)
    if found is not None:
        return found, False
    try:
        answer = client.query(upstream_id)
    except APIStatusError as exc:
        if exc.status in NOT_KNOWN:
            raise UnknownUpstreamTask(exc.reason) from exc
        raise ImportFailed(f"the upstream query failed: {exc.message}") from exc
    except UpstreamError as exc:
        raise ImportFailed(f"the upstream query failed: {exc.message}") from exc
    upd = answer.update
    if not upd.understood or upd.state is None:
        raise ImportFailed("the upstream's answer about this task was not understood")
    if upd.upstream_id and upd.upstream_id != upstream_id:
        raise ImportFailed("the upstream answered about another task")
    asked = origin(answer.body)

    now = utcnow()
    with db.write() as session:
        _lock_id(session, db, upstream_id)
        found = _existing(session, upstream_id)
        if found is not None:
            return found, False
        task = Task(
            kind="extend" if asked.source_id else "generate",
            state=None,  # set_state counts it
            upstream=client.dialect.name,
            upstream_id=upstream_id,
            source_task_id=asked.source_id,
            user_prompt=upd.prompt or asked.prompt or f"(imported: {upstream_id})",
            options={},
            created_at=now,
            updated_at=now,
            submitted_at=now,  # the timeout clock starts with the import
            last_news_at=now,
            next_check_at=now + timedelta(seconds=settings.poll_after),
            attempts=0,
            quiet_polls=0,
            archive_attempts=0,
            notify_url=notify_url,
        )
        lifecycle.set_state(session, task, "pending")
        session.add(task)
        lifecycle.record(
            session, task, "user", before=None, note=f"imported from the {task.upstream} API"
        )
        lifecycle.apply(session, settings, task, upd, "poll", payload=answer.body)
        session.flush()
    return task, True
