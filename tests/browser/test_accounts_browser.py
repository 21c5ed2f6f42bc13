"""Issue 21 in headless Chromium: with two upstream accounts the list page shows the panel of
accounts, a name in it filters the list to that account's tasks, and the panel follows the
page's live updates (an account disabled meanwhile says so without a reload). The pages'
server side: tests/test_dashboard_accounts.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.factory import make_task
from tracker.db import Database
from tracker.upstream import account_rows, accounts

pytestmark = pytest.mark.browser

POOL = (("LUMA_ACCOUNT_ALPHA_KEY", "key-alpha-0001"), ("LUMA_ACCOUNT_BETA_KEY", "key-beta-0002"))


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def ids_on(page: Any) -> list[int]:
    return [
        int(x)
        for x in page.locator("tr[data-task-id]").evaluate_all(
            "rows => rows.map(r => r.dataset.taskId)"
        )
    ]


def test_the_panel_shows_the_accounts_filters_the_list_and_follows_live_updates(
    live: Callable[..., Any], make_settings: Callable[..., Any], db: Database, page: Any
) -> None:
    server = live(account_env=POOL, luma_api_key="", max_in_flight=3)
    settings = make_settings(account_env=POOL, luma_api_key="")
    alpha_task = make_task(db, "processing", account="alpha", user_prompt="a red kite").id
    beta_done = make_task(db, "completed", account="beta", user_prompt="a blue boat").id
    beta_failed = make_task(db, "failed", account="beta", user_prompt="a green hill").id

    page.goto(server.url + "/")
    panel = page.locator("#accounts")
    expect(panel).to_be_visible()
    expect(panel.locator("tr[data-account]")).to_have_count(2)
    alpha = panel.locator('tr[data-account="alpha"]')
    expect(alpha).to_contain_text("enabled")
    expect(alpha.locator('td[data-label="In flight"]')).to_have_text("1 / 3")
    expect(page.locator(f'tr[data-task-id="{alpha_task}"] td[data-label="Account"]')).to_have_text(
        "alpha"
    )
    assert ids_on(page) == [beta_failed, beta_done, alpha_task]

    panel.locator('tr[data-account="beta"] a', has_text="beta").click()
    page.wait_for_url("**/?account=beta")
    assert ids_on(page) == [beta_failed, beta_done]
    expect(page.locator("#account-filter")).to_contain_text("Tasks of account beta")
    page.locator(".tabs a", has_text="failed").click()  # the tabs keep the account
    page.wait_for_url("**/?state=failed&account=beta")
    assert ids_on(page) == [beta_failed]

    # the live updates refresh the panel and the filtered list
    expect(page.locator("[data-live-status]")).to_contain_text("Live")
    beta = accounts.named(settings, "beta")
    assert beta is not None
    account_rows.disable(db, beta, "the upstream refused its key: 401 Unauthorized")
    late = make_task(db, "failed", account="beta", user_prompt="late").id
    make_task(db, "failed", account="alpha", user_prompt="not beta's")
    expect(panel.locator('tr[data-account="beta"]')).to_contain_text(
        "disabled the upstream refused its key: 401 Unauthorized", timeout=8000
    )
    expect(page.locator(f'tr[data-task-id="{late}"]')).to_be_visible(timeout=8000)
    assert ids_on(page) == [late, beta_failed]

    page.locator("#account-filter a", has_text="All accounts").click()
    page.wait_for_url("**/?state=failed")
    expect(page.locator("tr[data-task-id]")).to_have_count(3)
