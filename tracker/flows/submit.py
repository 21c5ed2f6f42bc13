"""Sending creates upstream: submit, dispatch, send and resend (the upstream I/O of a create).

`send` reads the claimed task, calls the client with no database transaction open, then
hands whatever came back (an answer or an error) to `outcomes.took_answer`, which makes
the state change through store. The claim itself (a free slot, `submitting`, the lease)
is the scheduler's (`scheduler.claims.claim_for_dispatch`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from tracker import metrics
from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks import claims, outcomes, store
from tracker.tasks.models import Task
from tracker.tasks.states import TaskState
from tracker.tasks.store import InvalidAction, NewTask
from tracker.upstream import dialects
from tracker.upstream.client import Answer, LumaClient, UpstreamError


def request_body(task: Task, notify_hook: str | None, flavor: str = "proxy") -> dict[str, Any]:
    """The JSON sent upstream in the task's dialect; fields not given are left out."""
    return dialects.get(flavor).create_request(task, notify_hook).body


def _shorten_images(body: dict[str, Any]) -> dict[str, Any]:
    shown = dict(body)
    for key in ("image_url", "image_end_url"):
        value = shown.get(key)
        if isinstance(value, str) and len(value) > 200:
            shown[key] = value[:80] + f"…[{len(value)} chars]"
    return shown


def _task(session: Session, task_id: int, *, lock: bool = False) -> Task:
    task = session.get(Task, task_id, with_for_update=lock)
    if task is None:  # claimed tasks are never deleted; a bug if it happens
        raise LookupError(task_id)
    return task


def send(db: Database, settings: Settings, client: LumaClient, task_id: int, token: str) -> Task:
    """Send a task that `claim_for_dispatch` moved to `submitting`, and record the outcome."""
    with db.read() as session:
        outgoing = client.dialect.create_request(
            _task(session, task_id), settings.callback_url(token)
        )
    answer: Answer | None = None
    error: UpstreamError | None = None
    try:
        answer = client.send(outgoing)
    except UpstreamError as exc:
        error = exc
    with db.write() as session:
        task = _task(session, task_id, lock=True)
        shown = _shorten_images(outgoing.body)
        outcomes.took_answer(session, settings, task, shown, answer, error, token)
        metrics.submit(task.state, store.outcome_unknown(task))
    return task


def dispatch(db: Database, settings: Settings, client: LumaClient, task_id: int) -> bool:
    """Send this queued task now if a slot is free; False leaves it queued for the worker."""
    claimed = claims.claim_for_dispatch(db, settings, task_id=task_id)
    for claimed_id, token in claimed:
        send(db, settings, client, claimed_id, token)
    return bool(claimed)


def submit(db: Database, settings: Settings, client: LumaClient, new: NewTask) -> Task:
    """Store the task (committed first), then send it now if a slot is free."""
    if new.upstream is None:
        new = replace(new, upstream=settings.luma_api_flavor)
    task = store.create(db, new)
    dispatch(db, settings, client, task.id)
    return task


def resend(db: Database, settings: Settings, client: LumaClient, task_id: int) -> Task:
    """A rejected task goes back to the queue as a new attempt, sent at once if a slot is free."""
    with db.write() as session:
        task = session.get(Task, task_id, with_for_update=True)
        if task is None:
            raise LookupError(task_id)
        if task.state != TaskState.REJECTED:
            raise InvalidAction(f"only a rejected task can be resent; this one is {task.state}")
        if task.upstream != settings.luma_api_flavor:
            # it is sent again with today's dialect: only if that API can take it
            problem = dialects.get(settings.luma_api_flavor).unsupported(task)
            if problem is not None:
                raise InvalidAction(
                    f"cannot resend with LUMA_API_FLAVOR={settings.luma_api_flavor}: {problem[1]}"
                )
        store.requeue_for_resend(session, task, settings.luma_api_flavor)
    dispatch(db, settings, client, task_id)
    return task
