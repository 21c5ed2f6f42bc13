"""The dashboard: server-rendered pages to watch, search, submit and act on tasks.

Reads go through `listing` (and `detail`, below); every change goes through the flows and
the task store, as for the API. Pages refresh themselves (static/dashboard.js asks for the
same URL with `X-Live: 1` and gets just the part that changes). Every POST carries a CSRF
token (security.py); sign-in is auth.py's, template filters and the form are pages.py's,
error pages are the web package's own (tracker/web/__init__.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session, selectinload

from tracker.flows import follow, imports, validate
from tracker.flows import submit as submit_flow
from tracker.tasks import deliveries as queue
from tracker.tasks.models import Delivery, Task, utcnow
from tracker.tasks.schema import task_json
from tracker.tasks.states import STATES
from tracker.upstream import account_rows, accounts, dialects
from tracker.upstream.client import UpstreamError
from tracker.web import LIVE_HEADER, auth, is_live, listing, pages, services
from tracker.web import page as error_page
from tracker.web.api import delivery_rows

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",  # the app itself claims /static (Flask registers it always)
)
PUBLIC_ENDPOINTS = ("dashboard.static", "dashboard.login")

auth.add_views(bp)  # /login and /logout


@bp.before_request
def _guard() -> ResponseReturnValue | None:
    if request.endpoint in PUBLIC_ENDPOINTS or auth.allowed():
        return None
    if is_live() or request.method != "GET":
        return error_page(401, "Sign in again", "Your session ended; reload the page to sign in.")
    return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))


@bp.after_request
def _no_store(response: Response) -> Response:
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"
        response.vary.add(LIVE_HEADER)
    return response


# -- pages ----------------------------------------------------------------------------------


def _cursor_arg() -> int | None:
    return listing.cursor_from(request.args.get("cursor", ""))


def list_url(
    state: str | None, query: str, cursor: int | None = None, account: str | None = None
) -> str:
    pairs = (("state", state), ("q", query), ("cursor", cursor), ("account", account))
    params = {k: v for k, v in pairs if v}
    return url_for("dashboard.index") + ("?" + urlencode(params) if params else "")


@bp.get("/")
def index() -> ResponseReturnValue:
    """The list: by state, search and account (`?account=`: a name no task has shows none);
    the panel of accounts when there are several, or the one is disabled or paused."""
    state = request.args.get("state") or None
    if state not in STATES:
        state = None
    query = request.args.get("q", "").strip()[:200]
    cursor, account = _cursor_arg(), request.args.get("account", "").strip().lower()[:32] or None
    svc = services()
    flavor = svc.settings.luma_api_flavor
    with svc.db.read() as session:
        page = listing.page(
            session, svc.db, state=state, query=query, cursor=cursor, account=account
        )
        elsewhere = listing.other_dialect_waiting(session, flavor)
        disabled = listing.disabled_since(session)
    # the stored rows and balances (the worker reads those): never the upstream on a page view
    pool = account_rows.overview(svc.db, svc.settings)
    now = utcnow()
    for shown in pool:
        shown["disabled_at"] = disabled.get(shown["name"])
        shown["paused"] = shown["paused_until"] is not None and shown["paused_until"] > now
    panel = len(pool) > 1 or any(not shown["enabled"] or shown["paused"] for shown in pool)
    one = pool[0] if len(pool) == 1 and dialects.get(pool[0]["upstream"]).credits_path else None
    return render_template(
        "_list.html" if is_live() else "list.html",
        page=page,
        list_url=partial(list_url, account=account),  # every link keeps the account asked
        self_url=list_url(state, query, cursor, account),
        flavor=flavor,
        elsewhere=elsewhere,
        account=one,  # the one account's balance (Luma's API)
        pool=pool,
        panel=panel,
    )


@dataclass
class Detail:
    task: Task
    extends: list[Row[Any]]
    extensions: list[Row[Any]]


CHAIN_COLUMNS = (
    Task.id,
    Task.state,
    Task.kind,
    Task.upstream_id,
    func.substr(Task.user_prompt, 1, 120).label("prompt"),
    Task.created_at,
)
MAX_EXTENSIONS = 100
REMAKES = ("upscale", "audio")  # Luma remakes the source under its id: the two share it


def detail_of(session: Session, task_id: int) -> Detail:
    """A task with its events, the task it came from and the tasks made from it; never itself.

    The task it came from is the one that made its source's video: of the tasks with that
    upstream id, the oldest that is not a remake (an upscale or audio shares its source's id).
    A remake lists nothing as made from it (those are made from its source).
    """
    task = session.scalar(select(Task).where(Task.id == task_id).options(selectinload(Task.events)))
    if task is None:
        raise LookupError(task_id)  # tracker/web/__init__.py: "No such task"
    chain = select(*CHAIN_COLUMNS).where(Task.id != task.id)
    extends: list[Row[Any]] = []
    if task.source_task_id:
        origin = chain.where(Task.upstream_id == task.source_task_id)
        extends = list(session.execute(origin.order_by(Task.kind.in_(REMAKES), Task.id).limit(1)))
    extensions: list[Row[Any]] = []
    if task.upstream_id and task.upstream_id != task.source_task_id:
        made = chain.where(Task.source_task_id == task.upstream_id).order_by(Task.id)
        extensions = list(session.execute(made.limit(MAX_EXTENSIONS)))
    return Detail(task=task, extends=extends, extensions=extensions)


@bp.get("/tasks/<int:task_id>")
def detail(task_id: int) -> ResponseReturnValue:
    svc = services()
    with svc.db.read() as session:
        found = detail_of(session, task_id)
    template = "_detail.html" if is_live() else "detail.html"
    sent = delivery_rows(svc.db, task_id) or []
    data, offered = task_json(found.task), svc.client.dialect.kinds
    held = account_rows.holding(svc.db, svc.settings, found.task)
    return render_template(
        template, d=found, task=found.task, data=data, deliveries=sent, offered=offered, held=held
    )


def _form(values: dict[str, str], errors: dict[str, str]) -> str:
    """The form, showing the fields of its kind (or of the first kind offered, for a kind the
    dialect does not offer); dashboard.js shows another kind's fields when one is picked."""
    flavor = services().settings.luma_api_flavor
    offered = services().client.dialect.kinds
    kind = values["kind"] if values["kind"] in offered else offered[0]
    takes = pages.takers(flavor)
    pool = accounts.pool(services().settings)  # a select of accounts when there are several
    names = [a.name for a in pool if a.dialect == flavor] if len(pool) > 1 else []
    if not names:
        takes.pop("account", None)
    said = {name: pages.labelled(message, kind) for name, message in errors.items()}
    return render_template(
        "new.html", values=values, errors=said, kind=kind, offered=offered, takes=takes,
        choices=pages.CHOICES, flavor=flavor, accounts=names, image_labels=pages.IMAGE_LABELS,
    )  # fmt: skip


@bp.route("/tasks/new", methods=["GET", "POST"])
def new_task() -> ResponseReturnValue:
    """The new-task form. `?kind=upscale&source=<upstream id>` (or any field by name) fills it
    in; without a kind, a source id makes it an extend. A POST whose kind is not the one its
    fields were shown for (`shown`: a kind picked without JavaScript) shows that kind's fields."""
    settings = services().settings
    if request.method == "GET":
        asked = {name: value[: pages.MAX_ASKED] for name, value in request.args.items()}
        asked.setdefault("source_task_id", asked.get("source", ""))  # ?source=<upstream id>
        values = pages.form_values(asked)
        refused = pages.kind_problem(values["kind"], settings.luma_api_flavor)
        return (_form(values, {"kind": refused}), 400) if refused else _form(values, {})
    if request.form.get("shown", request.form.get("kind")) != request.form.get("kind"):
        values = pages.form_values(request.form)
        if not pages.kind_problem(values["kind"], settings.luma_api_flavor):
            return _form(values, {})
    values, errors, new = pages.read_new_task(
        request.form,
        request.files,
        settings.luma_api_flavor,
        allow_private=settings.notify_allow_private,
    )
    if new is None:
        return _form(values, errors), 400
    svc = services()
    try:  # the source, or the account, refused
        task = submit_flow.submit(svc.db, svc.settings, svc.client, new)
    except validate.ValidationError as exc:
        return _form(values, {found.field or "form": found.error for found in exc.problems}), 400
    flash(f"Task {task.id} submitted.", "ok")
    return redirect(url_for("dashboard.detail", task_id=task.id), code=303)


@bp.post("/tasks/import")
def import_task() -> ResponseReturnValue:
    """The list page's import field: track a task made elsewhere by its upstream id.

    Checked by the same model as `POST /api/tasks/import` (the webhook target's guard too).
    """
    svc = services()
    form = request.form
    body = {name: form.get(name, "").strip() or None for name in ("notify_url", "account")}
    body["upstream_id"] = form.get("upstream_id", "")
    try:
        checked = validate.import_body(body, allow_private=svc.settings.notify_allow_private)
        upstream_id, target, account = checked.upstream_id, checked.notify_url, checked.account
        task, created = imports.import_task(
            svc.db, svc.settings, svc.client, upstream_id, notify_url=target, account=account
        )
    except validate.ValidationError as exc:  # the body, or the account (unknown, or needed)
        flash(f"Nothing imported: {pages.labelled(exc.message)}.", "error")
        return redirect(url_for("dashboard.index"), code=303)
    except imports.UnknownUpstreamTask as exc:
        flash(
            f"Nothing imported: the upstream does not know {upstream_id} ({exc.reason}).", "error"
        )
        return redirect(url_for("dashboard.index"), code=303)
    except imports.ImportFailed as exc:
        flash(f"Nothing imported: {exc.message}. Try again later.", "error")
        return redirect(url_for("dashboard.index"), code=303)
    flash(
        f"Imported as task {task.id}." if created else f"Already tracked as task {task.id}.", "ok"
    )
    return redirect(url_for("dashboard.detail", task_id=task.id), code=303)


@bp.post("/tasks/<int:task_id>/poll")
def poll(task_id: int) -> ResponseReturnValue:
    svc = services()
    try:  # no such task, or nothing to query: tracker/web/__init__.py answers
        follow.query_now(svc.db, svc.settings, svc.client, task_id)
        flash("Asked the upstream; the answer is in the timeline.", "ok")
    except UpstreamError as exc:
        flash(f"The upstream query failed: {exc.message}", "error")
    return redirect(url_for("dashboard.detail", task_id=task_id), code=303)


@bp.post("/tasks/<int:task_id>/deliveries/<int:delivery_id>/redeliver")
def redeliver(task_id: int, delivery_id: int) -> ResponseReturnValue:
    """The detail page's Redeliver: the same webhook-id, sent again by the worker."""
    db = services().db
    with db.read() as session:
        row = session.get(Delivery, delivery_id)
        found = row is not None and row.task_id == task_id
    if not found or not queue.redeliver(db, delivery_id):
        raise LookupError(task_id)  # tracker/web/__init__.py: "not found"
    flash("Queued again; the worker sends it with the same webhook-id.", "ok")
    return redirect(url_for("dashboard.detail", task_id=task_id), code=303)


@bp.post("/tasks/<int:task_id>/resend")
def resend(task_id: int) -> ResponseReturnValue:
    svc = services()
    submit_flow.resend(
        svc.db, svc.settings, svc.client, task_id
    )  # refusals: tracker/web/__init__.py
    with svc.db.read() as session:
        task = session.get(Task, task_id)
    if task is not None and task.state == "queued":
        flash("Queued again; the worker sends it when the upstream takes it.", "ok")
    elif task is not None and task.state == "rejected":
        flash(f"Sent again, and refused again: {task.failure_reason}", "error")
    else:
        flash("Sent again.", "ok")
    return redirect(url_for("dashboard.detail", task_id=task_id), code=303)
