"""A task as a send leaves it: in a state past submitting, with an upstream id and a token."""

from __future__ import annotations

from tests.support.factory import make_task
from tracker.db import Database
from tracker.tasks import store
from tracker.tasks.models import Task


def sent_task(
    db: Database, token: str, upstream_id: str, state: str, notify_url: str | None = None
) -> int:
    """A new task moved to `state`, answering callbacks to /callbacks/luma/<token>; its id."""
    task_id = make_task(db, "queued", user_prompt="p", notify_url=notify_url).id
    with db.write() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise LookupError(task_id)
        store.set_state(session, task, state)
        task.upstream_id = upstream_id
        task.callback_token_hash = store.hash_token(token)
    return task_id
