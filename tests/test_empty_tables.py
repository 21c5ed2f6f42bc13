"""Each test starts from empty tables (the `db` fixture): what a test leaves in any table,
sign-ins and webhook deliveries included, the next one never sees."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from tests.support.databases import empty_tables
from tests.support.factory import make_task
from tracker.db import Database
from tracker.tasks.models import (
    Account,
    AccountDay,
    Base,
    Delivery,
    SignIn,
    StateCount,
    WorkerBeat,
    utcnow,
)
from tracker.tasks.states import TaskState


def rows_by_table(db: Database) -> dict[str, int]:
    with db.read() as session:
        return {
            table.name: session.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }


def counted(db: Database) -> dict[str, int]:
    with db.read() as session:
        return dict(session.execute(select(StateCount.state, StateCount.count)).all())


def test_every_table_is_emptied_and_the_counters_zeroed(db: Database) -> None:
    task = make_task(db, "queued", user_prompt="left behind")
    now = utcnow()
    with db.write() as session:
        session.add(
            Delivery(
                task_id=task.id,
                webhook_id="wh-left-behind",
                type="task.queued",
                target="https://hooks.example/in",
                target_kind="global",
            )
        )
        session.add(SignIn(id_hash="a" * 64, expires_at=now + timedelta(hours=12)))
        session.add(Account(name="default", upstream="luma", credit_balance=1200, checked_at=now))
        session.add(AccountDay(account="default", day="2026-12-06", creates=3))
        session.add(
            WorkerBeat(id="gone:1:aaaaaaaa", host="h", pid=1, started_at=now, last_seen_at=now)
        )
    # every table of the models holds something (a table added later must be filled here too)
    assert {name for name, count in rows_by_table(db).items() if count == 0} == set()
    assert counted(db)[TaskState.QUEUED] == 1

    empty_tables(db)

    assert rows_by_table(db) == {
        table.name: len(TaskState) if table.name == "state_counts" else 0
        for table in Base.metadata.sorted_tables
    }
    assert counted(db) == {str(state): 0 for state in TaskState}
