"""The one list of a task's states, their order, and the moves between them; and the values
the machine reads and returns (`Update`, `TaskFields`, `Change`).

Every other module reads these: the models, the state machine (`machine`, which refuses any
move not in `MOVES`), the store,
the API's filter, the dashboard's tabs and the OpenAPI document. Migrations keep their own
literal copy (a migration never imports application code); tests/test_states.py holds
migration 0001's seed list against `TaskState`.

The order: queued < submitting < pending < processing < completed|failed. `rejected` and
`timed_out` are final for us, but upstream evidence (a callback or a poll) may still finish
a timed-out task, or revive a task whose create had an unknown outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any, ClassVar, Literal


class TaskState(StrEnum):
    """A task's state; a str, so it compares equal to (and is stored as) its name."""

    QUEUED = "queued"
    SUBMITTING = "submitting"
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"


class Source(StrEnum):
    """Where an input came from: each event names one."""

    SUBMIT = "submit"
    CALLBACK = "callback"
    POLL = "poll"
    USER = "user"
    SYSTEM = "system"


S = TaskState

# every state, in the order the dashboard's tabs and the API's enum show them
STATES: tuple[TaskState, ...] = tuple(TaskState)
FINAL_STATES = frozenset({S.COMPLETED, S.FAILED, S.REJECTED, S.TIMED_OUT})
# holding one of the upstream's slots (TRACKER_MAX_IN_FLIGHT)
IN_FLIGHT_STATES = (S.SUBMITTING, S.PENDING, S.PROCESSING)
# followed by queries when the callbacks go quiet
QUERIED_STATES = (S.PENDING, S.PROCESSING)
# given up by the timeout sweep when they outlive TRACKER_TASK_TIMEOUT
TIMEABLE_STATES = (S.QUEUED, S.PENDING, S.PROCESSING)
EVENT_SOURCES: tuple[Source, ...] = tuple(Source)
# the upstream's own word (rather than ours or a person's)
UPSTREAM_SOURCES = frozenset({Source.CALLBACK, Source.POLL})

RANK: dict[TaskState, int] = {
    S.QUEUED: 0,
    S.SUBMITTING: 1,
    S.PENDING: 2,
    S.PROCESSING: 3,
    S.TIMED_OUT: 4,
    S.COMPLETED: 5,
    S.FAILED: 5,
    S.REJECTED: 5,
}

# what the upstream's word may move a task to (forward only)
_UPSTREAM_TARGETS = (S.PENDING, S.PROCESSING, S.COMPLETED, S.FAILED)

