"""The state machine, table-driven: every state x every kind of update x every source.

`machine.decide` is pure, so these run without a database or a server. The table says what
the upstream's word (a callback or a poll) does to a task in each state; the other sources
(submit, user, system) follow the same table except where the module's rules say otherwise
(only the upstream's word revives a task whose create had an unknown outcome, and only the
upstream's word is checked for naming another task).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from tracker.tasks.machine import decide, needs_query
from tracker.tasks.states import (
    MOVES,
    RANK,
    Answered,
    Claim,
    GiveUp,
    InvalidAction,
    Next,
    QueryFailed,
    Resend,
    Source,
    TaskFields,
    TaskState,
    TimeOut,
    Word,
)
from tracker.upstream.parse import Update

S = TaskState
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
OURS = "749d328e-0000-4000-8000-000000000001"
VIDEO = "https://cdn.example/v.mp4"

UPDATES = {
    "pending": Update(state="pending", upstream_id=OURS, understood=True),
    "processing": Update(state="processing", upstream_id=OURS, understood=True),
    "progress": Update(
        state="processing", upstream_id=OURS, understood=True, progress=40, estimate_wait_seconds=9
    ),
    "completed with video": Update(
        state="completed", upstream_id=OURS, understood=True, video_url=VIDEO
    ),
    "completed without video": Update(state="completed", upstream_id=OURS, understood=True),
    "failed": Update(state="failed", upstream_id=OURS, understood=True, failure_reason="nsfw"),
    "not understood": Update(),
    "unknown word": Update(upstream_state="hatching", upstream_id=OURS, understood=True),
    "other task": Update(
        state="completed", upstream_id="someone-else", understood=True, video_url=VIDEO
    ),
}

# a task in each state (rejected twice: refused outright, and with the create's outcome unknown)
TASKS = {
    "queued": TaskFields(S.QUEUED, upstream_id=OURS),
    "submitting": TaskFields(S.SUBMITTING, upstream_id=OURS),
    "pending": TaskFields(S.PENDING, upstream_id=OURS),
    "processing": TaskFields(S.PROCESSING, upstream_id=OURS, progress=60),
    "completed": TaskFields(S.COMPLETED, upstream_id=OURS, video_url=VIDEO),
    "failed": TaskFields(S.FAILED, upstream_id=OURS),
    "rejected": TaskFields(S.REJECTED, upstream_id=OURS),
    "rejected, outcome unknown": TaskFields(S.REJECTED, upstream_id=OURS, outcome_unknown=True),
    "timed_out": TaskFields(S.TIMED_OUT, upstream_id=OURS),
}

_ = None  # no state change
P, R, C, F = S.PENDING, S.PROCESSING, S.COMPLETED, S.FAILED
# what a callback or a poll moves each task to; columns: the UPDATES above, in order
UPSTREAM_TABLE: dict[str, tuple[TaskState | None, ...]] = {
    #                           pend proc prog comp+v comp-v fail  n/u  word other
    "queued":                   (P,   R,   R,   C,     R,     F,    _,   _,   _),
    "submitting":               (P,   R,   R,   C,     R,     F,    _,   _,   _),
    "pending":                  (_,   R,   R,   C,     R,     F,    _,   _,   _),
    "processing":               (_,   _,   _,   C,     _,     F,    _,   _,   _),
    "completed":                (_,   _,   _,   _,     _,     _,    _,   _,   _),
    "failed":                   (_,   _,   _,   _,     _,     _,    _,   _,   _),
    "rejected":                 (_,   _,   _,   _,     _,     _,    _,   _,   _),
    "rejected, outcome unknown": (P,   R,   R,   C,     R,     F,    _,   _,   _),
    "timed_out":                (_,   _,   _,   C,     _,     F,    _,   _,   _),
}  # fmt: skip


def expected(task_name: str, kind: str, source: Source) -> TaskState | None:
    if source in (Source.CALLBACK, Source.POLL):
        return UPSTREAM_TABLE[task_name][list(UPDATES).index(kind)]
    if task_name == "rejected, outcome unknown":
        return None  # only the upstream's word revives it
    if kind == "other task":  # only the upstream's word is held to our id
        kind = "completed with video"
    return UPSTREAM_TABLE[task_name][list(UPDATES).index(kind)]


CASES = [(task_name, kind, source) for task_name in TASKS for kind in UPDATES for source in Source]


@pytest.mark.parametrize(("task_name", "kind", "source"), CASES)
def test_every_state_every_update_every_source(task_name: str, kind: str, source: Source) -> None:
    task, upd = TASKS[task_name], UPDATES[kind]
    change = decide(task, Word(upd, source), NOW)
    assert change.state == expected(task_name, kind, source)
    assert decide(task, Word(upd, source), NOW) == change  # pure: the same inputs, the same change
    if change.state is not None:
        assert change.state in MOVES[task.state], "a move the states table allows"
        assert RANK[change.state] > RANK[task.state] or task.state is S.REJECTED
    upstream = source in (Source.CALLBACK, Source.POLL)
    if kind == "other task" and upstream:
        assert change.ignored and change.fields == {} and change.next is Next.KEEP
        assert change.note == "names another task; ignored"
        return
    assert not change.ignored
    assert change.fields["updated_at"] == NOW
    after = change.state or task.state
    # when the task is next queried
    if not upstream:
        assert change.next is Next.KEEP and "last_news_at" not in change.fields
    elif after in (S.COMPLETED, S.FAILED, S.REJECTED, S.TIMED_OUT):
        assert change.next is Next.NEVER and change.fields["quiet_polls"] == 0
    elif source is Source.CALLBACK:
        assert change.next is (Next.NOW if needs_query(upd) else Next.SAFETY_NET)
    else:
        assert change.next is Next.BACKOFF
        assert change.fields["quiet_polls"] == (0 if change.state else 1)
    # what the new state brings with it
    if change.state is S.COMPLETED:
        assert change.fields["completed_at"] == change.fields["next_archive_at"] == NOW
        assert change.fields["video_url"] == VIDEO and change.fields["progress"] == 100
    if change.state is S.FAILED:
        assert change.fields["failure_reason"] == "nsfw" and change.fields["progress"] is None
    if task.state is S.REJECTED and change.state is not None:
        assert change.fields["outcome_unknown"] is False
        if change.state is not S.FAILED:
            assert change.fields["failure_reason"] is None
    # the event's note says why nothing moved
    if kind == "not understood":
        assert change.note == "not understood; the task will be queried"
    elif kind == "completed without video" and not task.video_url:
        assert change.note == "completed without a video URL; the task will be queried"
    elif change.state is None and kind not in ("unknown word", "completed without video"):
        target = "processing" if kind == "progress" else kind.split()[0]
        if kind == "other task":
            target = "completed"
        if target != task.state:
            assert change.note == f"{target} ignored: the task is already {task.state}"


def test_progress_never_goes_back_while_the_task_runs() -> None:
    task = TASKS["processing"]  # at 60 %
    change = decide(task, Word(UPDATES["progress"], Source.CALLBACK), NOW)  # says 40 %
    assert change.fields["progress"] == 60 and change.fields["estimate_wait_seconds"] == 9
    ahead = replace(UPDATES["progress"], progress=75)
    assert decide(task, Word(ahead, Source.POLL), NOW).fields["progress"] == 75


def test_in_flight_without_an_upstream_id_is_ignored() -> None:
    """Nothing could ever query such a task: wait for an answer that names it."""
    task = TaskFields(S.SUBMITTING)
    change = decide(task, Word(Update(state="processing", understood=True), Source.CALLBACK), NOW)
    assert change.state is None
    assert change.note == "processing ignored: no upstream id names this task yet"
    named = decide(task, Word(UPDATES["processing"], Source.CALLBACK), NOW)
    assert named.state is S.PROCESSING and named.fields["upstream_id"] == OURS


def test_a_fresh_link_for_a_completed_task_is_kept_and_archived_again() -> None:
    task = replace(TASKS["completed"], next_archive_at=None)
    fresh = replace(UPDATES["completed with video"], video_url="https://cdn.example/new.mp4")
    change = decide(task, Word(fresh, Source.POLL), NOW)
    assert change.state is None
    assert change.fields["video_url"] == "https://cdn.example/new.mp4"
    assert change.fields["next_archive_at"] == NOW


def test_completed_without_a_video_url_completes_when_one_is_stored() -> None:
    task = replace(TASKS["processing"], video_url=VIDEO)
    change = decide(task, Word(UPDATES["completed without video"], Source.CALLBACK), NOW)
    assert change.state is S.COMPLETED


# -- the service's own acts ---------------------------------------------------------------------

LEASE = Claim("hash", NOW, "worker-1")
WAIT = QueryFailed("HTTP 503", 30.0, NOW)
ACCEPTED = Answered("accepted", Update(state="pending", upstream_id=OURS, understood=True))
# what each act does to a task in each state (X: refused as an invalid action); columns:
# claim, accepted, refused, no id, unknown, not sent, give up, time out, resend
ACTS = (
    LEASE,
    ACCEPTED,
    Answered("refused", reason="bad prompt"),
    Answered("no_id"),
    Answered("unknown", reason="timed out"),
    Answered("not_sent", reason="HTTP 429", wait=10.0, from_answer=False),
    GiveUp("the sender died"),
    TimeOut(600),
    Resend("luma"),
)
X = "invalid"
Q, B, J, T = S.QUEUED, S.SUBMITTING, S.REJECTED, S.TIMED_OUT
ACT_TABLE: dict[str, tuple[TaskState | str | None, ...]] = {
    "queued": (B, _, _, _, _, _, X, T, X),
    "submitting": (X, P, J, J, J, Q, J, X, X),
    "pending": (X, _, _, _, _, _, J, T, X),
    "processing": (X, _, _, _, _, _, J, T, X),
    "completed": (X, _, _, _, _, _, X, X, X),
    "failed": (X, _, _, _, _, _, X, X, X),
    "rejected": (X, _, _, _, _, _, X, X, Q),
    # accepted after all: followed again
    "rejected, outcome unknown": (X, P, _, _, _, _, X, X, Q),
    "timed_out": (X, _, _, _, _, _, X, X, X),
}


@pytest.mark.parametrize("name", list(TASKS))
@pytest.mark.parametrize("column", range(len(ACTS)))
def test_every_act_in_every_state(name: str, column: int) -> None:
    task, act = TASKS[name], ACTS[column]
    expected = ACT_TABLE[name][column]
    if expected == X:
        with pytest.raises(InvalidAction):
            decide(task, act, NOW)
        return
    change = decide(task, act, NOW)
    assert change.state == expected
    if change.state is not None:
        assert change.state in MOVES[task.state]  # the machine moves only as MOVES allows


def test_every_move_the_machine_makes_is_in_moves() -> None:
    """MOVES is the machine's: each listed move is made by some input, and none other is."""
    made: set[tuple[TaskState, TaskState]] = set()
    for task in TASKS.values():
        inputs = [*ACTS, WAIT, *(Word(upd, src) for upd in UPDATES.values() for src in Source)]
        for given in inputs:
            try:
                change = decide(task, given, NOW)
            except InvalidAction:
                continue
            if change.state is not None:
                made.add((task.state, change.state))
    listed = {(old, new) for old, targets in MOVES.items() for new in targets}
    assert made == listed


