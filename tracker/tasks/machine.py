"""The state machine: what one input does to one task, decided without a session or HTTP.

`decide(task, given, now)` is the one place a move is chosen, from a snapshot of the task
(`TaskFields`) and either the upstream's word (`Word`: a callback, a query's answer, an
import) or one of the service's own acts (`Claim`, `Answered`, `GiveUp`, `TimeOut`,
`Resend`, `QueryFailed`). Its `Change` says the new state (or none), the columns to set,
when to query next (`Next`) and the event's note; every move is one of `states.MOVES`, and
an act that does not fit the state raises `InvalidAction`. `tasks.store` writes it.

The upstream's word moves a task forward only: news of another upstream task changes
nothing; "completed" without its result's URL (none stored) is "processing", queried;
pending/processing with no upstream id is ignored (nothing could query it); a timed-out task
can still complete or fail; a rejected one is revived only by the upstream's word, and only
when its create's outcome was unknown; a fresh video link is kept (links expire).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tracker.tasks import states as st
from tracker.tasks.states import MOVES, Change, Next, TaskFields, TaskState, Update

S = TaskState

NOT_UNDERSTOOD_NOTE = "not understood; the task will be queried"
NO_VIDEO_NOTE = "completed without a video URL; the task will be queried"
OTHER_TASK_NOTE = "names another task; ignored"
UPSTREAM_FAILED = "the upstream reported a failure"
OUTCOME_UNKNOWN = "outcome unknown"
_UNSCHEDULED = {"claimed_until": None, "next_check_at": None}
_NO_PROGRESS = {"progress": None, "estimate_wait_seconds": None}


def snapshot(row: Any) -> TaskFields:
    """The fields deciding needs, from anything that has them: a Task, or a Core row."""
    return TaskFields(
        state=TaskState(row.state),
        upstream_id=row.upstream_id,
        kind=row.kind,
        video_url=row.video_url,
        thumbnail_url=row.thumbnail_url,
        outcome_unknown=bool(row.outcome_unknown),
        progress=row.progress,
        quiet_polls=row.quiet_polls or 0,
        next_archive_at=row.next_archive_at,
        attempts=row.attempts or 0,
    )


def needs_query(upd: Update, kind: str = "generate") -> bool:
    """Completed without its result's URL, or not understood: ask the upstream now."""
    return not upd.understood or (upd.state == S.COMPLETED and not result(kind, upd))


def result(kind: str, has: Update | TaskFields) -> str | None:
    """The URL of what a task makes: an image's is the Generation's `assets.image` (which
    the parser reads as the thumbnail), any other kind's its video."""
    return has.thumbnail_url if kind == "image" else has.video_url


def decide(task: TaskFields, given: st.Input, now: datetime) -> Change:
    """The change `given` makes to `task` (pure: same inputs, same Change)."""
    match given:
        case st.Word(update, source):
            change = _word(task, update, st.Source(source), now)
        case st.Answered():
            change = _answered(task, given, now)
        case _:
            change = _act(task, given, now)
    if change.state is not None and change.state not in MOVES[task.state]:
        raise st.InvalidAction(f"a {task.state} task cannot become {change.state}")
    return change


def _act(task: TaskFields, given: st.Input, now: datetime) -> Change:
    match given:
        case st.Claim():
            if task.state is not S.QUEUED:
                raise st.InvalidAction(f"only a queued task can be sent; this one is {task.state}")
            fields = {"attempts": task.attempts + 1, "submitted_at": now}
            fields |= {
                "callback_token_hash": given.token_hash,
                "claimed_until": given.claimed_until,
            }
            return Change(S.SUBMITTING, fields | {"claimed_by": given.claimed_by})
        case st.GiveUp(why):
            return unknown(why)
        case st.TimeOut(seconds):
            never_sent = " (never sent: no free slot)" if task.state is S.QUEUED else ""
            reason = f"no final state after {seconds:g} s{never_sent}"
            fields = {**_NO_PROGRESS, **_UNSCHEDULED, "failure_reason": reason}
            return Change(S.TIMED_OUT, fields, note=reason)
        case st.Resend(dialect):
            if task.state is not S.REJECTED:
                raise st.InvalidAction(
                    f"only a rejected task can be resent; this one is {task.state}"
                )
            fields = {
                **_NO_PROGRESS,
                "upstream": dialect,
                "failure_reason": None,
                "upstream_id": None,
                "upstream_state": None,
                "callback_token_hash": None,
                "outcome_unknown": False,
                "next_check_at": now,  # due for sending at once
                "submitted_at": now,  # a new attempt: a new clock
            }
            return Change(S.QUEUED, fields, note=f"resent as attempt {task.attempts + 1}")
        case st.QueryFailed(message, wait, next_check_at):
            if task.state in st.FINAL_STATES and task.state is not S.TIMED_OUT:
                return Change(None, {"claimed_until": None})  # the lease back, nothing else
            fields = {"claimed_until": None, "quiet_polls": task.quiet_polls + 1}
            fields["next_check_at"] = next_check_at
            return Change(None, fields, note=f"query failed: {message}; next try in {wait:.0f} s")
    raise TypeError(f"not an input: {given!r}")


