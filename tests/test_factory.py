"""The tests' task factory (tests/support/factory.py) leaves a task as the service would count
and show it: in the state asked for, with its columns, and the per-state counters right."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.support.factory import load_task, make_task, set_fields
from tracker.db import Database
from tracker.tasks.models import StateCount, TaskEvent, utcnow
from tracker.tasks.states import TaskState


def counted(db: Database) -> dict[str, int]:
    with db.read() as session:
        found = session.execute(select(StateCount.state, StateCount.count)).all()
    return {state: count for state, count in found if count}


@pytest.mark.parametrize("state", list(TaskState))
def test_a_task_in_any_state_is_counted_in_that_state_only(db: Database, state: TaskState) -> None:
    task = make_task(db, state, upstream_id="up-1", failure_reason="a reason")
    assert (task.state, task.upstream_id, task.failure_reason) == (state, "up-1", "a reason")
    assert counted(db) == {state: 1}
    with db.read() as session:
        events = session.scalars(select(TaskEvent.source).where(TaskEvent.task_id == task.id))
        assert list(events) == ["submit"]  # the create's own; the move writes none


def test_the_create_takes_its_fields_and_the_columns_their_values(db: Database) -> None:
    extend = make_task(db, "queued", source_task_id="up-9", user_prompt="add a cat")
    assert (extend.kind, extend.source_task_id, extend.user_prompt) == (
        "extend",
        "up-9",
        "add a cat",
    )
    assert make_task(db, "pending").kind == "generate"
    assert counted(db) == {"queued": 1, "pending": 1}
    hour_ago = utcnow().replace(microsecond=0) - timedelta(hours=1)
    set_fields(db, extend.id, created_at=hour_ago)
    assert load_task(db, extend.id).created_at == hour_ago
    assert load_task(db, extend.id).state == "queued"
