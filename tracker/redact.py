"""Keep secrets out of logs, events and pages.

Callback tokens travel in URLs (ours, echoed back by the upstream, in access
logs); the upstream key and the admin token are known values. Everything that
is written somewhere a person can read passes through `redact`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

CALLBACK_PATH = re.compile(r"(/callbacks/luma/)[^/\s\"'?#&<>\\]+")
_known: set[str] = set()
_formatter = logging.Formatter()


def register(*secrets: str) -> None:
    """Remember secret values (API key, admin token) so that they are masked wherever they show."""
    for secret in secrets:
        if secret and len(secret) >= 6:
            _known.add(secret)


def redact(text: str) -> str:
    text = CALLBACK_PATH.sub(r"\1[redacted]", text)
    for secret in _known:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def install_logging_filter() -> None:
    """Mask secrets in every log record, whatever handler (gunicorn's, pytest's) writes it.

    A record factory, not a handler filter: handlers added later (by gunicorn, by a test's
    log capture) are covered too, and a record is cleaned once, where it is made.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[0] is not None:
            # formatters reuse exc_text when set: a traceback naming a URL is masked too
            record.exc_text = redact(_formatter.formatException(record.exc_info))
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