# Every move the service makes, by whom. The upstream's word (callback, poll, the create's
# answer) moves forward only; the service's own moves (claim, requeue, refuse, time out,
# outcome unknown) and a person's resend are listed one by one.
MOVES: dict[TaskState, frozenset[TaskState]] = {
    # claimed for sending; timed out; the upstream's word (by rank: a queued task has no
    # callback URL and is never queried, so only a stray answer could)
    S.QUEUED: frozenset({S.SUBMITTING, S.TIMED_OUT, *_UPSTREAM_TARGETS}),
    # the create's answer: accepted (and beyond), refused, not now (queued), unknown (rejected)
    S.SUBMITTING: frozenset({S.QUEUED, S.REJECTED, *_UPSTREAM_TARGETS}),
    S.PENDING: frozenset({S.PROCESSING, S.COMPLETED, S.FAILED, S.TIMED_OUT, S.REJECTED}),
    S.PROCESSING: frozenset({S.COMPLETED, S.FAILED, S.TIMED_OUT, S.REJECTED}),
    # a late callback or poll can still finish a timed-out task
    S.TIMED_OUT: frozenset({S.COMPLETED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    # resent by a person; revived by the upstream's word when the create's outcome was unknown
    S.REJECTED: frozenset({S.QUEUED, *_UPSTREAM_TARGETS}),
}


# -- what the machine reads and says ------------------------------------------------------


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


NOT_UNDERSTOOD = Update()


class Next(Enum):
    """When the task should next be queried, as the input leaves it."""

    KEEP = "keep"  # not the upstream's word: the schedule stays as it is
    NEVER = "never"  # final: no more queries
    NOW = "now"  # a callback that needs checking (not understood, no video URL)
    SAFETY_NET = "safety_net"  # callbacks work for this task: a query only after long silence
    BACKOFF = "backoff"  # a poll: exponential backoff by the quiet polls in a row
    FIRST = "first"  # just accepted (or imported): a query if no news after TRACKER_POLL_AFTER


@dataclass(frozen=True)
class TaskFields:
    """The fields of a task that deciding needs (a row of `tasks`, or a Task)."""

    state: TaskState
    upstream_id: str | None = None
    kind: str = "generate"
    video_url: str | None = None
    thumbnail_url: str | None = None
    outcome_unknown: bool = False
    progress: int | None = None
    quiet_polls: int = 0
    next_archive_at: datetime | None = None
    attempts: int = 0


@dataclass(frozen=True)
class Change:
    """What one input does: a new state (None: it stays), columns to set, the event's note."""

    state: TaskState | None
    fields: dict[str, Any] = field(default_factory=dict)
    next: Next = Next.KEEP
    note: str | None = None
    # the input names another task: only its event is recorded (the task is not touched)
    ignored: bool = False


class InvalidAction(Exception):
    """An act that does not fit the task's state (a resend of a completed task, say)."""


@dataclass(frozen=True)
class Word:
    """The upstream's word on a task: a callback, a query's answer, an import's."""

    update: Update
    source: Source


@dataclass(frozen=True)
class Claim:
    """Taken for sending: the new callback token's hash (None: no callback URL is sent, so
    nothing can call back), and the sender's lease."""

    SOURCE: ClassVar[Source] = Source.SUBMIT  # its event's source

    token_hash: str | None
    claimed_until: datetime
    claimed_by: str | None


@dataclass(frozen=True)
class Answered:
    """What became of a create, as the upstream's parser read its answer (or its error).

    accepted: a task id (and perhaps more in `update`); refused: nothing was created
    (`reason`, the upstream's words); no_id: a 2xx naming no task; unknown: no answer that
    settles it (a timeout, a 5xx); not_sent: surely not acted on (a 429, no connection),
    tried again after `wait` seconds.
    """

    SOURCE: ClassVar[Source] = Source.SUBMIT  # its event's source

    outcome: Literal["accepted", "refused", "no_id", "unknown", "not_sent"]
    update: Update = NOT_UNDERSTOOD
    reason: str = ""
    wait: float = 0.0
    from_answer: bool = True  # an answer's body said it (not an error in its place)


@dataclass(frozen=True)
class GiveUp:
    """A create that may or may not have happened (its sender died, say): never resent."""

    SOURCE: ClassVar[Source] = Source.SUBMIT  # its event's source

    why: str


@dataclass(frozen=True)
class TimeOut:
    """No final state TRACKER_TASK_TIMEOUT seconds after the attempt began."""

    SOURCE: ClassVar[Source] = Source.SYSTEM  # its event's source

    seconds: float


@dataclass(frozen=True)
class Resend:
    """A person sends a rejected task again, with the dialect in force now."""

    SOURCE: ClassVar[Source] = Source.USER  # its event's source

    dialect: str


@dataclass(frozen=True)
class QueryFailed:
    """A query failed: backed off (`wait`, the Retry-After if later) and never fatal."""

    SOURCE: ClassVar[Source] = Source.POLL  # its event's source

    message: str
    wait: float
    next_check_at: datetime


Input = Word | Claim | Answered | GiveUp | TimeOut | Resend | QueryFailed


def is_final(state: str | None) -> bool:
    return state in FINAL_STATES
