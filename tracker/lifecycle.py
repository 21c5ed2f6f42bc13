"""The only code that changes a task's state.

- `create` stores a new task as `queued` (committed before anything is sent);
- `dispatch` sends a queued task upstream when a slot is free;
- `apply` takes an Update from a callback, a poll or a person and moves the task
  forward only, recording the input as an event (identical inputs once);
- `resend` and `poll_one` are the manual actions.

The order of states: queued < submitting < pending < processing < completed|failed.
`rejected` and `timed_out` are final for us, but upstream evidence (a callback or a
poll) may still finish a timed-out task, or revive a task whose create had an
unknown outcome.
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.orm import Session

from . import dialects, heartbeat, jsonsafe, metrics
from .db import Database
from .models import IN_FLIGHT_STATES, StateCount, Task, TaskEvent, utcnow
from .parse import CreateAnswer, Update, parse_create
from .redact import CALLBACK_TOKEN_BYTES, mask_token, redact
from .settings import Settings
from .upstream import (
    Answer,
    APIStatusError,
    LumaClient,
    RateLimitError,
    UpstreamError,
)

log = logging.getLogger(__name__)

RANK = {
    "queued": 0,
    "submitting": 1,
    "pending": 2,
    "processing": 3,
    "timed_out": 4,
    "completed": 5,
    "failed": 5,
    "rejected": 5,
}
MAX_PAYLOAD_CHARS = 256_000
# a lock number of our own for PostgreSQL's advisory lock around slot accounting
_SLOT_LOCK = 0x4C554D41
# retrying a create that was refused for rate or connection: the wait when no Retry-After is given
REQUEUE_DELAY = 10.0


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


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def scrub(task: Task, text: str, token: str | None = None) -> str:
    """`text` with every secret masked, this task's callback token included in any encoding.

    The token is known in memory while a create is sent (`token`); afterwards only its hash
    is, which `mask_token` uses.
    """
    return mask_token(redact(text, (token,) if token else ()), task.callback_token_hash)


def _payload_text(task: Task, payload: Any, token: str | None = None) -> str | None:
    """A payload as JSON text that always loads again (ASCII, no NaN), secrets masked.

    Text that was not JSON (a callback's garbage) is stored as a JSON string.
    """
    if payload is None:
        return None
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", "replace")
    # ASCII JSON holds no NUL (PostgreSQL text cannot) and no lone surrogate (no database can)
    text_value = scrub(task, jsonsafe.dumps(payload), token)
    if len(text_value) > MAX_PAYLOAD_CHARS:
        text_value = text_value[:MAX_PAYLOAD_CHARS] + "…[truncated]"
    return text_value


def set_state(session: Session, task: Task, new_state: str) -> None:
    """Change state and keep the per-state counters in the same transaction.

    The two counter rows are always updated in one order (by RANK, then name), whatever the
    direction of the move, so that two transactions never wait on each other's counters.
    """
    old = task.state
    if old == new_state:
        return
    deltas = {new_state: 1} if old is None else {old: -1, new_state: 1}
    for state in sorted(deltas, key=lambda name: (RANK[name], name)):
        session.execute(
            update(StateCount)
            .where(StateCount.state == state)
            .values(count=StateCount.count + deltas[state])
        )
    task.state = new_state
    task.updated_at = utcnow()


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
) -> TaskEvent | None:
    """Add an event; with dedupe, an identical payload from the same source is stored once."""
    body = _payload_text(task, payload, token)
    fingerprint = hashlib.sha256(f"{source}\n{body}".encode()).hexdigest() if body else None
    if dedupe and fingerprint and task.id is not None:
        seen = session.scalar(
            select(TaskEvent.id).where(
                TaskEvent.task_id == task.id, TaskEvent.fingerprint == fingerprint
            )
        )
        if seen is not None:
            return None
    event = TaskEvent(
        source=source,
        state_before=before,
        state_after=task.state,
        note=scrub(task, note, token) if note else None,
        payload=body,
        fingerprint=fingerprint,
        created_at=utcnow(),
    )
    task.events.append(event)
    return event


# -- create ---------------------------------------------------------------------------------


def create(db: Database, new: NewTask) -> Task:
    now = utcnow()
    with db.write() as session:
        task = Task(
            kind=new.kind,
            state=None,  # set_state counts it
            user_prompt=new.user_prompt,
            source_task_id=new.source_task_id,
            expand_prompt=new.expand_prompt,
            image_url=new.image_url,
            image_end_url=new.image_end_url,
            options=new.options or {},
            upstream=new.upstream or "proxy",
            created_at=now,
            updated_at=now,
            next_check_at=now,
            attempts=0,
            quiet_polls=0,
            archive_attempts=0,
        )
        set_state(session, task, "queued")
        session.add(task)
        record(session, task, "submit", before=None, note="accepted")
        session.flush()
    return task


# -- dispatch -------------------------------------------------------------------------------


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


def slots_free(session: Session, settings: Settings, now: datetime) -> int:
    """Free create slots against this dialect's upstream (the other one's tasks do not count)."""
    in_flight = session.scalar(
        select(func.coalesce(func.sum(StateCount.count), 0)).where(
            StateCount.state.in_(IN_FLIGHT_STATES)
        )
    )
    elsewhere = session.scalar(
        select(func.count())
        .select_from(Task)
        .where(Task.upstream.in_(_others(settings)), Task.state.in_(IN_FLIGHT_STATES))
    )
    in_flight -= elsewhere or 0
    recent = session.scalar(
        select(func.count())
        .select_from(Task)
        .where(
            Task.submitted_at >= now - timedelta(seconds=60),
            Task.upstream == settings.luma_api_flavor,
        )
    )
    return max(0, min(settings.max_in_flight - in_flight, settings.submits_per_minute - recent))


def _lock_slots(session: Session, db: Database) -> None:
    """Serialize slot accounting across processes (SQLite's BEGIN IMMEDIATE already does)."""
    if db.is_postgres:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SLOT_LOCK})


