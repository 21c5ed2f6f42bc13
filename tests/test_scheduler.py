"""The scheduler: one backoff helper, and the claims that keep two holders off one task."""

from __future__ import annotations

import ast
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.support.databases import TEST_DATABASE_URL
from tests.support.factory import make_task, make_tasks
from tracker.db import Database
from tracker.tasks import archives, claims, heartbeats, rows, store
from tracker.tasks import schedule as timing
from tracker.tasks.models import StateCount, Task, WorkerBeat, utcnow
from tracker.tasks.states import Next, TaskState
from tracker.upstream.accounts import from_settings as _account

TRACKER = Path(__file__).resolve().parent.parent / "tracker"


def test_the_poll_backoff_doubles_with_jitter_up_to_its_cap(make_settings: Any) -> None:
    settings = make_settings(poll_after=60.0, poll_max_interval=600.0)
    for quiet, (low, high) in enumerate([(48, 60), (96, 120), (192, 240), (384, 480)]):
        assert low <= timing.query_delay(settings, quiet) <= high
    assert 480 <= timing.query_delay(settings, 30) <= 600
    # a Retry-After longer than the backoff is honoured
    wait, when = timing.query_retry(settings, 1, 900.0)
    assert wait == 900.0 and when > utcnow() + timedelta(seconds=890)


def test_the_callback_safety_net_is_kept_while_it_is_half_to_whole_the_interval_away(
    make_settings: Any,
) -> None:
    """A run of progress callbacks leaves next_check_at alone (no index rewritten)."""
    settings = make_settings(poll_max_interval=600.0)
    now = utcnow()
    latest = now + timedelta(seconds=600)

    def after(current: Any) -> Any:
        return rows.next_check_at(settings, Next.SAFETY_NET, 0, now, current)

    assert after(None) == {"next_check_at": latest}
    assert after(now + timedelta(seconds=300)) == {}  # half the interval away: kept
    assert after(latest) == {}
    assert after(now + timedelta(seconds=299)) == {"next_check_at": latest}  # too soon: pushed
    assert after(now + timedelta(hours=1)) == {"next_check_at": latest}  # too late: pulled in
    assert after(now - timedelta(seconds=5)) == {"next_check_at": latest}  # already due


def test_archive_retries_and_upstream_pauses_keep_their_timings() -> None:
    assert 24 <= timing.archive_delay(1) <= 30 and 48 <= timing.archive_delay(2) <= 60
    assert 2880 <= timing.archive_delay(20) <= 3600
    assert timing.REQUEUE.delay() == 10.0 and timing.REQUEUE.delay(retry_after=3.0) == 3.0
    assert timing.RATE_LIMIT.delay() == 5.0 and timing.RATE_LIMIT.delay(retry_after=0.5) == 0.5


def _in_flight(db: Database, count: int) -> list[int]:
    """Processing tasks due for a query."""
    due = utcnow() - timedelta(seconds=1)
    return [
        make_task(db, "processing", user_prompt="fog", upstream_id=f"up-{n}", next_check_at=due).id
        for n in range(count)
    ]


def test_a_poll_claim_is_held_until_released(db: Database, make_settings: Any) -> None:
    settings = make_settings()
    ids = _in_flight(db, 3)
    first = claims.claim_queries(db, settings, "worker-a", utcnow(), 10, account=_account(settings))
    assert sorted(task_id for task_id, _ in first) == ids
    assert (
        claims.claim_queries(db, settings, "worker-b", utcnow(), 10, account=_account(settings))
        == []
    )
    claims.release_queries(db, "worker-a", first[:1])
    again = claims.claim_queries(db, settings, "worker-b", utcnow(), 10, account=_account(settings))
    assert [task_id for task_id, _ in again] == [first[0][0]]


def test_a_dead_holders_poll_claim_is_taken_over(db: Database, make_settings: Any) -> None:
    settings = make_settings()
    (task_id,) = _in_flight(db, 1)
    now = utcnow()
    with db.write() as session:
        session.add(
            WorkerBeat(
                id="dead-worker",
                host="h",
                pid=1,
                started_at=now - timedelta(hours=1),
                last_seen_at=now - timedelta(seconds=heartbeats.STALE_AFTER + 5),
            )
        )
    assert claims.claim_queries(
        db, settings, "dead-worker", utcnow(), 10, account=_account(settings)
    )
    taken = claims.claim_queries(db, settings, "alive", utcnow(), 10, account=_account(settings))
    assert [claimed for claimed, _ in taken] == [task_id]


