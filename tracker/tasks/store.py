"""The task store: what `machine` decides, written to a task's row (the callback path aside).

Every input passes through `apply` in the caller's transaction (a Session): the machine's
Change is written to the task, a move updates the per-state counters (`moved`) and adds the
outgoing webhook rows (`webhooks.enqueue`), and the input is recorded as an event. The verbs
open their own transaction around it: `create`, `import_task`, `record_answer` (a create's
outcome), `record_queries` and `query_failed`, `resend`; the claims and sweeps call `apply`
with `Claim`, `GiveUp` and `TimeOut`.

A callback is written by `tasks.callback_writes`, the hot path, with the same `values_of` and
`moved` (`tasks.rows`). Schedule and lease values come from `tasks.schedule`; nothing here
talks HTTP.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, select, text
from sqlalchemy.orm import Session

from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks import machine, schedule, webhooks
from tracker.tasks.models import ORIGINALS, StateCount, Task, utcnow
from tracker.tasks.rows import hash_token as hash_token  # the callback route hashes with it
from tracker.tasks.rows import moved, record, values_of
from tracker.tasks.states import (
    RANK,
    Answered,
    Change,
    GiveUp,
    Input,
    QueryFailed,
    Resend,
    Source,
    TaskState,
    Update,
    Word,
)
from tracker.tasks.states import InvalidAction as InvalidAction  # callers catch it from here

S = TaskState
# the counters in the order every single move takes them (forward): a batch never deadlocks
_COUNTER_ORDER = (case(RANK, value=StateCount.state), StateCount.state)


@dataclass(frozen=True)
class NewTask:
    kind: str
    user_prompt: str
    source_task_id: str | None = None
    expand_prompt: bool | None = None
    image_url: str | None = None
    image_end_url: str | None = None
    options: dict[str, Any] | None = None
    # the dialect it is for ("proxy"/"luma"); None: LUMA_API_FLAVOR at submit ("proxy" in create)
    upstream: str | None = None
    # the caller's webhook target for this task's events (checked by the address guard)
    notify_url: str | None = None
    # the upstream account it must go to (its source's, or named); None: whichever has room
    account: str | None = None


def set_state(session: Session, task: Task, new_state: str) -> None:
    """Move a Task (the counters, and the move's webhook rows) in the caller's transaction."""
    old = task.state
    if old == new_state:
        return
    moved(session, task.id, old, new_state)
    task.state = TaskState(new_state)
    task.updated_at = utcnow()
    webhooks.enqueue(session, task, new_state)  # sent later by the worker


def apply(
    session: Session,
    settings: Settings | None,
    task: Task,
    given: Input | Update,
    source: str | None = None,
    *,
    payload: Any = None,
    note: str | None = None,
    token: str | None = None,
) -> Change:
    """Decide what `given` does to `task` (held for update) and write it, with its event.

    An Update is the upstream's word from `source`. Calling twice with the same word is
    harmless: the second changes nothing and its event is stored once.
    """
    if isinstance(given, Update):
        given = Word(given, Source(source or Source.POLL))
    now = utcnow()
    before = task.state
    change = machine.decide(machine.snapshot(task), given, now)
    if not change.ignored:
        token_hash = task.callback_token_hash
        values = values_of(settings, change, token_hash, now, task.next_check_at, token)
        for name, value in values.items():
            setattr(task, name, value)
        if change.state is not None:
            set_state(session, task, change.state)
    word = isinstance(given, Word)
    if word or change.note is not None or note is not None:
        origin = given.source if isinstance(given, Word) else given.SOURCE
        said = {"payload": payload, "note": note or change.note, "token": token}
        record(session, task, origin, before=before, dedupe=word, **said)
    return change


# -- the verbs: each its own transaction -----------------------------------------------------


def _row(new: NewTask, now: datetime, **given: Any) -> Task:
    """A task's row as a new task (or an import, `given` its own values) starts."""
    values: dict[str, Any] = {
        "kind": new.kind,
        "state": S.QUEUED,
        "user_prompt": new.user_prompt,
        "source_task_id": new.source_task_id,
        "expand_prompt": new.expand_prompt,
        "image_url": new.image_url,
        "image_end_url": new.image_end_url,
        "options": new.options or {},
        "upstream": new.upstream or "proxy",
        "notify_url": new.notify_url,
        "account": new.account,
        "account_pinned": new.account is not None,
        "created_at": now,
        "updated_at": now,
        "next_check_at": now,
        "attempts": 0,
        "quiet_polls": 0,
        "archive_attempts": 0,
        "outcome_unknown": False,
    }
    return Task(**(values | given))


def create(db: Database, new: NewTask) -> Task:
    """A new task, `queued`, committed before anything is sent."""
    with db.write() as session:
        task = _row(new, utcnow())
        session.add(task)
        session.flush()
        moved(session, task.id, None, S.QUEUED)
        record(session, task, Source.SUBMIT, before=None, note="accepted")
    return task


def _held(session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id, with_for_update=True)
    if task is None:
        raise LookupError(task_id)
    return task


def record_answer(
    db: Database,
    settings: Settings,
    task_id: int,
    given: Answered,
    token: str,
    payload: Any,
    late_payload: Any,
) -> Task:
    """What became of a create sent for the task (`late_payload`: the event's payload when
    the answer comes after the task left `submitting`)."""
    with db.write() as session:
        task = _held(session, task_id)
        late = task.state != S.SUBMITTING
        said = late_payload if late else payload
        change = apply(session, settings, task, given, payload=said, token=token)
        upd = given.update
        says_more = upd.understood and upd.state not in (None, S.PENDING)  # processing, done
        if change.state is S.PENDING and not late and says_more:
            apply(session, settings, task, Word(upd, Source.SUBMIT))
        if late and task.state in (S.PENDING, S.PROCESSING) and not task.upstream_id:
            # never in flight without an id: nothing could query it (a callback moved it)
            apply(session, settings, task, GiveUp("the upstream never named the task"))
    return task


def record_queries(
    db: Database, settings: Settings, answers: list[tuple[int, Update, Any]]
) -> list[Task]:
    """Query answers (task id, what it said, the body), in one transaction; their tasks."""
    if not answers:
        return []
    ids = sorted({task_id for task_id, _, _ in answers})
    # each task once here, so nothing needs flushing before the commit
    with db.write() as session, session.no_autoflush:
        found = session.scalars(
            select(Task).where(Task.id.in_(ids)).order_by(Task.id).with_for_update()
        )
        by_id = {task.id: task for task in found}
        if db.is_postgres:
            session.execute(select(StateCount.state).order_by(*_COUNTER_ORDER).with_for_update())
        for task_id, upd, body in answers:
            task = by_id.get(task_id)
            if task is not None:
                apply(session, settings, task, Word(upd, Source.POLL), payload=body)
    return list(by_id.values())


def query_failed(
    db: Database, settings: Settings, task_id: int, message: str, retry_after: float | None
) -> None:
    """A failed query backs the task off (the Retry-After if later); never fatal."""
    with db.write() as session:
        task = session.get(Task, task_id, with_for_update=True)
        if task is None:
            return
        wait, at = schedule.query_retry(settings, (task.quiet_polls or 0) + 1, retry_after)
        apply(session, settings, task, QueryFailed(message, wait, at))


def resend(db: Database, task_id: int, dialect: str) -> Task:
    """A person sends a rejected task again: back to the queue as a new attempt."""
    with db.write() as session:
        task = _held(session, task_id)
        apply(session, None, task, Resend(dialect))
        task.account = task.account if task.account_pinned else None  # any with room will do
    return task


def import_task(
    db: Database,
    settings: Settings,
    new: NewTask,
    upstream_id: str,
    upd: Update,
    body: Any,
) -> tuple[Task, bool]:
    """Track a task made elsewhere, unless its id is tracked already: checked under a per-id
    lock on PostgreSQL (SQLite's BEGIN IMMEDIATE serializes writers), so two imports of one
    id at once store one task. The upstream's answer is applied like any query's."""
    now = utcnow()
    with db.write() as session:
        if db.is_postgres:
            digest = hashlib.sha256(upstream_id.encode()).digest()[:8]
            key = int.from_bytes(digest, "big", signed=True)
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        query = select(Task).where(Task.upstream_id == upstream_id, Task.kind.in_(ORIGINALS))
        tracked = session.scalar(query.order_by(Task.id).limit(1))
        if tracked is not None:
            return tracked, False
        task = _row(
            new,
            now,
            state=None,  # set_state counts it
            upstream_id=upstream_id,
            submitted_at=now,  # the timeout clock starts with the import
            last_news_at=now,
            next_check_at=schedule.first_check(settings, now),
        )
        set_state(session, task, S.PENDING)
        session.add(task)
        record(
            session, task, Source.USER, before=None, note=f"imported from the {new.upstream} API"
        )
        apply(session, settings, task, Word(upd, Source.POLL), payload=body)
        session.flush()
    return task, True


def looked_up(
    db: Database,
    settings: Settings,
    task_id: int,
    found: tuple[Update, Any, str] | None,
    missing: str,
) -> Task:
    """A create whose outcome was unknown, looked for in the account's list of generations.

    Found (what the list says of it, the body, the token it carries): it takes that
    generation's id and is followed like any task (the upstream's word revives it). Not
    found: the look is noted;
    `missing`, when given, is why the search is over, and the task is an ordinary rejection.
    """
    now = utcnow()
    with db.write() as session:
        task = _held(session, task_id)
        task.looked_up_at = now
        if not (task.state == S.REJECTED and task.outcome_unknown):
            return task  # settled meanwhile (a callback revived it, a person resent it)
        if found is not None:
            upd, body, token = found
            apply(session, settings, task, upd, Source.POLL, payload=body, token=token)
        elif missing:
            task.outcome_unknown = False
            task.failure_reason = missing
            task.updated_at = now
            record(session, task, Source.SYSTEM, before=task.state, note=missing)
    return task