def claim_for_dispatch(
    db: Database,
    settings: Settings,
    task_id: int | None = None,
    limit: int = 1,
    *,
    owner: str | None = None,
) -> list[tuple[int, str]]:
    """Move up to `limit` queued tasks (oldest first, or the one given) to `submitting`.

    Returns (task id, callback token) pairs. The token exists only in memory and in the
    URL sent upstream; the database keeps its hash. `owner` is the claiming worker's
    heartbeat id: should it die mid-send, the task is found sooner (still never resent).
    """
    now = utcnow()
    claimed: list[tuple[int, str]] = []
    with db.write() as session:
        _lock_slots(session, db)
        free = min(limit, slots_free(session, settings, now))
        if free <= 0:
            return []
        query = select(Task).where(
            Task.state == "queued",
            Task.next_check_at <= now,
            Task.upstream == settings.luma_api_flavor,
        )
        if task_id is not None:
            query = query.where(Task.id == task_id)
        # row locks too: a sweep (timeout) that got there first is not overwritten
        query = query.order_by(Task.id).limit(free).with_for_update(skip_locked=True)
        for task in session.scalars(query):
            token = secrets.token_urlsafe(CALLBACK_TOKEN_BYTES)
            set_state(session, task, "submitting")
            task.callback_token_hash = hash_token(token)
            task.attempts = (task.attempts or 0) + 1
            task.submitted_at = now
            task.claimed_until = now + timedelta(seconds=settings.lease_seconds)
            task.claimed_by = owner
            claimed.append((task.id, token))
    return claimed


