"""The one list of states: the enum, its ranks and moves, and the copies that may not import it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sqlalchemy import select

from tracker.db import Database
from tracker.tasks.models import StateCount
from tracker.tasks.states import FINAL_STATES, MOVES, RANK, STATES, TaskState

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


def test_migration_0007_makes_outcome_unknown_a_flag_and_events_unique(tmp_path: Path) -> None:
    """Rows written before the flag: the prefix becomes the flag, the words stay; duplicate
    fingerprints keep theirs on the first row only, so the unique index can be made."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from tracker.dbschema import alembic_config

    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0006")
    engine = create_engine(url)
    with engine.begin() as conn:
        for n, (state, reason) in enumerate(
            [
                ("rejected", "outcome unknown: the answer named no task id. The upstream may ..."),
                ("rejected", "upstream refused: insufficient balance"),
                ("failed", "outcome unknown is what the upstream said"),
            ],
            start=1,
        ):
            conn.execute(
                text(
                    "INSERT INTO tasks (id, kind, state, user_prompt, options, failure_reason, "
                    "attempts, quiet_polls, archive_attempts, created_at, updated_at, upstream) "
                    "VALUES (:id, 'generate', :state, 'p', '{}', :reason, 1, 0, 0, "
                    "'2026-11-26 00:00:00', '2026-11-26 00:00:00', 'proxy')"
                ),
                {"id": n, "state": state, "reason": reason},
            )
        for _ in range(2):  # the same refusal recorded twice (a resend refused in the same words)
            conn.execute(
                text(
                    "INSERT INTO task_events (task_id, source, fingerprint, created_at) "
                    "VALUES (2, 'submit', 'f00d', '2026-11-26 00:00:00')"
                )
            )
    command.upgrade(config, "0007")
    with engine.connect() as conn:
        flags = dict(conn.execute(text("SELECT id, outcome_unknown FROM tasks")).all())
        reason = conn.scalar(text("SELECT failure_reason FROM tasks WHERE id = 1"))
        prints = conn.execute(text("SELECT fingerprint FROM task_events ORDER BY id")).scalars()
        assert list(prints) == ["f00d", None]
    assert {task_id: bool(flag) for task_id, flag in flags.items()} == {1: True, 2: False, 3: False}
    assert reason.startswith("outcome unknown: the answer named no task id")
    engine.dispose()
