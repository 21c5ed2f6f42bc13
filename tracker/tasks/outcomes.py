"""A create's state changes: claimed for sending, then what its answer (or its failure) does.

`dispatch` talks to the upstream and hands the outcome here; the scheduler's claim calls
`start`. Every branch is a lifecycle move (through `store.set_state`):
- accepted: `pending` with the upstream's id (and further, if the answer says more);
- refused (a 4xx, or a 2xx whose body says it failed): `rejected`, nothing was created;
- surely not acted on (429, a connection never made): back to `queued`, tried again later;
- anything else (a timeout, a 5xx, an answer naming no task): "outcome unknown", never
  resent on our own (the money guard);
- an answer that comes after the task left `submitting` (`_late_answer`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from tracker.redact import redact
from tracker.settings import Settings
from tracker.tasks import schedule, store
from tracker.tasks.models import Task, utcnow
from tracker.tasks.states import Source, TaskState
from tracker.tasks.store import (
    clear_progress,
    mark_outcome_unknown,
    outcome_unknown,
    record,
    set_state,
)
from tracker.upstream.client import Answer, APIStatusError, RateLimitError, UpstreamError
from tracker.upstream.parse import CreateAnswer, parse_create

S = TaskState


def start(session: Session, task: Task, token: str, lease: dict[str, Any], now: datetime) -> None:
    """A claimed queued task: `submitting`, with the hash of its new callback token."""
    set_state(session, task, S.SUBMITTING)
    task.callback_token_hash = store.hash_token(token)
    task.attempts = (task.attempts or 0) + 1
    task.submitted_at = now
    for name, value in lease.items():
        setattr(task, name, value)


def took_answer(
    session: Session,
    settings: Settings,
    task: Task,
    request_shown: dict[str, Any],
    answer: Answer | None,
    error: UpstreamError | None,
    token: str,
) -> None:
    """Record what became of a create sent for `task` (held for update by the caller)."""
    now = utcnow()
    before = task.state
    for name, value in schedule.released().items():
        setattr(task, name, value)
    created = parse_create(answer.body) if answer is not None else None
    if task.state != S.SUBMITTING:
        _late_answer(session, settings, task, created, request_shown, answer, token)
    elif answer is not None and created is not None and created.refused is not None:
        # a 200 whose body says it failed (upstream.md): nothing was created
        _refuse(session, task, created.refused, request_shown, answer.status, answer.body, token)
    elif answer is not None and created is not None and created.unknown:
        # neither a task id nor a failure: a task we cannot name may exist (the money guard)
        mark_outcome_unknown(
            session, task, "the answer named no task id", request_shown, answer.body, token
        )
    elif answer is not None and created is not None:
        upd = created.update
        task.upstream_id = upd.upstream_id
        set_state(session, task, S.PENDING)
        if upd.progress is not None:
            task.progress = max(task.progress or 0, upd.progress)
        task.estimate_wait_seconds = upd.estimate_wait_seconds
        task.last_news_at = now
        task.next_check_at = schedule.first_check(settings, now)
        shown = {"request": request_shown, "status": answer.status, "answer": answer.body}
        record(session, task, Source.SUBMIT, before=before, token=token, payload=shown, note="sent")
        if upd.understood and upd.state not in (None, S.PENDING):
            store.apply(session, settings, task, upd, Source.SUBMIT, payload=None)
    elif isinstance(error, RateLimitError) or (error is not None and not error.sent):
        _requeue(session, task, error, request_shown, token, now)
    elif isinstance(error, APIStatusError) and error.status < 500:
        _refuse(session, task, error.reason, request_shown, error.status, error.body, token)
    else:
        message = error.message if error is not None else "no answer"
        mark_outcome_unknown(session, task, redact(message, (token,)), request_shown)


def _requeue(
    session: Session,
    task: Task,
    error: UpstreamError,
    request_shown: dict[str, Any],
    token: str,
    now: datetime,
) -> None:
    """Surely not acted on: back to the queue, to be tried again after the Retry-After."""
    before = task.state
    wait = schedule.REQUEUE.delay(retry_after=getattr(error, "retry_after", None) or None)
    set_state(session, task, S.QUEUED)
    task.attempts -= 1  # it never reached the upstream: not an attempt
    task.callback_token_hash = None
    task.next_check_at = schedule.after(wait, now)
    record(
        session,
        task,
        Source.SUBMIT,
        before=before,
        token=token,
        payload={"request": request_shown, "error": error.message},
        note=f"not accepted now ({error.message}); will try again in {wait:g} s",
    )


def _refuse(
    session: Session,
    task: Task,
    reason: str,
    request_shown: dict[str, Any],
    status: int,
    body: Any,
    token: str,
) -> None:
    """The upstream said no (a 4xx, or a 2xx whose body says it failed): nothing was created."""
    before = task.state
    set_state(session, task, S.REJECTED)
    # the reason may echo our request (a validator's "input"): keep no token in it
    task.failure_reason = store.scrub(
        task.callback_token_hash, f"upstream refused: {reason}", token
    )
    task.outcome_unknown = False
    task.callback_token_hash = None  # nothing was created: nothing may call back
    task.next_check_at = None
    clear_progress(task)
    shown = {"request": request_shown, "status": status, "answer": body}
    record(
        session,
        task,
        Source.SUBMIT,
        before=before,
        token=token,
        payload=shown,
        note=task.failure_reason,
    )


def _late_answer(
    session: Session,
    settings: Settings,
    task: Task,
    created: CreateAnswer | None,
    request_shown: dict[str, Any],
    answer: Answer | None,
    token: str,
) -> None:
    """The create's answer came after the task left `submitting`.

    A callback beat the answer (its news stands, the answer adds the id), or the send
    outlived its lease and the task was given up as "outcome unknown": an answer naming the
    task revives it; one saying it was refused settles it; one naming nothing changes nothing.
    """
    now = utcnow()
    before = task.state
    note = "sent"
    if created is not None and created.accepted and not task.upstream_id:
        task.upstream_id = created.update.upstream_id
    if created is not None and created.accepted and outcome_unknown(task):
        set_state(session, task, S.PENDING)  # accepted after all: follow it again
        task.failure_reason = None
        task.outcome_unknown = False
        task.last_news_at = now
        task.next_check_at = schedule.first_check(settings, now)
        note = "sent; accepted after the task had been given up as unknown"
    elif created is not None and created.refused is not None and outcome_unknown(task):
        task.failure_reason = store.scrub(
            task.callback_token_hash, f"upstream refused: {created.refused}", token
        )
        task.outcome_unknown = False
        task.callback_token_hash = None
        note = task.failure_reason
    elif created is not None and created.refused is not None:
        note = f"sent; the answer says refused ({created.refused}) but the task had news already"
    elif created is not None and created.unknown:
        note = "sent; the answer named no task id"
    shown: dict[str, Any] = {"request": request_shown}
    if answer is not None:
        shown["answer"] = answer.body
    record(session, task, Source.SUBMIT, before=before, payload=shown, note=note, token=token)
    if task.state in (S.PENDING, S.PROCESSING) and not task.upstream_id:
        # never in flight without an id: nothing could query it (a callback moved it, say)
        mark_outcome_unknown(session, task, "the upstream never named the task")
