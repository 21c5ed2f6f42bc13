"""Sending creates upstream: submit, dispatch, send and resend (the upstream I/O of a create).

`send` reads the claimed task, calls the client with no database transaction open, then
reads whatever came back (an answer or an error) into an `Answered` and hands it to the
store (`store.record_answer`), which makes the move the machine decides. The claim itself
(a free slot, `submitting`, the lease) is `tasks.claims.claim_for_dispatch`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tracker import metrics
from tracker.db import Database
from tracker.flows.validate import ValidationError
from tracker.redact import redact
from tracker.settings import Settings
from tracker.tasks import claims, schedule, store
from tracker.tasks.models import ORIGINALS, Task, utcnow
from tracker.tasks.states import IN_FLIGHT_STATES, Answered, TaskState
from tracker.tasks.store import InvalidAction, NewTask
from tracker.upstream import account_rows, accounts, dialects
from tracker.upstream.client import (
    Answer,
    APIStatusError,
    LumaClient,
    RateLimitError,
    UpstreamError,
)
from tracker.upstream.creates import parse_create
from tracker.upstream.operations import FROM_VIDEO, Operation, operation_for

# an account refused for credit tries again after this (Luma's: as soon as its balance is read
# above zero, `account_rows.refresh`)
NO_CREDIT_PAUSE = 600.0


def _shorten_images(body: dict[str, Any]) -> dict[str, Any]:
    shown = dict(body)
    for key in ("image_url", "image_end_url"):
        value = shown.get(key)
        if isinstance(value, str) and len(value) > 200:
            shown[key] = value[:80] + f"…[{len(value)} chars]"
    return shown


def _task(session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None:  # claimed tasks are never deleted; a bug if it happens
        raise LookupError(task_id)
    return task


def answered(
    shown: dict[str, Any], answer: Answer | None, error: UpstreamError | None, token: str
) -> tuple[Answered, dict[str, Any]]:
    """What the create's answer (or its error) says, read by the parser; and its event's
    payload. A 2xx that names no task, or no answer that settles it, is "outcome unknown":
    never resent on our own (the money guard)."""
    if answer is not None:
        created = parse_create(answer.body)
        said = {"request": shown, "status": answer.status, "answer": answer.body}
        if created.refused is not None:  # a 200 whose body says it failed (upstream.md)
            return Answered("refused", reason=created.refused), said
        if created.unknown:
            return Answered("no_id"), {"request": shown, "answer": answer.body}
        return Answered("accepted", created.update), said
    if isinstance(error, RateLimitError) or (error is not None and not error.sent):
        retry_after = getattr(error, "retry_after", None) or None
        wait = schedule.REQUEUE.delay(retry_after=retry_after)
        said = {"request": shown, "error": error.message}
        return Answered("not_sent", reason=error.message, wait=wait, from_answer=False), said
    if isinstance(error, APIStatusError) and error.status < 500:
        said = {"request": shown, "status": error.status, "answer": error.body}
        return Answered("refused", reason=error.reason, from_answer=False), said
    message = redact(error.message if error is not None else "no answer", (token,))
    return Answered("unknown", reason=message, from_answer=False), {"request": shown}


def _source_video(client: LumaClient, operation: Operation) -> tuple[Operation, Answered | None]:
    """A modify or a reframe of a generation of the account is sent with that generation's
    video URL, read now (links expire); an answer in place of sending when it cannot be."""
    if not isinstance(operation, FROM_VIDEO) or operation.video_url:
        return operation, None
    try:
        said = client.query(operation.source_id or "").update
    except UpstreamError as exc:
        if isinstance(exc, APIStatusError) and exc.status < 500 and exc.status != 429:
            reason = f"the source video could not be read: {exc.reason}"
            return operation, Answered("refused", reason=reason, from_answer=False)
        wait = schedule.REQUEUE.delay(retry_after=getattr(exc, "retry_after", None) or None)
        reason = f"the source video could not be read: {exc.message}"
        return operation, Answered("not_sent", reason=reason, wait=wait, from_answer=False)
    if not said.video_url and said.state in (TaskState.PENDING, TaskState.PROCESSING):
        # remade meanwhile (an upscale or audio answers with its source's id): wait for it
        reason = f"the source generation {operation.source_id} is being made again"
        wait = schedule.REQUEUE.delay(retry_after=None)
        return operation, Answered("not_sent", reason=reason, wait=wait, from_answer=False)
    if not said.video_url:
        reason = f"the source generation {operation.source_id} has no video"
        return operation, Answered("refused", reason=reason, from_answer=False)
    return replace(operation, video_url=said.video_url), None


def send(db: Database, settings: Settings, client: LumaClient, task_id: int, token: str) -> Task:
    """Send a task that `claim_for_dispatch` moved to `submitting`, and record the outcome."""
    with db.read() as session:
        operation = operation_for(_task(session, task_id))
    operation, unsent = _source_video(client, operation)
    if unsent is not None:  # no create was sent: none of the account's day
        said = {"source_task_id": getattr(operation, "source_id", None), "error": unsent.reason}
        task = store.record_answer(db, settings, task_id, unsent, token, said, {})
        claims.not_sent(db, task_id, client.account, claims.day_of(utcnow()), elsewhere=False)
        return task
    outgoing = client.dialect.request(
        operation, settings.callback_url(token), model=settings.luma_model
    )
    answer: Answer | None = None
    error: UpstreamError | None = None
    try:
        answer = client.send(outgoing)
    except UpstreamError as exc:
        error = exc
    shown = _shorten_images(outgoing.body)
    given, said = answered(shown, answer, error, token)
    status = error.status if isinstance(error, APIStatusError) else None
    refused_key = status == 401
    no_credit = given.outcome == "refused" and account_rows.no_credit(given.reason, status)
    account = accounts.named(settings, client.account)
    if (refused_key or no_credit) and account is not None:
        # nothing was made, nor charged: the task waits for another account (or this one)
        if refused_key:
            account_rows.disable(db, account, f"the upstream refused its key: {given.reason}")
        else:
            account_rows.pause(db, account, NO_CREDIT_PAUSE, f"no credit: {given.reason}")
        given = Answered("not_sent", reason=given.reason, wait=0.0, from_answer=False)
    refused_key = refused_key or no_credit
    late = {"request": shown} | ({"answer": answer.body} if answer is not None else {})
    task = store.record_answer(db, settings, task_id, given, token, said, late)
    if given.outcome in ("not_sent", "refused") and task.submitted_at is not None:
        day = claims.day_of(task.submitted_at)
        claims.not_sent(db, task_id, client.account, day, elsewhere=refused_key)
    unknown = task.state == TaskState.REJECTED and bool(task.outcome_unknown)
    metrics.submit(task.state, unknown, client.account)
    return task


def dispatch(db: Database, settings: Settings, client: LumaClient, task_id: int) -> bool:
    """Send this queued task now if an account that may take it has a free slot (the least
    loaded first); False leaves it queued for the worker."""
    for account in account_rows.by_load(db, settings):
        claimed = claims.claim_for_dispatch(db, settings, task_id=task_id, account=account)
        for claimed_id, token in claimed:
            send(
                db, settings, accounts.client_of(settings, account.name, client), claimed_id, token
            )
        if claimed:
            return True
    return False


def account_for(
    settings: Settings, new: NewTask, source: Task | None, *, derived: bool
) -> str | None:
    """The account a new task must go to, or None for whichever has room; ValidationError
    naming `account` when the one named is unknown, another than its source's, or needed."""
    named = new.account
    chosen = accounts.named(settings, named) if named is not None else None
    if named is not None and chosen is None:
        known = ", ".join(account.name for account in accounts.pool(settings))
        raise ValidationError("account", f"account must be one of {known}, not {named!r}")
    if chosen is not None and chosen.dialect != new.upstream:
        raise ValidationError(
            "account",
            f"account {named} speaks the {chosen.dialect} API; this task is for {new.upstream}",
        )
    if source is not None and source.account:
        if named not in (None, source.account):
            raise ValidationError(
                "account", f"account must be {source.account}, the account of its source"
            )
        return source.account  # its generation exists there only
    same = [a.name for a in accounts.pool(settings) if a.dialect == new.upstream]
    if named is not None or not derived:
        return named
    if len(same) != 1:  # a video made elsewhere: in which account?
        raise ValidationError(
            "account", f"account must name the account the source was made in: {', '.join(same)}"
        )
    return same[0]


