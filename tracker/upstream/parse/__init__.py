"""Turn any upstream body into a small typed Update, or say it was not understood.

Nothing else in the project looks inside upstream JSON. `parse` reads a task from any
answer (query, callback, create); `parse_batch` a batch query's answer; `parse_create`
tells whether a create's 2xx answer was accepted, refused, or left the outcome unknown;
`error_reason` the upstream's words on a refusal. None of them raises, whatever the input.
"""

from __future__ import annotations

from typing import Any

from tracker import jsontext
from tracker.upstream.parse.create import CreateAnswer, error_reason, parse_create
from tracker.upstream.parse.task import NOT_UNDERSTOOD, Update, parse, parse_batch

__all__ = [
    "NOT_UNDERSTOOD",
    "CreateAnswer",
    "Update",
    "error_reason",
    "parse",
    "parse_batch",
    "parse_body",
    "parse_create",
]


def parse_body(raw: bytes) -> tuple[Update, Any]:
    """A callback's raw body -> (what it says, what to store as its payload).

    Whatever the body, both come back: JSON nested too deeply or holding NaN/Infinity is
    not understood (the task is queried instead) and kept as text or with nulls.
    """
    read = jsontext.read_lenient(raw) if raw else jsontext.Lenient(None, jsontext.NOT_JSON)
    if read.value is None:
        return NOT_UNDERSTOOD, raw.decode("utf-8", "replace") or None
    return (NOT_UNDERSTOOD if read.problem else parse(read.value)), read.value