def unknown(why: str) -> Change:
    """Rejected as "outcome unknown": the create may have happened (and been charged for)."""
    reason = (
        f"{OUTCOME_UNKNOWN}: {why}. The upstream may have created (and charged for) this task; "
        "resend it only if it does not show up."
    )
    fields = {**_UNSCHEDULED, **_NO_PROGRESS, "outcome_unknown": True, "failure_reason": reason}
    return Change(S.REJECTED, fields, note=reason)


def _refused(reason: str) -> dict[str, Any]:
    """Nothing was created: nothing may call back, nothing is followed."""
    return {
        **_NO_PROGRESS,
        "failure_reason": f"upstream refused: {reason}",
        "outcome_unknown": False,
        "callback_token_hash": None,
        "next_check_at": None,
    }


def _answered(task: TaskFields, given: st.Answered, now: datetime) -> Change:
    """A create's outcome; one that comes after the task left `submitting` is `_late`."""
    released = {"claimed_until": None}
    if task.state is not S.SUBMITTING:
        return _late(task, given, now)
    match given.outcome:
        case "accepted":
            upd = given.update
            fields: dict[str, Any] = {**released, "upstream_id": upd.upstream_id}
            if upd.progress is not None:
                fields["progress"] = max(task.progress or 0, upd.progress)
            fields["estimate_wait_seconds"] = upd.estimate_wait_seconds
            fields["last_news_at"] = now
            return Change(S.PENDING, fields, Next.FIRST, note="sent")
        case "refused":
            fields = {**released, **_refused(given.reason)}
            return Change(S.REJECTED, fields, note=fields["failure_reason"])
        case "no_id":
            return unknown("the answer named no task id")
        case "unknown":
            return unknown(given.reason)
    wait = given.wait
    fields = {
        **released,
        "attempts": task.attempts - 1,  # it never reached the upstream: not an attempt
        "callback_token_hash": None,
        "next_check_at": now + timedelta(seconds=wait),
    }
    note = f"not accepted now ({given.reason}); will try again in {wait:g} s"
    return Change(S.QUEUED, fields, note=note)


def _late(task: TaskFields, given: st.Answered, now: datetime) -> Change:
    """The answer came after the task left `submitting`.

    A callback beat the answer (its news stands, the answer adds the id), or the send
    outlived its lease and the task was given up as "outcome unknown": an answer naming the
    task revives it; one saying it was refused settles it; one naming nothing changes nothing.
    """
    fields: dict[str, Any] = {"claimed_until": None}
    if not given.from_answer:  # an error in place of the answer settles nothing now
        return Change(None, fields, note="sent")
    accepted = given.outcome == "accepted"
    gave_up = task.state is S.REJECTED and task.outcome_unknown
    state, next_, note = None, Next.KEEP, "sent"
    upstream_id = task.upstream_id
    if accepted and not upstream_id:
        fields["upstream_id"] = upstream_id = given.update.upstream_id
    if accepted and gave_up:
        fields.update(failure_reason=None, outcome_unknown=False, last_news_at=now)
        state, next_ = S.PENDING, Next.FIRST
        note = "sent; accepted after the task had been given up as unknown"
    elif given.outcome == "refused" and gave_up:
        fields.update(_refused(given.reason))
        del fields["next_check_at"], fields["progress"], fields["estimate_wait_seconds"]
        note = fields["failure_reason"]
    elif given.outcome == "refused":
        note = f"sent; the answer says refused ({given.reason}) but the task had news already"
    elif given.outcome == "no_id":
        note = "sent; the answer named no task id"
    return Change(state, fields, next_, note)