def send(db: Database, settings: Settings, client: LumaClient, task_id: int, token: str) -> Task:
    """Send a task that `claim_for_dispatch` moved to `submitting`, and record the outcome."""
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        outgoing = client.dialect.create_request(task, settings.callback_url(token))
    answer = error = None
    try:
        answer = client.send(outgoing)
    except UpstreamError as exc:
        error = exc

    request_shown = _shorten_images(outgoing.body)
    now = utcnow()
    with db.write() as session:
        task = session.get(Task, task_id, with_for_update=True)
        assert task is not None
        before = task.state
        task.claimed_until = None
        created = parse_create(answer.body) if answer is not None else None
        if task.state != "submitting":
            _late_answer(session, settings, task, created, request_shown, answer, token)
            return task
        if answer is not None and created is not None and created.refused is not None:
            # a 200 whose body says it failed (upstream.md): nothing was created
            _refuse(
                session, task, created.refused, request_shown, answer.status, answer.body, token
            )
        elif answer is not None and created is not None and created.unknown:
            # neither a task id nor a failure: a task we cannot name may exist (the money guard)
            mark_outcome_unknown(
                session, task, "the answer named no task id", request_shown, answer.body, token
            )
        elif answer is not None and created is not None:
            upd = created.update
            task.upstream_id = upd.upstream_id
            set_state(session, task, "pending")
            take_progress(task, upd)
            task.last_news_at = now
            task.next_check_at = now + timedelta(seconds=settings.poll_after)
            record(
                session,
                task,
                "submit",
                before=before,
                token=token,
                payload={"request": request_shown, "status": answer.status, "answer": answer.body},
                note="sent",
            )
            if upd.understood and upd.state not in (None, "pending"):
                apply(session, settings, task, upd, "submit", payload=None)
        elif isinstance(error, RateLimitError) or (error is not None and not error.sent):
            # surely not acted on: back to the queue, to be tried again later
            wait = getattr(error, "retry_after", None) or REQUEUE_DELAY
            set_state(session, task, "queued")
            task.attempts -= 1  # it never reached the upstream: not an attempt
            task.callback_token_hash = None
            task.next_check_at = now + timedelta(seconds=wait)
            record(
                session,
                task,
                "submit",
                before=before,
                token=token,
                payload={"request": request_shown, "error": error.message},
                note=f"not accepted now ({error.message}); will try again in {wait:g} s",
            )
        elif isinstance(error, APIStatusError) and error.status < 500:
            _refuse(session, task, error.reason, request_shown, error.status, error.body, token)
        else:
            assert error is not None
            mark_outcome_unknown(session, task, redact(error.message, (token,)), request_shown)
    metrics.submit(task.state, outcome_unknown(task))
    return task


