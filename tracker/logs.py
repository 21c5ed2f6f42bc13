"""Log lines as text for people (the default) or, with TRACKER_LOG_FORMAT=json, one JSON
object a line for a log pipeline: `time`, `level`, `logger`, `message`, and `request_id`
on lines written while a request is handled, `task_id` on lines about a task.

- The web process, the worker and every `tracker` command write through `configure`;
  gunicorn's own lines (the master's, the error log, the access log) get the same
  formatter from gunicorn.conf.py's logger class.
- A request's id is the `X-Request-ID` it came with (when it is a sane token), else a new
  one; it is sent back in the answer's `X-Request-ID` (`RequestIds`, a WSGI wrapper).
- A line is about a task when the code says so (`about_task`, or `extra={"task_id": n}`),
  when the request names one (`/api/tasks/<task_id>`), or when its message says
  "task <n>", as the worker's and the archiver's lines do.
- Secrets are masked where every record is made (tracker/redact.py's record factory), so
  both formats carry the same masked text.

Standard library only, on purpose: the gunicorn master loads this file by its path before
gevent patches the workers (see gunicorn.conf.py), so it must not import the tracker.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HEADER = "X-Request-ID"
ENVIRON_KEY = "tracker.request_id"
TASK_ENVIRON_KEY = "tracker.task_id"
# what an incoming X-Request-ID may be: a UUID, a trace id, a load balancer's token
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,127}")
_ABOUT_TASK = re.compile(r"\btasks? #?(\d{1,10})\b")
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "task_id",
}

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
task_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("task_id", default=None)


def log_format(env: Any = None) -> str:
    """TRACKER_LOG_FORMAT, lower case; settings.load refuses values other than FORMATS."""
    env = os.environ if env is None else env
    return (env.get("TRACKER_LOG_FORMAT", "") or "text").strip().lower()


class JsonFormatter(logging.Formatter):
    """One JSON object a line; a traceback goes into `exception` (masked, like the message)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # given with extra={...} (gunicorn's access line), else the context's (install_context)
        req = getattr(record, "request_id", None) or getattr(record, "_ctx_request_id", None)
        if req:
            line["request_id"] = req
        task = getattr(record, "task_id", None)
        if task is None:
            task = getattr(record, "_ctx_task_id", None)
        if task is None:
            found = _ABOUT_TASK.search(line["message"])
            task = int(found.group(1)) if found else None
        if task is not None:
            line["task_id"] = task
        for key, value in record.__dict__.items():  # extra={...} fields, as given
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value if isinstance(value, int | float | bool | str) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(fmt: str | None = None) -> logging.Formatter:
    return JsonFormatter() if (fmt or log_format()) == "json" else logging.Formatter(TEXT_FORMAT)


def factory_installed(mark: str) -> bool:
    """Whether a record factory carrying `mark` is anywhere in the chain now in place.

    Factories wrap the one before them (`.current`); each installer looks down the whole
    chain, not only at the top, or two of them installed in turn (every create_app does)
    would wrap each other again and again until a record's making overflows the stack.
    """
    factory: object = logging.getLogRecordFactory()
    while factory is not None:
        if getattr(factory, mark, False):
            return True
        factory = getattr(factory, "current", None)
    return False


def install_context() -> None:
    """Every record made from now on carries the current request's and task's ids."""
    if factory_installed("adds_ids"):
        return
    logging.setLogRecordFactory(_ContextFactory(logging.getLogRecordFactory()))


class _ContextFactory:
    """The record factory that was in place, then the current request's and task's ids."""

    adds_ids = True  # the mark by which install_context knows it is in place

    def __init__(self, current: Callable[..., logging.LogRecord]) -> None:
        self.current = current

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.current(*args, **kwargs)
        # names of their own: extra={"request_id": ...} must not collide with these
        record._ctx_request_id = request_id.get()
        record._ctx_task_id = task_id.get()
        return record


def configure(level: int = logging.INFO, fmt: str | None = None) -> None:
    """The root logger writes to stderr in the chosen format, as logging.basicConfig would.

    Like basicConfig, nothing is added when the root logger has a handler already: the one
    gunicorn's master put there (JSON mode, gunicorn.conf.py), or a test runner's capture.
    """
    root = logging.getLogger()
    root.setLevel(level)
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter(fmt))
        root.addHandler(handler)
    logging.captureWarnings(True)  # warnings are lines too: in the same format
    install_context()


def use_json(loggers: Iterable[logging.Logger]) -> None:
    """Put the JSON formatter on these loggers' handlers (gunicorn's error and access logs)."""
    for logger in loggers:
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())


@contextmanager
def about_task(task: int | None) -> Iterator[None]:
    """Lines written inside carry `task_id`."""
    token = task_id.set(task)
    try:
        yield
    finally:
        task_id.reset(token)


def new_request_id(given: str | None, allowed: Callable[[str], bool] = bool) -> str:
    """The client's X-Request-ID when it is a sane token (and `allowed`), else a fresh one."""
    if given and _SANE_ID.fullmatch(given.strip()) and allowed(given.strip()):
        return given.strip()
    return secrets.token_hex(16)


class RequestIds:
    """WSGI wrapper: each request gets an id, in its log lines and its answer's X-Request-ID."""

    def __init__(self, app: Callable[..., Any], allowed: Callable[[str], bool] = bool) -> None:
        self.app, self.allowed = app, allowed

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        rid = new_request_id(environ.get("HTTP_X_REQUEST_ID"), self.allowed)
        environ[ENVIRON_KEY] = rid  # for gunicorn's access line, written after the request

        def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers = [(k, v) for k, v in headers if k.lower() != "x-request-id"]
            headers.append((HEADER, rid))
            return start_response(status, headers, exc_info)

        tokens = request_id.set(rid), task_id.set(None)
        try:
            return self.app(environ, respond)
        finally:
            task_id.reset(tokens[1])
            request_id.reset(tokens[0])
