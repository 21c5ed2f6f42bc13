"""Query one task now and apply the answer (the manual "Poll now", `tracker poll ID`).

The upstream I/O happens with no transaction open; the answer goes through
`store.apply`, a failure through `store.note_poll_failure` (a backoff, never fatal
for the worker). The worker's batched polls are in `worker_queries`.
"""

from __future__ import annotations

from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks import schedule, store
from tracker.tasks.models import Task
from tracker.tasks.states import Source
from tracker.tasks.store import InvalidAction
from tracker.upstream.client import LumaClient, UpstreamError


def poll_one(db: Database, settings: Settings, client: LumaClient, task_id: int) -> Task:
    with db.read() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise LookupError(task_id)
        upstream_id, upstream = task.upstream_id, task.upstream
    if not upstream_id:
        raise InvalidAction("this task has no upstream id yet, so there is nothing to query")
    if upstream != client.dialect.name:
        raise InvalidAction(
            f"this task was sent with the {upstream} API, and LUMA_API_FLAVOR is "
            f"{client.dialect.name}: it can only be queried with LUMA_API_FLAVOR={upstream}"
        )
    try:
        answer = client.query(upstream_id)
    except UpstreamError as exc:
        store.note_poll_failure(db, settings, task_id, exc)
        raise
    with db.write() as session:
        task = session.get(Task, task_id, with_for_update=True)
        if task is None:  # deleted meanwhile (a test's cleanup, say)
            raise LookupError(task_id)
        for name, value in schedule.released().items():
            setattr(task, name, value)
        store.apply(session, settings, task, answer.update, Source.POLL, payload=answer.body)
    return task
