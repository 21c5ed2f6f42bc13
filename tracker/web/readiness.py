"""`GET /readyz`: may this process take traffic? The database answers and its schema is current.

`/healthz` says the process is up; a load balancer or an orchestrator asks `/readyz` before
sending requests, so that a process started before `tracker db upgrade` ran (or whose
database is down) is kept out of rotation instead of answering 500s. No token, like
`/healthz`: the answer names no secret, only whether and why not.
"""

from __future__ import annotations

import functools

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Blueprint, jsonify
from sqlalchemy.exc import SQLAlchemyError

from .. import services

bp = Blueprint("readiness", __name__)


@functools.cache
def _script() -> ScriptDirectory:
    from ..cli import alembic_config

    return ScriptDirectory.from_config(alembic_config())


def code_heads() -> frozenset[str]:
    """The revisions this code's migrations end at (read once: they change only with the code)."""
    return frozenset(_script().get_heads())


def _known(revision: str) -> bool:
    try:
        return _script().get_revision(revision) is not None
    except Exception:  # alembic raises for a revision its scripts do not have
        return False


def not_ready(reason: str):  # type: ignore[no-untyped-def]
    response = jsonify({"ready": False, "reason": reason})
    response.headers["Cache-Control"] = "no-store"
    return response, 503


def schema_problem(current: set[str]) -> str | None:
    """None when the schema is at this code's head; else why not, and what to run."""
    heads = code_heads()
    if current == heads:
        return None
    if not current:
        return "migrations pending: the database has none applied; run `tracker db upgrade`"
    at, want = ", ".join(sorted(current)), ", ".join(sorted(heads))
    if all(_known(rev) for rev in current):
        return (
            f"migrations pending: the database is at {at}, this code needs {want}; "
            "run `tracker db upgrade`"
        )
    return f"the database is at {at}, newer than this code ({want})"


@bp.get("/readyz")
def readyz():  # type: ignore[no-untyped-def]
    try:
        with services().db.engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except SQLAlchemyError as exc:
        # the driver's text may name the host and user: its type is enough to act on
        cause = getattr(exc, "orig", None) or exc
        return not_ready(f"the database does not answer ({type(cause).__name__})")
    problem = schema_problem(current)
    if problem:
        return not_ready(problem)
    response = jsonify({"ready": True})
    response.headers["Cache-Control"] = "no-store"
    return response, 200
