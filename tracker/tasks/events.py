"""A task's event history: every input (submit, callback, poll, person, sweep) as one row.

Payloads are stored as JSON text that always loads again, with every secret masked (the
task's own callback token included, which only its hash remembers). Upstream inputs carry a
fingerprint (sha256 of source and payload) and are inserted with ON CONFLICT DO NOTHING on
the unique (task_id, fingerprint) index: an identical delivery is stored once, in one
statement, with no SELECT before it. NULL fingerprints never collide.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tracker import jsontext
from tracker.db import table_of
from tracker.redact import mask_token, redact
from tracker.tasks.models import Task, TaskEvent, utcnow
from tracker.tasks.sql import Transaction

MAX_PAYLOAD_CHARS = 256_000
_events = table_of(TaskEvent)
_INSERT_EVENT = {
    "sqlite": sqlite.insert(_events).on_conflict_do_nothing(
        index_elements=["task_id", "fingerprint"]
    ),
    "postgresql": postgresql.insert(_events).on_conflict_do_nothing(
        index_elements=["task_id", "fingerprint"]
    ),
}
# the columns `values` fills
COLUMNS = (
    "task_id",
    "source",
    "state_before",
    "state_after",
    "note",
    "payload",
    "fingerprint",
    "created_at",
)
# a Session, a Core connection, or the callback route's driver transaction (tracker/tasks/sql.py)
Executor = Session | Connection | Transaction


def _dialect(executor: Executor) -> str:
    if isinstance(executor, Connection | Transaction):
        return executor.dialect.name
    return executor.get_bind().dialect.name


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def scrub(token_hash: str | None, text: str, token: str | None = None) -> str:
    """`text` with every secret masked, the task's callback token included in any encoding.

    The token is known in memory while a create is sent (`token`); afterwards only its hash
    is, which `mask_token` uses.
    """
    return mask_token(redact(text, (token,) if token else ()), token_hash)


def payload_text(token_hash: str | None, payload: Any, token: str | None = None) -> str | None:
    """A payload as JSON text that always loads again (ASCII, no NaN), secrets masked.

    Text that was not JSON (a callback's garbage) is stored as a JSON string.
    """
    if payload is None:
        return None
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", "replace")
    # ASCII JSON holds no NUL (PostgreSQL text cannot) and no lone surrogate (no database can)
    text_value = scrub(token_hash, jsontext.dumps(payload), token)
    if len(text_value) > MAX_PAYLOAD_CHARS:
        text_value = text_value[:MAX_PAYLOAD_CHARS] + "…[truncated]"
    return text_value


def values(
    task_id: int,
    token_hash: str | None,
    source: str,
    *,
    before: str | None,
    after: str | None,
    payload: Any = None,
    note: str | None = None,
    dedupe: bool = False,
    token: str | None = None,
) -> dict[str, Any]:
    """An event's row: its payload as stored (secrets masked) and, with dedupe, its fingerprint."""
    body = payload_text(token_hash, payload, token)
    # only upstream inputs are de-duplicated: the unique index lets each fingerprint in once
    fingerprint = (
        hashlib.sha256(f"{source}\n{body}".encode()).hexdigest() if dedupe and body else None
    )
    return {
        "task_id": task_id,
        "source": str(source),
        "state_before": before,
        "state_after": after,
        "note": scrub(token_hash, note, token) if note else None,
        "payload": body,
        "fingerprint": fingerprint,
        "created_at": utcnow(),
    }


def insert(session: Executor, row: dict[str, Any]) -> None:
    """Insert an event's row (`values`); a fingerprint already stored for the task is skipped."""
    session.execute(_INSERT_EVENT[_dialect(session)], row)


def record(
    session: Session,
    task: Task,
    source: str,
    *,
    before: str | None,
    payload: Any = None,
    note: str | None = None,
    dedupe: bool = False,
    token: str | None = None,
) -> None:
    """Add an event; with dedupe, an identical payload from the same source is stored once."""
    task_id: int | None = task.id  # Mapped[int], but None until the task's first flush
    if task_id is None:
        session.add(task)
        session.flush()
    insert(
        session,
        values(
            task.id,
            task.callback_token_hash,
            source,
            before=before,
            after=task.state,
            payload=payload,
            note=note,
            dedupe=dedupe,
            token=token,
        ),
    )
