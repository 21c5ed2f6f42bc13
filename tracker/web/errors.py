"""Errors as JSON with a clear message: never a stack trace, never a secret."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def error(status: int, message: str, field: str | None = None):  # type: ignore[no-untyped-def]
    body: dict[str, str] = {"error": message}
    if field is not None:
        body["field"] = field
    return jsonify(body), status


def _wants_json() -> bool:
    return not request.accept_mimetypes.accept_html or request.path.startswith(
        ("/api/", "/callbacks/")
    )


def init_app(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        if not _wants_json():
            return exc
        messages = {
            413: "the request body is too large",
            404: "not found",
            405: "method not allowed",
        }
        response, status = error(
            exc.code or 500, messages.get(exc.code or 0, exc.description or exc.name)
        )
        for name, value in exc.get_headers():  # Allow on 405, for one
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeout)  # every pooled connection busy (waiting for a locked SQLite)
    def database_down(exc: Exception):  # type: ignore[no-untyped-def]
        # the sender (the upstream for callbacks) should try again; nothing was half-written
        orig = getattr(exc, "orig", None)
        log.error("database unavailable: %s", type(orig or exc).__name__)
        response, status = error(503, "the database is unavailable; try again shortly")
        response.headers["Retry-After"] = "5"
        return response, status

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal error; it has been logged")
