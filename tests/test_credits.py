"""The credit balance with Luma's own API: read by the worker at most once a minute into the
database, shown by the dashboard and GET /api/account from there; absent with the proxy."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import requests
from sqlalchemy import update

from lumasim.simulator import Simulator
from tracker.db import Database
from tracker.flows import worker
from tracker.tasks.models import Account


@pytest.fixture
def luma_sim() -> Any:
    simulator = Simulator(flavor="luma", credit_balance=123_456).start()
    yield simulator
    simulator.stop()


def credit_reads(sim: Simulator) -> int:
    return len([r for r in sim.requests if r.route == "credits"])


def test_the_worker_reads_the_balance_once_a_minute_and_the_web_shows_the_stored_value(
    live: Any, luma_sim: Simulator, db: Database, make_settings: Any
) -> None:
    settings = make_settings(luma_api_base=luma_sim.url, luma_api_flavor="luma")
    app = live(luma_api_base=luma_sim.url, luma_api_flavor="luma").url
    before = requests.get(f"{app}/api/account", timeout=5)
    assert before.status_code == 200
    assert before.json() == {"upstream": "luma", "credit_balance": None, "checked_at": None}
    page = requests.get(f"{app}/", timeout=5).text
    assert 'id="account"' in page and "not read yet" in page
    assert credit_reads(luma_sim) == 0  # neither the API nor the page asked the upstream

    worker.run_once(settings, db=db)
    worker.run_once(settings, db=db)  # within the minute: not asked again
    assert credit_reads(luma_sim) == 1
    shown = requests.get(f"{app}/api/account", timeout=5).json()
    assert shown["upstream"] == "luma" and shown["credit_balance"] == 123_456
    assert datetime.fromisoformat(shown["checked_at"].replace("Z", "+00:00")).tzinfo is not None
    assert "$1,234.56" in requests.get(f"{app}/", timeout=5).text

    luma_sim.credit_balance = 99
    with db.write() as session:  # a minute later
        session.execute(update(Account).values(next_check_at=None))
    worker.run_once(settings, db=db)
    assert credit_reads(luma_sim) == 2
    assert requests.get(f"{app}/api/account", timeout=5).json()["credit_balance"] == 99


def test_an_upstream_failure_keeps_the_last_value_and_the_pass_goes_on(
    live: Any, luma_sim: Simulator, db: Database, make_settings: Any
) -> None:
    settings = make_settings(luma_api_base=luma_sim.url, luma_api_flavor="luma")
    app = live(luma_api_base=luma_sim.url, luma_api_flavor="luma").url
    worker.run_once(settings, db=db)
    with db.write() as session:
        session.execute(update(Account).values(next_check_at=None))
    luma_sim.fail_next("credits", status=500)
    worker.run_once(settings, db=db)
    assert credit_reads(luma_sim) == 2
    assert requests.get(f"{app}/api/account", timeout=5).json()["credit_balance"] == 123_456


def test_with_the_proxy_there_is_no_account(
    live: Any, db: Database, make_settings: Any, luma_sim: Simulator
) -> None:
    app = live().url
    answer = requests.get(f"{app}/api/account", timeout=5)
    assert answer.status_code == 404 and answer.json()["error"]
    assert 'id="account"' not in requests.get(f"{app}/", timeout=5).text
    proxy = Simulator().start()
    try:
        worker.run_once(make_settings(luma_api_base=proxy.url), db=db)
        assert [r for r in proxy.requests if r.path == "/credits"] == []
    finally:
        proxy.stop()
