"""What a person sees of a task: its page, its live refresh and its API answer, all working,
the answer strict JSON (used where hostile bodies from the upstream are stored)."""

from __future__ import annotations

import json
from typing import Any

import requests

LIVE = {"X-Live": "1"}


def strict(text: str) -> Any:
    """What a strict JSON parser (a browser's, Go's) accepts: no NaN/Infinity, valid Unicode."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    text.encode("utf-8")  # a lone surrogate cannot be encoded
    return json.loads(text, parse_constant=refuse)


def everything_shows(app: str, task_id: int) -> dict[str, Any]:
    """The task's page, its live refresh and its API answer all work; the answer is strict."""
    page = requests.get(f"{app}/tasks/{task_id}", timeout=10)
    assert page.status_code == 200, page.text[:200]
    partial = requests.get(f"{app}/tasks/{task_id}", headers=LIVE, timeout=10)
    assert partial.status_code == 200, partial.text[:200]
    answer = requests.get(f"{app}/api/tasks/{task_id}", timeout=10)
    assert answer.status_code == 200, answer.text[:200]
    return strict(answer.content.decode("utf-8"))
