"""The only code that changes a task's state: it writes what `machine` decided.

- `create` stores a new task as `queued` (committed before anything is sent);
- `apply` takes an Update from a poll, an import or a create's answer (a Task in hand);
  a callback's is written by `ingest`, the hot path, with `values_of` and `moved` from here;
- `set_state` and `moved` are the one place a state changes (with the per-state counters);
- the service's own moves: `mark_outcome_unknown`, `time_out`, `requeue_for_resend`,
  `note_poll_failure`; what a create's answer does is in `answers`.

No HTTP here (the upstream I/O is in `dispatch` and `polling`) and no claims, leases or
backoff (`scheduler`): schedule and lease values come from `scheduler.timing`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from tracker.db import Database, table_of
from tracker.settings import Settings
from tracker.tasks import machine, webhooks
from tracker.tasks import schedule as timing
from tracker.tasks.events import Executor, record, scrub
from tracker.tasks.events import (
    hash_token as hash_token,  # the callback route and the claims hash with it
)
from tracker.tasks.machine import Change, TaskFields, Update
from tracker.tasks.models import StateCount, Task, utcnow
from tracker.tasks.states import Source, TaskState, order_key
from tracker.upstream.client import RateLimitError, UpstreamError

log = logging.getLogger(__name__)

S = TaskState
OUTCOME_UNKNOWN = "outcome unknown"
_tasks = table_of(Task)
_counts = table_of(StateCount)
_COUNT = (
    update(_counts)
    .where(_counts.c.state == bindparam("state_"))
    .values(count=_counts.c.count + bindparam("delta_"))
)


class InvalidAction(Exception):
    """A manual action that does not fit the task's state (resend of a completed task, say)."""


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


# -- the one place a state changes ------------------------------------------------------------


def moved(session: Executor, task_id: int | None, old: str | None, new: str) -> None:
    """Every state change passes here, in the transaction that makes it: the counters.

    The two counter rows are always updated in one order (by rank, then name), whatever the
    direction of the move, so that two transactions never wait on each other's counters.
    (Hooks that follow state changes, such as outgoing webhooks, belong here too.)
    """
    deltas = {new: 1} if old is None else {old: -1, new: 1}
    for state in sorted(deltas, key=order_key):
        session.execute(_COUNT, {"state_": str(state), "delta_": deltas[state]})


def set_state(session: Session, task: Task, new_state: str) -> None:
    """Change a Task's state (and the counters) in the caller's transaction."""
    old = task.state
    if old == new_state:
        return
    moved(session, task.id, old, new_state)
    task.state = TaskState(new_state)
    task.updated_at = utcnow()
    # the event's deliveries, in this same transaction (sent later by the worker)
    webhooks.enqueue(session, task, new_state)


# -- create -----------------------------------------------------------------------------------


def create(db: Database, new: NewTask) -> Task:
    now = utcnow()
    with db.write() as session:
        task = Task(
            kind=new.kind,
            state=S.QUEUED,
            user_prompt=new.user_prompt,
            source_task_id=new.source_task_id,
            expand_prompt=new.expand_prompt,
            image_url=new.image_url,
            image_end_url=new.image_end_url,
            options=new.options or {},
            upstream=new.upstream or "proxy",
            notify_url=new.notify_url,
            created_at=now,
            updated_at=now,
            next_check_at=now,
            attempts=0,
            quiet_polls=0,
            archive_attempts=0,
            outcome_unknown=False,
        )
        session.add(task)
        session.flush()
        moved(session, task.id, None, S.QUEUED)
        record(session, task, Source.SUBMIT, before=None, note="accepted")
    return task


# -- applying what the upstream said ----------------------------------------------------------


def values_of(
    settings: Settings,
    change: Change,
    token_hash: str | None,
    now: datetime,
    next_check_at: datetime | None,
) -> dict[str, Any]:
    """The columns a Change sets: its fields, the reason masked, the schedule it leaves."""
    values = dict(change.fields)
    if change.failure_reason:
        values["failure_reason"] = scrub(token_hash, change.failure_reason)
    quiet = values.get("quiet_polls", 0)
    values.update(timing.next_check_at(settings, change.next, quiet, now, next_check_at))
    return values


