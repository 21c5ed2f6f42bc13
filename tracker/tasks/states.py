"""The one list of a task's states, their order, and the moves between them.

Every other module reads these: the models, the state machine (`machine`), lifecycle,
the API's filter, the dashboard's tabs and the OpenAPI document. Migrations keep their own
literal copy (a migration never imports application code); tests/test_states.py holds
migration 0001's seed list against `TaskState`.

The order: queued < submitting < pending < processing < completed|failed. `rejected` and
`timed_out` are final for us, but upstream evidence (a callback or a poll) may still finish
a timed-out task, or revive a task whose create had an unknown outcome.
"""

from __future__ import annotations

from enum import StrEnum


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
POLLED_STATES = (S.PENDING, S.PROCESSING)
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


def is_final(state: str | None) -> bool:
    return state in FINAL_STATES


def may_move(old: TaskState | None, new: TaskState) -> bool:
    """Whether `old -> new` is a move the service ever makes (None: a new task)."""
    if old is None:
        return new in (S.QUEUED, S.PENDING)  # created, or imported
    return new in MOVES[old]


def order_key(state: str) -> tuple[int, str]:
    """The one order state counters are locked in (by rank, then name): never a lock cycle."""
    return RANK[TaskState(state)], state