def _others(settings: Settings) -> tuple[str, ...]:
    return tuple(f for f in dialects.FLAVORS if f != settings.luma_api_flavor)


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
    set_state(session, task, "rejected")
    # the reason may echo our request (a validator's "input"): keep no token in it
    task.failure_reason = scrub(task, f"upstream refused: {reason}", token)
    task.callback_token_hash = None  # nothing was created: nothing may call back
    task.next_check_at = None
    clear_progress(task)
    record(
        session,
        task,
        "submit",
        before=before,
        token=token,
        payload={"request": request_shown, "status": status, "answer": body},
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
        set_state(session, task, "pending")  # accepted after all: follow it again
        task.failure_reason = None
        task.last_news_at = now
        task.next_check_at = now + timedelta(seconds=settings.poll_after)
        note = "sent; accepted after the task had been given up as unknown"
    elif created is not None and created.refused is not None and outcome_unknown(task):
        task.failure_reason = scrub(task, f"upstream refused: {created.refused}", token)
        task.callback_token_hash = None
        note = task.failure_reason
    elif created is not None and created.refused is not None:
        note = f"sent; the answer says refused ({created.refused}) but the task had news already"
    elif created is not None and created.unknown:
        note = "sent; the answer named no task id"
    shown: dict[str, Any] = {"request": request_shown}
    if answer is not None:
        shown["answer"] = answer.body
    record(session, task, "submit", before=before, payload=shown, note=note, token=token)
    if task.state in ("pending", "processing") and not task.upstream_id:
        # never in flight without an id: nothing could query it (a callback moved it, say)
        mark_outcome_unknown(session, task, "the upstream never named the task")


OUTCOME_UNKNOWN = "outcome unknown"


def outcome_unknown(task: Task) -> bool:
    """Rejected because a create may or may not have happened (not refused outright)."""
    return task.state == "rejected" and (task.failure_reason or "").startswith(OUTCOME_UNKNOWN)


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
    set_state(session, task, "rejected")
    task.claimed_until = None
    task.next_check_at = None
    task.failure_reason = scrub(
        task,
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
        "submit",
        before=before,
        payload=payload,
        note=task.failure_reason,
        token=token,
    )


def submit(db: Database, settings: Settings, client: LumaClient, new: NewTask) -> Task:
    """Store the task (committed first), then send it now if a slot is free."""
    if new.upstream is None:
        new = replace(new, upstream=settings.luma_api_flavor)
    task = create(db, new)
    dispatch(db, settings, client, task.id)
    return task


def dispatch(db: Database, settings: Settings, client: LumaClient, task_id: int) -> bool:
    """Send this queued task now if a slot is free; False leaves it queued for the worker."""
    claimed = claim_for_dispatch(db, settings, task_id=task_id)
    for claimed_id, token in claimed:
        send(db, settings, client, claimed_id, token)
    return bool(claimed)


# -- apply ----------------------------------------------------------------------------------


def poll_delay(settings: Settings, quiet_polls: int) -> float:
    """Exponential backoff with jitter, from TRACKER_POLL_AFTER up to TRACKER_POLL_MAX_INTERVAL."""
    base = max(settings.poll_after, 1.0) * (2 ** min(quiet_polls, 20))
    return min(settings.poll_max_interval, base) * random.uniform(0.8, 1.0)


def _target_state(task: Task, upd: Update) -> str | None:
    if upd.state == "completed":
        return "completed" if (upd.video_url or task.video_url) else "processing"
    return upd.state


def _may_move(task: Task, target: str, source: str) -> bool:
    current = task.state
    if current == "timed_out":
        return target in ("completed", "failed")
    if current == "rejected":
        # only the upstream's word revives a task whose create had an unknown outcome
        return (
            outcome_unknown(task)
            and source in ("callback", "poll")
            and target
            in (
                "pending",
                "processing",
                "completed",
                "failed",
            )
        )
    return RANK[target] > RANK[current]


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
    """Apply what an upstream body said. Returns True when the task's state changed.

    The caller holds the task's row (a write transaction); calling twice is harmless.
    """
    now = utcnow()
    before = task.state
    if (
        upd.upstream_id
        and task.upstream_id
        and upd.upstream_id != task.upstream_id
        and source in ("callback", "poll")
    ):
        record(
            session,
            task,
            source,
            before=before,
            payload=payload,
            note="names another task; ignored",
            dedupe=True,
        )
        return False
    if upd.upstream_id and not task.upstream_id:
        task.upstream_id = upd.upstream_id

    changed = False
    target = _target_state(task, upd) if upd.understood else None
    unnamed = target in ("pending", "processing") and not task.upstream_id
    if unnamed:
        # in flight with no id, nothing could ever query it: wait for an answer that names it
        note = note or f"{target} ignored: no upstream id names this task yet"
        target = None
    if target and target != before and _may_move(task, target, source):
        set_state(session, task, target)
        changed = True
        if target == "failed":
            reason = upd.failure_reason or "the upstream reported a failure"
            task.failure_reason = scrub(task, reason)
        elif target != "rejected" and before == "rejected":
            task.failure_reason = None
        if target == "completed":
            task.completed_at = now
            task.next_archive_at = now
    if upd.upstream_state and (changed or target == task.state):
        task.upstream_state = upd.upstream_state
    if changed and task.is_final:
        settle_progress(task)
    elif target is not None and target == task.state:
        take_progress(task, upd)
    # a fresh link is worth keeping even when the state did not move (links expire)
    if upd.video_url and task.state == "completed" and upd.video_url != task.video_url:
        task.video_url = upd.video_url
        if not changed:
            task.next_archive_at = task.next_archive_at or now
    if upd.thumbnail_url and upd.thumbnail_url != task.thumbnail_url:
        task.thumbnail_url = upd.thumbnail_url
    task.updated_at = now

    if source in ("callback", "poll"):
        task.last_news_at = now
        if task.is_final:
            task.next_check_at = None
            task.quiet_polls = 0
        elif source == "callback":
            # callbacks work for this task: the next one (completed) will come on its own, so a
            # query is only a safety net, after TRACKER_POLL_MAX_INTERVAL of silence. Luma calls
            # at "dreaming" and at the end, and a generation runs minutes in between.
            task.quiet_polls = 0
            wait = 0.0 if upd.needs_query else settings.poll_max_interval
            task.next_check_at = now + timedelta(seconds=wait)
        else:
            task.quiet_polls = 0 if changed else (task.quiet_polls or 0) + 1
            task.next_check_at = now + timedelta(seconds=poll_delay(settings, task.quiet_polls))

    if note is None:
        if not upd.understood:
            note = "not understood; the task will be queried"
        elif upd.state == "completed" and not upd.video_url and not task.video_url:
            note = "completed without a video URL; the task will be queried"
        elif not changed and target and target != before:
            note = f"{target} ignored: the task is already {before}"
    record(session, task, source, before=before, payload=payload, note=note, dedupe=True)
    return changed


def take_progress(task: Task, upd: Update) -> None:
    """Keep how far along the upstream says the task is; it never goes back while it runs.

    The caller passes only an update that speaks for the task's current state. A late or
    reordered answer with a smaller figure is ignored; the wait estimate is the upstream's
    latest word on the current state (gone when the upstream no longer gives one).
    """
    if task.is_final:
        return
    if upd.progress is not None:
        task.progress = max(task.progress or 0, upd.progress)
    task.estimate_wait_seconds = upd.estimate_wait_seconds


def settle_progress(task: Task) -> None:
    """A final state: a completed task is at 100 %; any other has no progress to show."""
    task.progress = 100 if task.state == "completed" else None
    task.estimate_wait_seconds = None


def clear_progress(task: Task) -> None:
    """Refused, unknown, resent: nothing runs upstream that we can follow."""
    task.progress = None
    task.estimate_wait_seconds = None


# -- the manual actions ---------------------------------------------------------------------


def resend(db: Database, settings: Settings, client: LumaClient, task_id: int) -> Task:
    """A rejected task goes back to the queue as a new attempt, sent at once if a slot is free."""
    with db.write() as session:
        task = session.get(Task, task_id, with_for_update=True)
        if task is None:
            raise LookupError(task_id)
        if task.state != "rejected":
            raise InvalidAction(f"only a rejected task can be resent; this one is {task.state}")
        if task.upstream != settings.luma_api_flavor:
            # it is sent again with today's dialect: only if that API can take it
            problem = dialects.get(settings.luma_api_flavor).unsupported(task)
            if problem is not None:
                raise InvalidAction(
                    f"cannot resend with LUMA_API_FLAVOR={settings.luma_api_flavor}: {problem[1]}"
                )
            task.upstream = settings.luma_api_flavor
        before = task.state
        set_state(session, task, "queued")
        task.failure_reason = None
        task.upstream_id = None
        task.upstream_state = None
        task.callback_token_hash = None
        clear_progress(task)
        task.next_check_at = task.submitted_at = utcnow()  # a new attempt: a new clock
        record(session, task, "user", before=before, note=f"resent as attempt {task.attempts + 1}")
    dispatch(db, settings, client, task_id)
    return task


def poll_one(db: Database, settings: Settings, client: LumaClient, task_id: int) -> Task:
    """Query one task now and apply the answer (manual action and the worker's unit of work)."""
    with db.read() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise LookupError(task_id)
        upstream_id, upstream = task.upstream_id, task.upstream
    if not upstream_id:
        raise InvalidAction("this task has no upstream id yet, so there is nothing to query")
    if upstream != client.dialect.name:
        raise InvalidAction(
            f"this task was sent with the {upstream} API, and LUMA_API_FLAVOR is "
            f"{client.dialect.name}: it can only be queried with LUMA_API_FLAVOR={upstream}"
        )
    try:
        answer = client.query(upstream_id)
    except UpstreamError as exc:
        note_poll_failure(db, settings, task_id, exc)
        raise
    with db.write() as session:
        task = session.get(Task, task_id, with_for_update=True)
        assert task is not None
        task.claimed_until = None
        apply(session, settings, task, answer.update, "poll", payload=answer.body)
    return task


def note_poll_failure(db: Database, settings: Settings, task_id: int, exc: UpstreamError) -> None:
    """A failed query backs the task off (honouring Retry-After) and is never fatal."""
    now = utcnow()
    with db.write() as session:
        task = session.get(Task, task_id, with_for_update=True)
        if task is None:
            return
        task.claimed_until = None
        if task.is_final and task.state != "timed_out":
            return
        task.quiet_polls = (task.quiet_polls or 0) + 1
        wait = poll_delay(settings, task.quiet_polls)
        if isinstance(exc, RateLimitError) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        task.next_check_at = now + timedelta(seconds=wait)
        record(
            session,
            task,
            "poll",
            before=task.state,
            note=f"query failed: {exc.message}; next try in {wait:.0f} s",
        )


# -- the worker's sweeps --------------------------------------------------------------------


def time_out_overdue(db: Database, settings: Settings, limit: int = 500) -> int:
    """Tasks with no final state TRACKER_TASK_TIMEOUT seconds after creation become timed_out.

    A later callback or a manual poll can still complete them (see `_may_move`).
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.task_timeout)
    with db.write() as session:
        tasks = session.scalars(
            select(Task)
            .where(
                Task.state.in_(("queued", "pending", "processing")),
                # another dialect's tasks wait for a worker that can ask about them
                Task.upstream == settings.luma_api_flavor,
                # the clock starts with the current attempt (a resend starts a new one)
                func.coalesce(Task.submitted_at, Task.created_at) < cutoff,
            )
            .order_by(Task.id)
            .limit(limit)
            # rows another transaction holds wait for the next pass: never a lock cycle
            .with_for_update(skip_locked=True)
        ).all()
        for task in tasks:
            before = task.state
            set_state(session, task, "timed_out")
            settle_progress(task)
            task.next_check_at = None
            task.claimed_until = None
            task.failure_reason = f"no final state after {settings.task_timeout:g} s" + (
                " (never sent: no free slot)" if before == "queued" else ""
            )
            record(session, task, "system", before=before, note=task.failure_reason)
    return len(tasks)


def recover_interrupted_submissions(db: Database, limit: int = 500) -> int:
    """A task left in `submitting` by a crash mid-send: its outcome is unknown.

    Found when its lease has passed, or sooner when its sender's heartbeat went stale. Either
    way it is never resent on our own: the create may have happened (and been paid for). An
    answer that still arrives (a sender only thought dead) revives it, as `send` says.
    """
    now = utcnow()
    gone = or_(Task.claimed_until < now, heartbeat.held_by_dead(Task.claimed_by, now))
    with db.write() as session:
        tasks = session.scalars(
            select(Task)
            .where(Task.state == "submitting", gone)
            .order_by(Task.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for task in tasks:
            mark_outcome_unknown(session, task, "the process sending it stopped mid-request")
    return len(tasks)