def target_state(task: TaskFields, upd: Update) -> TaskState | None:
    """The state an understood update speaks for; completed needs its result's URL somewhere."""
    if upd.state is None:
        return None
    wanted = TaskState(upd.state)
    if wanted is S.COMPLETED and not (result(task.kind, upd) or result(task.kind, task)):
        return S.PROCESSING
    return wanted


def may_move(task: TaskFields, target: TaskState, source: st.Source) -> bool:
    """A move in `MOVES`, forward; a rejected task only when its outcome was unknown and the
    upstream itself (a callback or a query) says it exists."""
    if target not in MOVES[task.state]:
        return False
    if task.state is S.REJECTED:
        return task.outcome_unknown and source in st.UPSTREAM_SOURCES
    return True


def _word(task: TaskFields, upd: Update, source: st.Source, now: datetime) -> Change:
    """The change the upstream's word `upd`, from `source`, makes to `task`."""
    before = task.state
    if (
        upd.upstream_id
        and task.upstream_id
        and upd.upstream_id != task.upstream_id
        and source in st.UPSTREAM_SOURCES
    ):
        return Change(None, note=OTHER_TASK_NOTE, ignored=True)

    fields: dict[str, Any] = {}
    upstream_id = task.upstream_id
    if upd.upstream_id and not upstream_id:
        fields["upstream_id"] = upstream_id = upd.upstream_id

    note: str | None = None
    target = target_state(task, upd) if upd.understood else None
    if target in (S.PENDING, S.PROCESSING) and not upstream_id:
        # in flight with no id, nothing could ever query it: wait for an answer that names it
        note = f"{target} ignored: no upstream id names this task yet"
        target = None
    changed = bool(target and target != before and may_move(task, target, source))
    after = target if changed and target else before
    if changed:
        if before is S.REJECTED:  # revived: the create happened after all
            fields["failure_reason"] = None
            fields["outcome_unknown"] = False
        if target is S.FAILED:
            fields["failure_reason"] = upd.failure_reason or UPSTREAM_FAILED
        if target is S.COMPLETED:
            fields["completed_at"] = fields["next_archive_at"] = now
    if upd.upstream_state and (changed or target == before):
        fields["upstream_state"] = upd.upstream_state
    if changed and after in st.FINAL_STATES:
        # a completed task is at 100 %; any other final one has no progress to show
        fields["progress"] = 100 if after is S.COMPLETED else None
        fields["estimate_wait_seconds"] = None
    elif target is not None and target == after and after not in st.FINAL_STATES:
        # only news for the current state; a smaller figure (reordered answers) is ignored
        if upd.progress is not None:
            fields["progress"] = max(task.progress or 0, upd.progress)
        fields["estimate_wait_seconds"] = upd.estimate_wait_seconds
    if upd.video_url and after is S.COMPLETED and upd.video_url != task.video_url:
        fields["video_url"] = upd.video_url
        if not changed:
            fields["next_archive_at"] = task.next_archive_at or now
    if upd.thumbnail_url and upd.thumbnail_url != task.thumbnail_url:
        fields["thumbnail_url"] = upd.thumbnail_url
    fields["updated_at"] = now

    next_ = Next.KEEP
    if source is st.Source.POLL:
        fields["claimed_until"] = None  # the query's lease is given back with its answer
    if source in st.UPSTREAM_SOURCES:
        fields["last_news_at"] = now
        if after in st.FINAL_STATES:
            next_, fields["quiet_polls"] = Next.NEVER, 0
        elif source is st.Source.CALLBACK:
            # callbacks work for this task: the next one (completed) will come on its own, so
            # a query is only a safety net. Luma calls at "dreaming" and at the end.
            fields["quiet_polls"] = 0
            next_ = Next.NOW if needs_query(upd, task.kind) else Next.SAFETY_NET
        else:
            fields["quiet_polls"] = 0 if changed else task.quiet_polls + 1
            next_ = Next.BACKOFF

    if note is None:
        if not upd.understood:
            note = NOT_UNDERSTOOD_NOTE
        elif upd.state == S.COMPLETED and not (result(task.kind, upd) or result(task.kind, task)):
            note = NO_VIDEO_NOTE
        elif not changed and target and target != before:
            note = f"{target} ignored: the task is already {before}"
    return Change(after if changed else None, fields, next_, note)
