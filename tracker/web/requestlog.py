"""Request ids and task ids on the web process's log lines (see tracker/logs.py)."""

from __future__ import annotations

from flask import Flask, request

from tracker import logs, redact


def _note_task() -> None:
    """A request about one task (/api/tasks/<task_id>, /tasks/<task_id>...): its lines say so."""
    task = (request.view_args or {}).get("task_id")
    if isinstance(task, int):
        logs.task_id.set(task)  # RequestIds puts the previous value back after the request
        request.environ[logs.TASK_ENVIRON_KEY] = task  # for gunicorn's access line


def _not_secret(given: str) -> bool:
    return redact.redact(given) == given


def init_app(app: Flask) -> None:
    logs.install_context()
    # an incoming id that holds a secret (a token pasted by mistake) is replaced, not logged
    ids = logs.RequestIds(app.wsgi_app, _not_secret)
    # Flask documents this assignment as the way to add WSGI middleware, but types wsgi_app
    # as a method, which mypy will not let be assigned
    app.wsgi_app = ids  # type: ignore[method-assign]  # Flask's documented middleware hook
    app.before_request(_note_task)