def _remaking(db: Database, upstream_id: str) -> Task | None:
    """An upscale or audio of this generation not yet final: the generation is being remade."""
    same = or_(Task.upstream_id == upstream_id, Task.source_task_id == upstream_id)
    with db.read() as session:
        return session.scalar(
            select(Task)
            .where(same, Task.kind.in_(("upscale", "audio")))
            .where(Task.state.in_((TaskState.QUEUED, *IN_FLIGHT_STATES)))
            .limit(1)
        )


def check_source(db: Database, new: NewTask) -> Task | None:
    """A source the tracker knows must be a completed video of the same API; ValidationError
    naming source_task_id otherwise. An id it does not know passes (a video made elsewhere)."""
    if not new.source_task_id:
        return None
    with db.read() as session:
        query = select(Task).where(Task.upstream_id == new.source_task_id)
        source = session.scalar(query.where(Task.kind.in_(ORIGINALS)).order_by(Task.id).limit(1))
    remaking = _remaking(db, new.source_task_id)
    if source is None:
        return None
    problem = None
    if remaking is not None:  # Luma answers an upscale or audio with its source's own id
        problem = (
            f"source_task_id names a video that task {remaking.id} ({remaking.kind}) is making "
            "again: try once it is done"
        )
    elif source.kind == "image":
        problem = f"source_task_id names task {source.id}, an image: animate it as image_url"
    elif source.state != TaskState.COMPLETED:
        problem = f"source_task_id names task {source.id}, which is {source.state}, not completed"
    elif source.upstream != new.upstream:
        problem = (
            f"source_task_id names task {source.id}, made through the {source.upstream} API; "
            f"this tracker speaks {new.upstream} (LUMA_API_FLAVOR), which does not know it"
        )
    if problem is not None:
        raise ValidationError("source_task_id", problem)
    return source


