"""Turn any upstream body into a small typed Update, or say it was not understood.

Nothing else in the project looks inside upstream JSON. `parse` reads a task from any
answer (query, callback, create); `parse_batch` a batch query's answer; `parse_create`
tells whether a create's 2xx answer was accepted, refused, or left the outcome unknown;
`error_reason` the upstream's words on a refusal. None of them raises, whatever the input.
"""

from __future__ import annotations

from .create import CreateAnswer, error_reason, parse_create
from .task import NOT_UNDERSTOOD, Update, parse, parse_batch

__all__ = [
    "NOT_UNDERSTOOD",
    "CreateAnswer",
    "Update",
    "error_reason",
    "parse",
    "parse_batch",
    "parse_create",
]
