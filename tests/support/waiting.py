"""Waiting for what a test expects to happen, and reading a task the way a client does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; fail with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def api_task(base: str, task_id: int, **kwargs: Any) -> dict[str, Any]:
    response = requests.get(f"{base}/api/tasks/{task_id}", timeout=5, **kwargs)
    response.raise_for_status()
    return response.json()