def test_dispatch_claims_stop_at_the_in_flight_cap(db: Database, make_settings: Any) -> None:
    settings = make_settings(max_in_flight=2, public_base_url="https://tracker.example")
    make_tasks(db, 3, "queued", user_prompt="fog", upstream="proxy")
    claimed = claims.claim_for_dispatch(
        db, settings, limit=5, account=_account(settings), owner="w"
    )
    assert len(claimed) == 2
    assert (
        claims.claim_for_dispatch(db, settings, limit=5, account=_account(settings), owner="w")
        == []
    )
    with db.read() as session:
        task = session.get(Task, claimed[0][0])
        assert task is not None and task.state == TaskState.SUBMITTING
        assert task.claimed_by == "w" and task.claimed_until is not None
        assert task.callback_token_hash == store.hash_token(claimed[0][1])
        assert task.account == "default"  # the account that took it


def test_an_archive_claim_has_one_holder(db: Database, make_settings: Any) -> None:
    settings = make_settings()
    task_id = make_task(db, "completed", upstream_id="up-1", next_archive_at=utcnow()).id
    first = archives.claim(db, settings, task_id, due_only=True, owner=None)
    assert first is not None and first.lease_until > utcnow() + timedelta(minutes=10)
    assert archives.claim(db, settings, task_id, due_only=True, owner=None) is None
    archives.failed(db, task_id, "link expired", permanent=False, holder=None)
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None and task.archive_attempts == 1
        assert task.next_archive_at is not None and task.archive_error == "link expired"


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="a PostgreSQL race: needs TEST_DATABASE_URL")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_claim_never_overwrites_a_timeout(db, make_settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(task_timeout=60.0)
    task = make_task(db, "queued", user_prompt="a fox", created_at=utcnow() - timedelta(hours=1))
    go, selected = threading.Event(), threading.Event()
    real = claims.secrets.token_urlsafe

    def slow_token(n: int) -> str:  # hold the claim between its read and its write
        selected.set()
        go.wait(10)
        return real(n)

    monkeypatch.setattr(claims.secrets, "token_urlsafe", slow_token)
    claimer = threading.Thread(
        target=lambda: claims.claim_for_dispatch(db, settings, account=_account(settings))
    )
    claimer.start()
    assert selected.wait(10)
    claims.time_out_overdue(db, settings, account=_account(settings))  # runs in the gap
    go.set()
    claimer.join(timeout=10)
    with db.read() as session:
        stored = session.get(Task, task.id)
        counts = dict(session.execute(select(StateCount.state, StateCount.count)).all())
        moves = [(e.state_before, e.state_after) for e in stored.events]
    assert counts[stored.state] == 1
    assert sum(counts.values()) == 1 and min(counts.values()) == 0
    assert ("timed_out", "submitting") not in moves


def _names(tree: ast.AST, model: str) -> bool:
    return any(
        (isinstance(node, ast.Name) and node.id == model)
        or (isinstance(node, ast.Attribute) and node.attr == model)
        for node in ast.walk(tree)
    )


@pytest.mark.parametrize(
    ("column", "model"),
    [
        ("claimed_until", None),  # a task's or a delivery's lease, in any module
        ("claimed_by", None),
        # the account row's turn to read the balance: a claim. A task's next_check_at is a
        # schedule lifecycle writes with timing's values, so only modules naming Account count.
        ("next_check_at", "Account"),
    ],
)
def test_only_the_scheduler_names_a_lease_column(column: str, model: str | None) -> None:
    """Nothing outside tracker/scheduler/ writes a lease column by name."""
    writers = []
    for path in TRACKER.rglob("*.py"):
        if "tasks" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        if model is not None and not _names(tree, model):
            continue
        for node in ast.walk(tree):
            targets = (
                [t for t in node.targets if isinstance(t, ast.Attribute)]
                if isinstance(node, ast.Assign)
                else []
            )
            keywords = [k.arg for k in node.keywords] if isinstance(node, ast.Call) else []
            if any(t.attr == column for t in targets) or column in keywords:
                writers.append(f"{path.name}:{node.lineno}")
    assert writers == []
