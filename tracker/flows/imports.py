"""Track a task made elsewhere (Luma's web app, another tool): `import_task`.

The upstream is asked once, before anything is stored: a task it does not know, or an
upstream that fails, leaves the database untouched. The store then tracks it
(`store.import_task`) and applies the answer like any query's, so a completed import is
archived and an unfinished one followed (queried; it has no callback URL) like any other.

An id already tracked is answered with the existing task, never a copy: the store checks
again inside its write transaction, so two imports of one id at once store one task.
"""

from __future__ import annotations

from sqlalchemy import select

from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks import store
from tracker.tasks.models import ORIGINALS, Task
from tracker.tasks.store import NewTask
from tracker.upstream.client import APIStatusError, LumaClient, UpstreamError
from tracker.upstream.creates import origin

# generations asked for a page when importing them all (Luma's largest page)
PAGE = 100
# statuses by which an upstream says "no such task" to a GET of one id
NOT_KNOWN = (400, 404, 410, 422)


class UnknownUpstreamTask(LookupError):
    """The upstream does not know the id; `reason` is its own words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ImportFailed(Exception):
    """The upstream failed, could not be reached, or answered something not understood."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def import_task(
    db: Database,
    settings: Settings,
    client: LumaClient,
    upstream_id: str,
    *,
    notify_url: str | None = None,
) -> tuple[Task, bool]:
    """(the task, True when it was stored now) for an upstream id already validated.

    `notify_url` (already checked by the address guard) is the new task's webhook target; an
    id already tracked keeps the target it has.

    Raises UnknownUpstreamTask (the upstream's words) or ImportFailed; nothing is stored then.
    """
    with db.read() as session:
        query = select(Task).where(Task.upstream_id == upstream_id, Task.kind.in_(ORIGINALS))
        query = query.order_by(Task.id)
        found = session.scalar(query.limit(1))
    if found is not None:
        return found, False
    try:
        answer = client.query(upstream_id)
    except APIStatusError as exc:
        if exc.status in NOT_KNOWN:
            raise UnknownUpstreamTask(exc.reason) from exc
        raise ImportFailed(f"the upstream query failed: {exc.message}") from exc
    except UpstreamError as exc:
        raise ImportFailed(f"the upstream query failed: {exc.message}") from exc
    upd = answer.update
    if not upd.understood or upd.state is None:
        raise ImportFailed("the upstream's answer about this task was not understood")
    if upd.upstream_id and upd.upstream_id != upstream_id:
        raise ImportFailed("the upstream answered about another task")
    asked = origin(answer.body)
    new = NewTask(
        kind="image" if asked.image else "extend" if asked.source_id else "generate",
        user_prompt=upd.prompt or asked.prompt or f"(imported: {upstream_id})",
        source_task_id=asked.source_id,
        upstream=client.dialect.name,
        notify_url=notify_url,
    )
    return store.import_task(db, settings, new, upstream_id, upd, answer.body)


def import_all(db: Database, settings: Settings, client: LumaClient) -> tuple[int, int]:
    """Track every generation of the account not tracked yet (`tracker import --all`): the
    list paged through to its end, each new id imported as `import_task` does. Returns
    (imported, already tracked). A generation the upstream cannot answer for is skipped."""
    imported = tracked = offset = 0
    more = True
    while more:
        try:
            ids, more = client.list_ids(offset, PAGE)
        except UpstreamError as exc:
            raise ImportFailed(f"the upstream's list failed: {exc.message}") from exc
        offset += len(ids)
        more = more and bool(ids)
        for upstream_id in ids:
            try:
                _, created = import_task(db, settings, client, upstream_id)
            except (UnknownUpstreamTask, ImportFailed):
                continue
            imported, tracked = imported + created, tracked + (not created)
    return imported, tracked
