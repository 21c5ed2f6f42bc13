"""A pytest plugin: a test that starts a process must be marked `slow`.

Why: `pytest -m "not slow"` is the quick loop, and process start-ups (the CLI, gunicorn,
a worker, Chromium) are what make a test slow. Rather than trust each file to remember the
mark, Python's audit hook reports every `subprocess.Popen` (asyncio's and Playwright's
included), and a test without the mark that started one fails with a line saying so.
Browser tests count as slow by their own `browser` mark.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from typing import Any

import pytest

_current: list[str] = []  # the node id of the test running now (none between tests)
_spawned: dict[str, list[str]] = {}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "subprocess.Popen" and _current:
        command = args[1] if len(args) > 1 else args
        _spawned.setdefault(_current[-1], []).append(str(command)[:200])


sys.addaudithook(_audit)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    _current.append(item.nodeid)
    try:
        return (yield)
    finally:
        _current.pop()
        _spawned.pop(item.nodeid, None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    spawned = _spawned.get(item.nodeid)
    if call.when == "teardown" and spawned and not item.get_closest_marker("slow"):
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} started a process but is not marked slow "
            f"(add @pytest.mark.slow or a module pytestmark): {spawned[0]}"
        )
    return report