def submit(db: Database, settings: Settings, client: LumaClient, new: NewTask) -> Task:
    """Check the source, store the task (committed first), then send it now if a slot is free.

    Raises ValidationError (naming source_task_id or account) when the source cannot be
    worked on, or the account is not one that may take it."""
    if new.upstream is None:
        new = replace(new, upstream=settings.luma_api_flavor)
    source = check_source(db, new)
    derived = bool(new.source_task_id)
    new = replace(new, account=account_for(settings, new, source, derived=derived))
    task = store.create(db, new)
    dispatch(db, settings, client, task.id)
    return task


def resend(db: Database, settings: Settings, client: LumaClient, task_id: int) -> Task:
    """A rejected task goes back to the queue as a new attempt, sent at once if a slot is free.

    It is sent with today's dialect: only if that API can take it.
    """
    dialect = settings.luma_api_flavor
    with db.read() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise LookupError(task_id)
        if task.state == TaskState.REJECTED and task.upstream != dialect:
            problem = dialects.get(dialect).unsupported(operation_for(task))
            if problem is not None:
                raise InvalidAction(f"cannot resend with LUMA_API_FLAVOR={dialect}: {problem[1]}")
    task = store.resend(db, task_id, dialect)
    dispatch(db, settings, client, task_id)
    return task