def test_a_failed_query_backs_off_and_gives_the_lease_back() -> None:
    change = decide(TASKS["processing"], WAIT, NOW)
    assert change.state is None and change.fields["claimed_until"] is None
    assert change.fields["quiet_polls"] == 1 and change.fields["next_check_at"] == NOW
    assert change.note == "query failed: HTTP 503; next try in 30 s"
    settled = decide(TASKS["completed"], WAIT, NOW)  # only the lease: no event, no schedule
    assert settled.fields == {"claimed_until": None} and settled.note is None


def test_an_answer_that_comes_late_settles_only_a_task_given_up() -> None:
    refused = Answered("refused", reason="moderation")
    revived = decide(TASKS["rejected, outcome unknown"], ACCEPTED, NOW)
    assert revived.state is S.PENDING and revived.next is Next.FIRST
    assert revived.fields["outcome_unknown"] is False
    settled = decide(TASKS["rejected, outcome unknown"], refused, NOW)
    assert settled.state is None and settled.fields["outcome_unknown"] is False
    assert settled.fields["failure_reason"] == "upstream refused: moderation"
    news = decide(TASKS["processing"], refused, NOW)  # a callback beat the answer: it stands
    assert news.fields == {"claimed_until": None} and "had news already" in (news.note or "")
    error = decide(TASKS["rejected, outcome unknown"], replace(refused, from_answer=False), NOW)
    assert error.state is None and error.note == "sent" and "failure_reason" not in error.fields