def apply(
    session: Session,
    settings: Settings,
    task: Task,
    upd: Update,
    source: str,
    *,
    payload: Any,
    note: str | None = None,
) -> bool:
    """Apply what an upstream body said to a Task the caller holds (a write transaction).

    Returns True when the task's state changed; calling twice is harmless.
    """
    now = utcnow()
    before = task.state
    change = machine.decide(TaskFields.of(task), upd, Source(source), now)
    if not change.ignored:
        for name, value in values_of(
            settings, change, task.callback_token_hash, now, task.next_check_at
        ).items():
            setattr(task, name, value)
        if change.state is not None:
            set_state(session, task, change.state)
    record(
        session, task, source, before=before, payload=payload, note=note or change.note, dedupe=True
    )
    return change.state is not None


# -- the service's own moves ------------------------------------------------------------------


def clear_progress(task: Task) -> None:
    """Refused, unknown, resent: nothing runs upstream that we can follow."""
    task.progress = None
    task.estimate_wait_seconds = None


def outcome_unknown(task: Task) -> bool:
    """Rejected because a create may or may not have happened (not refused outright)."""
    return task.state == S.REJECTED and bool(task.outcome_unknown)


def mark_outcome_unknown(
    session: Session,
    task: Task,
    why: str,
    request_shown: dict[str, Any] | None = None,
    answer: Any = None,
    token: str | None = None,
) -> None:
    """A create that may or may not have happened upstream: never resend on our own."""
    before = task.state
    set_state(session, task, S.REJECTED)
    for name, value in timing.unscheduled().items():
        setattr(task, name, value)
    task.outcome_unknown = True
    task.failure_reason = scrub(
        task.callback_token_hash,
        f"{OUTCOME_UNKNOWN}: {why}. The upstream may have created (and charged for) this task; "
        "resend it only if it does not show up.",
        token,
    )
    clear_progress(task)
    payload: dict[str, Any] | None = {"request": request_shown} if request_shown else None
    if payload is not None and answer is not None:
        payload["answer"] = answer
    record(
        session,
        task,
        Source.SUBMIT,
        before=before,
        payload=payload,
        note=task.failure_reason,
        token=token,
    )


def time_out(session: Session, task: Task, seconds: float) -> None:
    """No final state TRACKER_TASK_TIMEOUT after the attempt began: `timed_out`.

    A later callback or a manual poll can still complete it (see `machine.may_move`).
    """
    before = task.state
    set_state(session, task, S.TIMED_OUT)
    task.progress = task.estimate_wait_seconds = None
    for name, value in timing.unscheduled().items():
        setattr(task, name, value)
    task.failure_reason = f"no final state after {seconds:g} s" + (
        " (never sent: no free slot)" if before == S.QUEUED else ""
    )
    record(session, task, Source.SYSTEM, before=before, note=task.failure_reason)


def requeue_for_resend(session: Session, task: Task, flavor: str) -> None:
    """A person resends a rejected task: back to the queue as a new attempt, a new clock."""
    before = task.state
    set_state(session, task, S.QUEUED)
    task.upstream = flavor
    task.failure_reason = task.upstream_id = task.upstream_state = None
    task.callback_token_hash = None
    task.outcome_unknown = False
    clear_progress(task)
    task.next_check_at = task.submitted_at = utcnow()  # due for dispatch at once
    record(session, task, Source.USER, before=before, note=f"resent as attempt {task.attempts + 1}")


def note_poll_failure(db: Database, settings: Settings, task_id: int, exc: UpstreamError) -> None:
    """A failed query backs the task off (honouring Retry-After) and is never fatal."""
    with db.write() as session:
        task = session.get(Task, task_id, with_for_update=True)
        if task is None:
            return
        for name, value in timing.released().items():
            setattr(task, name, value)
        if task.is_final and task.state != S.TIMED_OUT:
            return
        task.quiet_polls = (task.quiet_polls or 0) + 1
        retry_after = exc.retry_after if isinstance(exc, RateLimitError) else None
        wait, task.next_check_at = timing.poll_retry(settings, task.quiet_polls, retry_after)
        record(
            session,
            task,
            Source.POLL,
            before=task.state,
            note=f"query failed: {exc.message}; next try in {wait:.0f} s",
        )
