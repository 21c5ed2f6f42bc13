"""The JSON API: submit, list, show (with `?wait=`), the manual actions, and the webhook
delivery log (GET /api/tasks/<id>/deliveries, POST /api/deliveries/<id>/redeliver).

Everything under /api asks for the admin token as a Bearer header (auth.require_bearer).
The detail page shows the same delivery list (`delivery_rows`) with a Redeliver form of its
own (dashboard, CSRF-checked).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, make_response, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from tracker import jsontext
from tracker.db import Database
from tracker.flows import follow, imports, validate
from tracker.flows import submit as submit_flow
from tracker.tasks import deliveries as queue
from tracker.tasks.models import Delivery, Task
from tracker.tasks.schema import task_json
from tracker.tasks.states import STATES
from tracker.upstream import account_rows, accounts, dialects
from tracker.upstream.account_rows import overview
from tracker.upstream.client import UpstreamError
from tracker.web import MAX_ID, admission, error, services
from tracker.web.answers import Account, Accounts, AccountState
from tracker.web.auth import require_bearer

bp = Blueprint("api", __name__, url_prefix="/api")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


bp.before_request(require_bearer)


def invalid(exc: validate.ValidationError) -> tuple[Response, int]:
    """A 400: the first problem as `error` and `field` (as ever), every problem in `errors`."""
    body: dict[str, Any] = {"error": exc.message}
    if exc.field is not None:
        body["field"] = exc.field
    body["errors"] = [{"field": p.field, "error": p.error} for p in exc.problems]
    return jsonify(body), 400


def _json_body() -> Any:
    # JSON only: a cross-site form can post text/plain that looks like JSON, never this type
    if not request.is_json:
        return validate.ValidationError(None, "send a JSON object (Content-Type: application/json)")
    try:  # the one safe reader: depth, NaN/Infinity and lone surrogates get a 400 naming them
        return jsontext.read(request.get_data(cache=True))
    except jsontext.BodyError as exc:
        return validate.ValidationError(exc.field, exc.message)


@bp.post("/tasks")
def submit() -> ResponseReturnValue:
    body = _json_body()
    try:
        if isinstance(body, validate.ValidationError):
            raise body
        svc = services()
        new = validate.new_task(
            body, svc.settings.luma_api_flavor, allow_private=svc.settings.notify_allow_private
        )
        task = submit_flow.submit(svc.db, svc.settings, svc.client, new)  # checks the source
    except validate.ValidationError as exc:
        return invalid(exc)
    return _task_answer(task.id, 201)


@bp.post("/tasks/import")
def import_task() -> ResponseReturnValue:
    """Track a task made elsewhere: 201 new, 200 already tracked, 404 unknown, 502 failing."""
    body = _json_body()
    svc = services()
    try:
        if isinstance(body, validate.ValidationError):
            raise body
        checked = validate.import_body(body, allow_private=svc.settings.notify_allow_private)
        upstream_id, target = checked.upstream_id, checked.notify_url
        task, created = imports.import_task(
            svc.db,
            svc.settings,
            svc.client,
            upstream_id,
            notify_url=target,
            account=checked.account,
        )
    except validate.ValidationError as exc:
        return invalid(exc)
    except imports.UnknownUpstreamTask as exc:
        return error(404, f"the upstream does not know {upstream_id}: {exc.reason}")
    except imports.ImportFailed as exc:
        return error(502, exc.message)
    return _task_answer(task.id, 201 if created else 200)


@bp.get("/account")
def account() -> ResponseReturnValue:
    """The `default` account's balance (or the only one's) as the worker last read it (Luma's
    API only); with several accounts and none `default`, see /api/accounts."""
    svc = services()
    pool = accounts.pool(svc.settings)
    one = accounts.named(svc.settings, accounts.DEFAULT) or (pool[0] if len(pool) == 1 else None)
    if one is None:
        return error(404, "several accounts and none named default: see /api/accounts")
    if dialects.get(one.dialect).credits_path is None:
        return error(404, f"no account balance with the {one.dialect} API (LUMA_API_FLAVOR)")
    return Account.of(account_rows.read(svc.db, one)).model_dump(mode="json")


@bp.get("/accounts")
def accounts_list() -> ResponseReturnValue:
    """Every account of the pool: enabled or why not, its load, its day, its balance."""
    svc = services()
    shown = [AccountState(**state) for state in overview(svc.db, svc.settings)]
    return Accounts(accounts=shown).model_dump(mode="json")


def _task_answer(task_id: int, status: int = 200) -> ResponseReturnValue:
    with services().db.read() as session:
        task = session.scalar(
            select(Task).where(Task.id == task_id).options(selectinload(Task.events))
        )
        if task is None:
            return error(404, f"no task {task_id}")
        return task_json(task, events=True), status


def _int_arg(name: str, default: int | None, *, minimum: int, maximum: int) -> int | None:
    raw = request.args.get(name)
    if raw is None or (raw == "" and name == "cursor"):  # "?cursor=" is the first page
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise validate.ValidationError(name, f"{name} must be a whole number")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise validate.ValidationError(name, f"{name} must be between {minimum} and {maximum}")
    return value


@bp.get("/tasks")
def list_tasks() -> ResponseReturnValue:
    try:
        limit = _int_arg("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
        cursor = _int_arg("cursor", None, minimum=0, maximum=10**18)
    except validate.ValidationError as exc:
        return invalid(exc)
    state = request.args.get("state") or None
    if state is not None and state not in STATES:
        return invalid(
            validate.ValidationError("state", f"state must be one of {', '.join(STATES)}")
        )
    query = select(Task).order_by(Task.id.desc()).limit(limit + 1)
    if state:
        query = query.where(Task.state == state)
    if cursor is not None and cursor <= MAX_ID:  # past every possible id: the first page
        query = query.where(Task.id < cursor)
    with services().db.read() as session:
        tasks = list(session.scalars(query))
    more = len(tasks) > limit
    tasks = tasks[:limit]
    return {
        "tasks": [task_json(t) for t in tasks],
        "next_cursor": str(tasks[-1].id) if more and tasks else None,
    }


@bp.get("/tasks/<int:task_id>")
def show(task_id: int) -> ResponseReturnValue:
    """One task; with ?wait=SECONDS (0-60) the answer waits until the task is final."""
    try:
        seconds = admission.wait_arg(request.args.get("wait"))
    except validate.ValidationError as exc:
        return error(400, exc.message, exc.field)
    gate = request.environ.get("tracker.gate")
    if seconds and not admission.until_final(services().db, task_id, seconds, gate):
        response = make_response(_task_answer(task_id))
        response.headers["X-Tracker-Wait"] = "skipped"  # too many waiting: ask again
        return response
    return _task_answer(task_id)


@bp.post("/tasks/<int:task_id>/poll")
def poll(task_id: int) -> ResponseReturnValue:
    svc = services()
    try:  # no such task (404), or not one to query (409): tracker/web/__init__.py answers
        follow.query_now(svc.db, svc.settings, svc.client, task_id)
    except UpstreamError as exc:
        return error(502, f"the upstream query failed: {exc.message}")
    return _task_answer(task_id)


@bp.post("/tasks/<int:task_id>/resend")
def resend(task_id: int) -> ResponseReturnValue:
    svc = services()
    submit_flow.resend(
        svc.db, svc.settings, svc.client, task_id
    )  # 404, 409: tracker/web/__init__.py
    return _task_answer(task_id)


# -- the webhook delivery log ---------------------------------------------------------------


def delivery_json(row: Delivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "type": row.type,
        "target": row.target,
        "state": row.state,
        "webhook_id": row.webhook_id,
        "attempts": list(row.attempts or []),
    }


def delivery_rows(db: Database, task_id: int) -> list[dict[str, Any]] | None:
    """The task's deliveries, newest first; None when there is no such task."""
    with db.read() as session:
        if session.get(Task, task_id) is None:
            return None
        rows = session.scalars(
            select(Delivery).where(Delivery.task_id == task_id).order_by(Delivery.id.desc())
        )
        return [delivery_json(row) for row in rows]


@bp.get("/tasks/<int:task_id>/deliveries")
def task_deliveries(task_id: int) -> ResponseReturnValue:
    rows = delivery_rows(services().db, task_id)
    if rows is None:
        return error(404, f"no task {task_id}")
    return {"deliveries": rows}


@bp.post("/deliveries/<int:delivery_id>/redeliver")
def redeliver(delivery_id: int) -> ResponseReturnValue:
    """Send it again, same webhook-id; 202: the worker sends it, not this request."""
    db = services().db
    if not queue.redeliver(db, delivery_id):
        return error(404, f"no delivery {delivery_id}")
    with db.read() as session:
        row = session.get(Delivery, delivery_id)
        if row is None:
            return error(404, f"no delivery {delivery_id}")
        return delivery_json(row), 202
