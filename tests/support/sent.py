"""A task as a send leaves it: in a state past submitting, with an upstream id and a token."""

from __future__ import annotations

import threading

from tests.support.factory import make_task
from tracker.db import Database
from tracker.flows import submit
from tracker.settings import Settings
from tracker.tasks import store
from tracker.tasks.models import Task
from tracker.tasks.store import NewTask
from tracker.upstream.client import LumaClient


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


def submit_in_background(
    db: Database, settings: Settings, client: LumaClient
) -> tuple[threading.Thread, dict[str, Task]]:
    """A task submitted from a thread of its own (its send held up upstream, say): the
    thread, started, and where its task lands once the submit returns (`["task"]`)."""
    done: dict[str, Task] = {}
    new = NewTask(kind="generate", user_prompt="a fox")
    sender = threading.Thread(
        target=lambda: done.setdefault("task", submit.submit(db, settings, client, new))
    )
    sender.start()
    return sender, done
