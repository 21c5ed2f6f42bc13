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

from tracker.tasks.machine import decide
from tracker.tasks.states import MOVES, RANK, Next, Source, TaskFields, TaskState, Word
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
        assert change.next is (Next.NOW if upd.needs_query else Next.SAFETY_NET)
    else:
        assert change.next is Next.BACKOFF
        assert change.fields["quiet_polls"] == (0 if change.state else 1)
    # what the new state brings with it
    if change.state is S.COMPLETED:
        assert change.fields["completed_at"] == change.fields["next_archive_at"] == NOW
        assert change.fields["video_url"] == VIDEO and change.fields["progress"] == 100
    if change.state is S.FAILED:
        assert change.failure_reason == "nsfw" and change.fields["progress"] is None
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
