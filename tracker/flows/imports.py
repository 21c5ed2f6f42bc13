"""Track a task made elsewhere (Luma's web app, another tool): `import_task`.

The upstream is asked once, before anything is stored: a task it does not know, or an
upstream that fails, leaves the database untouched. The store then tracks it
(`store.import_task`) and applies the answer like any query's, so a completed import is
archived and an unfinished one followed (queried; it has no callback URL) like any other.

An id already tracked is answered with the existing task, never a copy: the store checks
again inside its write transaction, so two imports of one id at once store one task.

The same list that `tracker import --all` pages through settles the creates whose outcome
was unknown (`reconcile`): on Luma's own API each generation keeps the callback URL it was
made with, and so the token of the task that sent it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import or_, select

from tracker.db import Database
from tracker.flows import submit
from tracker.settings import Settings
from tracker.tasks import store
from tracker.tasks.models import ORIGINALS, Task, utcnow
from tracker.tasks.states import TaskState
from tracker.tasks.store import NewTask, hash_token
from tracker.upstream import accounts, dialects, parse
from tracker.upstream.client import APIStatusError, LumaClient, UpstreamError
from tracker.upstream.creates import origin

log = logging.getLogger(__name__)

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
    account: str | None = None,
) -> tuple[Task, bool]:
    """(the task, True when it was stored now) for an upstream id already validated.

    `notify_url` (already checked by the address guard) is the new task's webhook target; an
    id already tracked keeps the target it has. `account`: the account the generation was
    made in (without it, the one account of this dialect; with several, a ValidationError
    naming `account`).

    Raises UnknownUpstreamTask (the upstream's words) or ImportFailed; nothing is stored then.
    """
    with db.read() as session:
        query = select(Task).where(Task.upstream_id == upstream_id, Task.kind.in_(ORIGINALS))
        query = query.order_by(Task.id)
        found = session.scalar(query.limit(1))
    if found is not None:
        return found, False
    probe = NewTask("generate", "", upstream=client.dialect.name, account=account)
    account = submit.account_for(settings, probe, None, derived=True)
    client = accounts.client_of(settings, account, client)
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
        account=account,
        notify_url=notify_url,
    )
    return store.import_task(db, settings, new, upstream_id, upd, answer.body)


def import_all(db: Database, settings: Settings, client: LumaClient) -> tuple[int, int]:
    """Track every generation of every account that lists them (`tracker import --all`):
    each account's list paged through to its end, each new id imported as `import_task`
    does. Returns (imported, already tracked). A generation the upstream cannot answer for
    is skipped."""
    imported = tracked = 0
    listing = [a for a in accounts.pool(settings) if dialects.get(a.dialect).list_path(0, 1)]
    if not listing:
        raise ImportFailed(f"the {client.dialect.name} API lists no generations")
    for account in listing:
        made, had = _import_account(
            db, settings, accounts.client_of(settings, account.name, client)
        )
        imported, tracked = imported + made, tracked + had
    return imported, tracked


def _import_account(db: Database, settings: Settings, client: LumaClient) -> tuple[int, int]:
    imported = tracked = offset = 0
    more = True
    while more:
        try:
            page, more = client.list_page(offset, PAGE)
        except UpstreamError as exc:
            raise ImportFailed(f"the upstream's list failed: {exc.message}") from exc
        offset += len(page)
        more = more and bool(page)
        for upstream_id in (generation["id"] for generation in page):
            try:
                _, created = import_task(db, settings, client, upstream_id, account=client.account)
            except (UnknownUpstreamTask, ImportFailed):
                continue
            imported, tracked = imported + created, tracked + (not created)
    return imported, tracked


# -- reconciling creates whose outcome is unknown ---------------------------------------------

LOOK_EVERY = timedelta(seconds=30)  # between two looks for one task, across every worker
LOOK_FOR = timedelta(minutes=15)  # not found this long after its create: nothing was made
# a generation made this long before the oldest create looked for ends the search
BEFORE_CREATE = timedelta(minutes=5)
MAX_PAGES = 50  # at most this many pages a look (5,000 generations)
NOT_FOUND = (
    "outcome unknown, then not found among the account's generations {minutes:g} minutes "
    "after it was sent: nothing was made; resend it"
)


def _token(generation: dict[str, Any]) -> str | None:
    """The token in the callback URL a generation was made with (ours end in it)."""
    request = generation.get("request")
    url = request.get("callback_url") if isinstance(request, dict) else None
    if not isinstance(url, str):
        return None
    try:
        return urlsplit(url).path.rstrip("/").rpartition("/")[2] or None
    except ValueError:
        return None


def _created(generation: dict[str, Any]) -> datetime | None:
    value = generation.get("created_at")
    try:
        made = (
            datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None
        )
    except ValueError:
        return None
    return made if made is not None and made.tzinfo is not None else None


def reconcile(db: Database, settings: Settings, client: LumaClient) -> int:
    """Look for the creates whose outcome is unknown in the account's list; how many were found.

    Only on an API that lists (Luma's own), and only tasks sent with a callback URL (the one
    mark a generation keeps of who asked). Pages are read until `has_more` is false, every
    task is found, or a whole page is older than the oldest create by BEFORE_CREATE (no
    order is assumed within a page). A task found takes its generation's id and is followed;
    one still missing LOOK_FOR after its create is an ordinary rejection, saying so.
    """
    if client.dialect.list_path(0, 1) is None:
        return 0
    now = utcnow()
    with db.read() as session:
        due = session.execute(
            select(Task.id, Task.callback_token_hash, Task.submitted_at)
            .where(
                Task.state == TaskState.REJECTED,
                Task.outcome_unknown.is_(True),
                Task.upstream_id.is_(None),
                Task.callback_token_hash.is_not(None),
                Task.upstream == client.dialect.name,
                Task.account == client.account,
                or_(Task.looked_up_at.is_(None), Task.looked_up_at <= now - LOOK_EVERY),
            )
            .order_by(Task.id)
            .limit(PAGE)
        ).all()
    if not due:
        return 0
    wanted = {row.callback_token_hash: row.id for row in due}
    oldest = min(row.submitted_at or now for row in due) - BEFORE_CREATE
    found: dict[int, tuple[Any, Any, str]] = {}
    offset = 0
    for _ in range(MAX_PAGES):
        try:
            page, more = client.list_page(offset, PAGE)
        except UpstreamError as exc:  # no look is noted: the next pass looks again
            log.warning("reconcile: the upstream's list failed: %s", exc.message)
            return 0
        offset += len(page)
        for generation in page:
            token = _token(generation)
            task_id = wanted.get(hash_token(token)) if token else None
            if task_id is not None and token is not None:
                found[task_id] = (parse.parse(generation), generation, token)
        made = [_created(generation) for generation in page]
        older = all(when is not None and when < oldest for when in made)
        if not more or not page or len(found) == len(due) or older:
            break
    for row in due:
        missing = ""
        if row.id not in found and now - (row.submitted_at or now) >= LOOK_FOR:
            missing = NOT_FOUND.format(minutes=LOOK_FOR.total_seconds() / 60)
        store.looked_up(db, settings, row.id, found.get(row.id), missing)
    return len(found)
