"""The one list of states: the enum, its ranks and moves, and the copies that may not import it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sqlalchemy import select

from tracker.db import Database
from tracker.models import StateCount
from tracker.states import FINAL_STATES, MOVES, RANK, STATES, TaskState

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"


def _migration(name: str):  # type: ignore[no-untyped-def]
    (path,) = MIGRATIONS.glob(f"*_{name}_*.py")
    spec = importlib.util.spec_from_file_location(f"migration_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_0001_seeds_a_counter_for_every_state_and_no_other() -> None:
    """Migrations keep a literal copy (they never import application code): it must match."""
    assert tuple(_migration("0001").STATES) == tuple(state.value for state in TaskState)


def test_the_database_counts_every_state(db: Database) -> None:
    with db.read() as session:
        counted = set(session.scalars(select(StateCount.state)))
    assert counted == {state.value for state in TaskState}


def test_every_state_has_a_rank_and_its_moves() -> None:
    assert set(RANK) == set(MOVES) == set(STATES) == set(TaskState)
    for state, targets in MOVES.items():
        assert state not in targets
    # completed and failed are the end; rejected and timed_out can still be settled or revived
    assert MOVES[TaskState.COMPLETED] == MOVES[TaskState.FAILED] == frozenset()
    assert {"completed", "failed", "rejected", "timed_out"} == FINAL_STATES


def test_a_state_is_its_name_wherever_it_is_shown() -> None:
    assert TaskState.TIMED_OUT == "timed_out" and f"{TaskState.TIMED_OUT}" == "timed_out"
    assert [str(state) for state in STATES][:4] == ["queued", "submitting", "pending", "processing"]
