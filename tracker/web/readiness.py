"""`GET /readyz`: may this process take traffic? The database answers and its schema is current.

`/healthz` says the process is up; a load balancer or an orchestrator asks `/readyz` before
sending requests, so that a process started before `tracker db upgrade` ran (or whose
database is down) is kept out of rotation instead of answering 500s. No token, like
`/healthz`: the answer names no secret, only whether and why not.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError

from tracker import dbschema
from tracker.web.context import services

bp = Blueprint("readiness", __name__)


def _answer(body: dict[str, object], status: int) -> tuple[Response, int]:
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
        return _answer({"ready": False, "reason": reason}, 503)
    problem = dbschema.problem(current)
    if problem:
        return _answer({"ready": False, "reason": problem}, 503)
    return _answer({"ready": True}, 200)
