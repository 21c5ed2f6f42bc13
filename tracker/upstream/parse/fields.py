"""Readers for single upstream fields: text, URLs, states, progress, reasons.

Each takes any JSON value and answers a clean Python value or None; none raises.
Kept apart from the shape logic (task.py, create.py) so both read fields alike.
"""

from __future__ import annotations

import math
import re
from typing import Any

# upstream state words (lower case, spaces and hyphens as "_") -> our normalized state.
# Luma's own API says queued/dreaming; resellers say succeed/success/running/...; the
# task platform says NOT_START/SUBMITTED/IN_PROGRESS/SUCCESS/FAILURE (upstream.md).
STATE_MAP = {
    "pending": "pending",
    "queued": "pending",
    "queueing": "pending",
    "in_queue": "pending",
    "waiting": "pending",
    "not_start": "pending",
    "submitted": "pending",
    "processing": "processing",
    "dreaming": "processing",
    "in_progress": "processing",
    "running": "processing",
    "generating": "processing",
    "completed": "completed",
    "complete": "completed",
    "succeed": "completed",
    "succeeded": "completed",
    "success": "completed",
    "failed": "failed",
    "failure": "failed",
    "fail": "failed",
    "error": "failed",
    "cancelled": "failed",
    "canceled": "failed",
}

# a day of waiting is already more than any upstream promises; larger is taken as noise
MAX_WAIT_SECONDS = 86_400
_PERCENT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*%?\s*$")


def text(value: Any, limit: int = 4000) -> str | None:
    """A clean, non-empty string (numbers become text), or None."""
    if isinstance(value, str):
        # PostgreSQL text cannot hold NUL, and no database takes a lone UTF-16 surrogate
        value = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8").strip()
        return value[:limit] or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value) if math.isfinite(value) else None
    return None


def url(value: Any) -> str | None:
    """A media field is a URL string or an object holding one."""
    if isinstance(value, dict):
        for key in ("url", "download_url", "video_url"):
            found = url(value.get(key))
            if found:
                return found
        return None
    found = text(value, limit=8000)
    if found and found.lower().startswith(("http://", "https://")):
        return found
    return None


def first_url(obj: Any, *keys: str) -> str | None:
    """The first of `keys` in the object `obj` that holds a URL."""
    if not isinstance(obj, dict):
        return None
    for key in keys:
        found = url(obj.get(key))
        if found:
            return found
    return None


def state_word(value: Any) -> tuple[str | None, str | None]:
    """(the upstream's word as given, our state or None when the word is unknown)."""
    word = text(value, limit=32)
    if word is None:
        return None, None
    key = re.sub(r"[\s\-]+", "_", word.lower())
    return word, STATE_MAP.get(key)


def failure(value: Any) -> str | None:
    """A reason: a string, or an object with reason/message/detail."""
    if isinstance(value, dict):
        return text(value.get("reason")) or text(value.get("message")) or text(value.get("detail"))
    return text(value)


def progress(value: Any) -> int | None:
    """0-100 from a number or a string such as "45%" or "45"; anything else is None."""
    if isinstance(value, bool):
        return None
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        match = _PERCENT.match(value[:32])
        number = float(match.group(1)) if match else None
    if number is None or not math.isfinite(number):
        return None
    return max(0, min(100, round(number)))


def seconds(value: Any) -> int | None:
    """A non-negative wait in whole seconds (number or numeric string), or None."""
    if isinstance(value, bool):
        return None
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip()[:32])
        except ValueError:
            return None
    if number is None or not math.isfinite(number) or number < 0 or number > MAX_WAIT_SECONDS:
        return None
    return math.ceil(number)
