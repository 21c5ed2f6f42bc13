"""Headless Chromium for the dashboard's browser tests: Debian's chromium, driven by Playwright.

No browser is downloaded: Playwright is pointed at /usr/bin/chromium (`make test` installs
the Debian package when it is missing; CHROMIUM overrides the path). Without it the
browser tests are skipped, saying why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Dialogs(list[str]):
    """Every alert/confirm/prompt the page opened (none should open unasked)."""


@pytest.fixture
def dialogs() -> Dialogs:
    return Dialogs()


@pytest.fixture
def page(browser: Any, dialogs: Dialogs) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    tab.set_default_timeout(10_000)

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    refused: list[str] = []  # the CSP (web/security.py) refusing something the pages use
    tab.on(
        "console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None
    )
    yield tab
    context.close()
    assert refused == [], "the pages need nothing the Content-Security-Policy forbids"


@pytest.fixture
def slow_sim() -> Iterator[Any]:
    """An upstream whose tasks stay `processing` until a test completes them."""
    from lumasim.simulator import Simulator

    simulator = Simulator(processing_after=0.2, complete_after=3600).start()
    yield simulator
    simulator.stop()
