"""Keep secrets out of logs, events and pages.

Callback tokens travel in URLs (ours, echoed back by the upstream, in access
logs); the upstream key and the admin token are known values. Everything that
is written somewhere a person can read passes through `redact`.
"""

from __future__ import annotations

import logging
import re

CALLBACK_PATH = re.compile(r"(/callbacks/luma/)[^/\s\"'?#&<>\\]+")
_known: set[str] = set()


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


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


def install_logging_filter(logger: logging.Logger | None = None) -> None:
    """Attach the filter to every handler of the root logger (and the given one)."""
    targets = [logging.getLogger()]
    if logger is not None:
        targets.append(logger)
    for target in targets:
        for handler in target.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
