"""What the service says about itself: `GET /readyz`, `GET /metrics`, `GET /api/workers`.

- `/readyz`: may this process take traffic? The database answers and its schema is current.
  `/healthz` (app.py) says the process is up; a load balancer or an orchestrator asks
  `/readyz` before sending requests, so that a process started before `tracker db upgrade`
  ran (or whose database is down) is kept out of rotation instead of answering 500s. No
  token, like `/healthz`: the answer names no secret, only whether and why not.
- `/metrics` (Prometheus's text format, tracker/metrics.py): every request is timed from the
  first of the app's `before_request` hooks to the response, and labelled by its route
  template (`request.url_rule`), never by its path: the callback route's path holds the
  task's secret token. Requests the admission gate turns away (503 before the app runs) are
  counted by the gate itself (admission.py). A scrape adds the gauges read from the shared
  database (`DatabaseGauges`). With TRACKER_API_TOKEN set, a scrape needs the Bearer token,
  like the API; with TRACKER_METRICS=0 there is no route at all.
- `/api/workers` and the dashboard's workers panel and warning: each worker process keeps a
  row in `workers` (tracker/tasks/heartbeats.py) and rewrites its `last_seen_at` every 10 s;
  a row not rewritten for 60 s (`heartbeats.STALE_AFTER`, from TRACKER_WORKER_STALE_AFTER)
  is stale: the process was killed, or its machine is gone. A clean stop deletes the row.
  With no live row, nothing sends, queries or archives: the dashboard says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from tracker import dbschema, metrics
from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks import heartbeats
from tracker.tasks.models import StateCount, Task, WorkerBeat, utcnow
from tracker.tasks.schema import iso
from tracker.tasks.states import QUERIED_STATES
from tracker.upstream import accounts
from tracker.web import services
from tracker.web.auth import require_bearer
from tracker.web.callbacks import callback_result

log = logging.getLogger(__name__)

bp = Blueprint("monitoring", __name__)  # /readyz, /api/workers
metrics_bp = Blueprint("metrics", __name__)  # /metrics, registered only with metrics on
CALLBACK_ENDPOINT = "callbacks.luma_callback"  # callbacks.py's route
UNMATCHED = "<unmatched>"


def init_app(app: Flask, settings: Settings) -> bool:
    """The dashboard's workers panel, and this process's metrics; whether those are on."""
    # the list page's panel and warning ask for them as they render (templates/_workers.html)
    app.jinja_env.globals["live_workers"] = workers
    app.jinja_env.globals["worker_stale_after"] = int(heartbeats.STALE_AFTER)
    names = tuple(account.name for account in accounts.pool(settings))
    return metrics.setup(settings.metrics, settings.metrics_dir, kind="web", accounts=names)


# -- /readyz --------------------------------------------------------------------------------


def _ready_answer(body: dict[str, object], status: int) -> tuple[Response, int]:
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response, status


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    try:
        with services().db.engine.connect() as conn:
            current = dbschema.current_heads(conn)
    except SQLAlchemyError as exc:
        # the driver's text may name the host and user: its type is enough to act on
        cause = getattr(exc, "orig", None) or exc
        reason = f"the database does not answer ({type(cause).__name__})"
        return _ready_answer({"ready": False, "reason": reason}, 503)
    problem = dbschema.problem(current)
    if problem:
        return _ready_answer({"ready": False, "reason": problem}, 503)
    return _ready_answer({"ready": True}, 200)


# -- /metrics -------------------------------------------------------------------------------


def start_timer() -> None:
    g.metrics_started = time.perf_counter()


def stop_timer(response: Response) -> Response:
    started = g.get("metrics_started")
    if started is not None:
        rule = request.url_rule
        status = response.status_code
        metrics.http_request(
            request.method, rule.rule if rule else UNMATCHED, status, time.perf_counter() - started
        )
        if request.endpoint == CALLBACK_ENDPOINT:
            metrics.callback(callback_result(status, g.get("callback_understood", True)))
    return response


class DatabaseGauges:
    """Gauges read from the shared database at scrape time: the same on every machine."""

    def __init__(self, db: Database, flavor: str) -> None:
        self.db, self.flavor = db, flavor

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily  # imported when metrics are on

        now = utcnow()
        try:
            with self.db.read() as session:
                counts = session.execute(select(StateCount.state, StateCount.count)).all()
                due = session.scalar(
                    select(func.min(Task.next_check_at)).where(
                        Task.state.in_(QUERIED_STATES),
                        Task.upstream == self.flavor,
                        Task.upstream_id.is_not(None),
                    )
                )
                seen = list(session.scalars(select(WorkerBeat.last_seen_at)))
        except SQLAlchemyError as exc:
            log.warning("metrics: the database did not answer (%s)", type(exc).__name__)
            return
        tasks = GaugeMetricFamily("tracker_tasks", "Tasks in each state.", labels=["state"])
        for state, count in counts:
            tasks.add_metric([state], count)
        yield tasks
        lag = max(0.0, (now - due).total_seconds()) if due is not None else 0.0
        yield GaugeMetricFamily(
            "tracker_poll_lag_seconds",
            "How overdue the most overdue task waiting for a query is (0: none is).",
            value=lag,
        )
        stale = heartbeats.stale_before(now)
        live = GaugeMetricFamily(
            "tracker_workers",
            "Worker processes by heartbeat (stale: none for 60 s).",
            labels=["state"],
        )
        live.add_metric(["live"], sum(1 for at in seen if at >= stale))
        live.add_metric(["stale"], sum(1 for at in seen if at < stale))
        yield live


@metrics_bp.get("/metrics")
def scrape() -> ResponseReturnValue:
    refused = require_bearer()
    if refused is not None:
        return refused
    svc = services()
    body, content_type = metrics.render(DatabaseGauges(svc.db, svc.settings.luma_api_flavor))
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


# -- /api/workers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Worker:
    id: str
    host: str
    pid: int
    started_at: datetime
    last_seen_at: datetime
    tasks_claimed: int
    paused_until: datetime | None
    stale: bool

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "started_at": iso(self.started_at),
            "last_seen_at": iso(self.last_seen_at),
            "tasks_claimed": self.tasks_claimed,
            "paused_until": iso(self.paused_until),
            "stale": self.stale,
        }


def workers() -> list[Worker]:
    """Every registered worker, live ones first, each group most recently started first."""
    now = utcnow()
    stale_before = heartbeats.stale_before(now)
    with services().db.read() as session:
        rows = session.scalars(select(WorkerBeat)).all()
        found = [
            Worker(
                id=row.id,
                host=row.host,
                pid=row.pid,
                started_at=row.started_at,
                last_seen_at=row.last_seen_at,
                tasks_claimed=row.tasks_claimed or 0,
                # a pause that has passed is no pause
                paused_until=row.paused_until
                if row.paused_until and row.paused_until > now
                else None,
                stale=row.last_seen_at < stale_before,
            )
            for row in rows
        ]
    return sorted(found, key=lambda w: (w.stale, -w.started_at.timestamp(), w.id))


@bp.get("/api/workers")
def list_workers() -> ResponseReturnValue:
    refused = require_bearer()
    if refused is not None:
        return refused
    return {"workers": [worker.json() for worker in workers()]}, 200
