"""The recovery sweeps: a send whose process died, and tasks past TRACKER_TASK_TIMEOUT.

Each finds its tasks with row locks that skip rows another transaction holds (they wait for
the next pass: never a lock cycle) and hands them to the store for the state change.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, or_, select

from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks import heartbeats, store
from tracker.tasks.models import Task, utcnow
from tracker.tasks.states import TIMEABLE_STATES, GiveUp, TaskState, TimeOut


def recover_interrupted_submissions(db: Database, limit: int = 500) -> int:
    """A task left in `submitting` by a crash mid-send: its outcome is unknown.

    Found when its lease has passed, or sooner when its sender's heartbeat went stale. Either
    way it is never resent on our own: the create may have happened (and been paid for). An
    answer that still arrives (a sender only thought dead) revives it (`store.record_answer`).
    """
    now = utcnow()
    gone = or_(Task.claimed_until < now, heartbeats.held_by_dead(Task.claimed_by, now))
    with db.write() as session:
        tasks = session.scalars(
            select(Task)
            .where(Task.state == TaskState.SUBMITTING, gone)
            .order_by(Task.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for task in tasks:
            store.apply(session, None, task, GiveUp("the process sending it stopped mid-request"))
    return len(tasks)


def time_out_overdue(db: Database, settings: Settings, limit: int = 500) -> int:
    """Tasks with no final state TRACKER_TASK_TIMEOUT seconds after creation become timed_out.

    A later callback or a manual poll can still complete them (see `tasks.machine`).
    """
    cutoff = utcnow() - timedelta(seconds=settings.task_timeout)
    with db.write() as session:
        tasks = session.scalars(
            select(Task)
            .where(
                Task.state.in_(TIMEABLE_STATES),
                # another dialect's tasks wait for a worker that can ask about them
                Task.upstream == settings.luma_api_flavor,
                # the clock starts with the current attempt (a resend starts a new one)
                func.coalesce(Task.submitted_at, Task.created_at) < cutoff,
            )
            .order_by(Task.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for task in tasks:
            store.apply(session, settings, task, TimeOut(settings.task_timeout))
    return len(tasks)
