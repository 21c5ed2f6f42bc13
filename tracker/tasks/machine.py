"""The state machine: what one input does to one task, decided without a session or HTTP.

`decide(task, update, source, now)` takes a snapshot of the task's fields (`TaskFields`),
what an upstream body said (`parse.Update`) and where it came from, and returns a `Change`:
the new state (or none), the columns to set, when to query next (`Next`, which the
scheduler turns into a time: backoff and jitter are its business) and the note for the
event. `lifecycle.apply` writes it in one transaction. tests/test_machine.py runs every
state x every kind of update x every source through it.

The rules (upstream evidence moves a task forward only):
- an input naming another upstream task than ours is recorded and changes nothing;
- "completed" without a video URL (none stored either) is "processing": the task is queried;
- pending/processing with no upstream id known is ignored (nothing could query such a task);
- a timed-out task can still complete or fail; a rejected one is revived only by the
  upstream's word (callback or poll) and only when its create's outcome was unknown;
- a fresh video link is kept even when the state does not move (links expire).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from tracker.tasks.states import RANK, UPSTREAM_SOURCES, Source, TaskState, is_final

S = TaskState

NOT_UNDERSTOOD_NOTE = "not understood; the task will be queried"
NO_VIDEO_NOTE = "completed without a video URL; the task will be queried"
OTHER_TASK_NOTE = "names another task; ignored"
UPSTREAM_FAILED = "the upstream reported a failure"


@dataclass(frozen=True)
class Update:
    """What one upstream body says about one task: the machine's input, made by
    `upstream.parse` (which alone looks inside upstream JSON)."""

    state: str | None = None  # pending | processing | completed | failed | None (unknown)
    upstream_state: str | None = None  # the upstream's own word, for display
    upstream_id: str | None = None
    video_url: str | None = None
    thumbnail_url: str | None = None
    failure_reason: str | None = None  # only with state "failed"
    understood: bool = False
    progress: int | None = None  # 0-100, where the upstream says
    estimate_wait_seconds: int | None = None  # the upstream's own guess, where it gives one
    model: str | None = None  # `model`, the older `version`, or `model_name`
    prompt: str | None = None  # `prompt`, or Luma's `request.prompt`

    @property
    def needs_query(self) -> bool:
        """Completed without a video URL, or not understood: ask the upstream now."""
        return not self.understood or (self.state == "completed" and not self.video_url)


NOT_UNDERSTOOD = Update()


class Next(Enum):
    """When the task should next be queried, as the input leaves it."""

    KEEP = "keep"  # not the upstream's word: the schedule stays as it is
    NEVER = "never"  # final: no more queries
    NOW = "now"  # a callback that needs checking (not understood, no video URL)
    SAFETY_NET = "safety_net"  # callbacks work for this task: a query only after long silence
    BACKOFF = "backoff"  # a poll: exponential backoff by the quiet polls in a row


@dataclass(frozen=True)
class TaskFields:
    """The fields of a task that deciding needs (a row of `tasks`, or a Task)."""

    state: TaskState
    upstream_id: str | None = None
    video_url: str | None = None
    thumbnail_url: str | None = None
    outcome_unknown: bool = False
    progress: int | None = None
    quiet_polls: int = 0
    next_archive_at: datetime | None = None

    @classmethod
    def of(cls, row: Any) -> TaskFields:
        """From anything with these attributes: a Task, or a Core row."""
        return cls(
            state=TaskState(row.state),
            upstream_id=row.upstream_id,
            video_url=row.video_url,
            thumbnail_url=row.thumbnail_url,
            outcome_unknown=bool(row.outcome_unknown),
            progress=row.progress,
            quiet_polls=row.quiet_polls or 0,
            next_archive_at=row.next_archive_at,
        )


@dataclass(frozen=True)
class Change:
    """What one input does: a new state (None: it stays), columns to set, the event's note."""

    state: TaskState | None
    fields: dict[str, Any] = field(default_factory=dict)
    next: Next = Next.KEEP
    note: str | None = None
    # the input names another task: only its event is recorded (the task is not touched)
    ignored: bool = False

    @property
    def failure_reason(self) -> str | None:
        return self.fields.get("failure_reason")


def target_state(task: TaskFields, upd: Update) -> TaskState | None:
    """The state an understood update speaks for; completed needs a video URL somewhere."""
    if upd.state is None:
        return None
    wanted = TaskState(upd.state)
    if wanted is S.COMPLETED and not (upd.video_url or task.video_url):
        return S.PROCESSING
    return wanted


def may_move(task: TaskFields, target: TaskState, source: Source) -> bool:
    """Forward only; the two final-for-us states have their own rules (see the module)."""
    current = task.state
    if current is S.TIMED_OUT:
        return target in (S.COMPLETED, S.FAILED)
    if current is S.REJECTED:
        return (
            task.outcome_unknown
            and source in UPSTREAM_SOURCES
            and target in (S.PENDING, S.PROCESSING, S.COMPLETED, S.FAILED)
        )
    return RANK[target] > RANK[current]


def decide(task: TaskFields, upd: Update, source: Source, now: datetime) -> Change:
    """The change `upd` from `source` makes to `task` (pure: same inputs, same Change)."""
    source = Source(source)
    before = task.state
    if (
        upd.upstream_id
        and task.upstream_id
        and upd.upstream_id != task.upstream_id
        and source in UPSTREAM_SOURCES
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
    if changed and is_final(after):
        # a completed task is at 100 %; any other final one has no progress to show
        fields["progress"] = 100 if after is S.COMPLETED else None
        fields["estimate_wait_seconds"] = None
    elif target is not None and target == after and not is_final(after):
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
    if source in UPSTREAM_SOURCES:
        fields["last_news_at"] = now
        if is_final(after):
            next_, fields["quiet_polls"] = Next.NEVER, 0
        elif source is Source.CALLBACK:
            # callbacks work for this task: the next one (completed) will come on its own, so
            # a query is only a safety net. Luma calls at "dreaming" and at the end.
            fields["quiet_polls"] = 0
            next_ = Next.NOW if upd.needs_query else Next.SAFETY_NET
        else:
            fields["quiet_polls"] = 0 if changed else task.quiet_polls + 1
            next_ = Next.BACKOFF

    if note is None:
        if not upd.understood:
            note = NOT_UNDERSTOOD_NOTE
        elif upd.state == S.COMPLETED and not upd.video_url and not task.video_url:
            note = NO_VIDEO_NOTE
        elif not changed and target and target != before:
            note = f"{target} ignored: the task is already {before}"
    return Change(after if changed else None, fields, next_, note)
