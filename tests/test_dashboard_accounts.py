"""Issue 21 on the dashboard: the panel of upstream accounts on the list page, the list by
account (`?account=`), the account column, the form's and the import field's account select,
and the task's account on its page.

The app live in a server thread, the real database (SQLite, and PostgreSQL when set), and the
simulator playing two accounts (one key each). The browser's side:
tests/browser/test_accounts_browser.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from lumasim.simulator import Simulator
from tests.support.dashboard import csrf_of
from tests.support.factory import make_task, make_tasks
from tracker.db import Database
from tracker.flows import worker
from tracker.tasks.models import Task
from tracker.upstream import account_rows, accounts

A, B = "key-alpha-0001", "key-beta-0002"
POOL = (("LUMA_ACCOUNT_ALPHA_KEY", A), ("LUMA_ACCOUNT_BETA_KEY", B))


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(
        api_keys=[A, B],
        flavor="luma",
        balances={A: 123_456, B: 705},
        processing_after=30,
        complete_after=60,
    ).start()
    yield simulator
    simulator.stop()


class Dashboard:
    """The live app on a pool, with a signed-in browser's cookies (a requests session)."""

    def __init__(self, live: Any, make_settings: Any, sim: Simulator | None, **extra: Any):
        common: dict[str, Any] = {"account_env": POOL, "luma_api_key": "", **extra}
        if sim is not None:
            common |= {"luma_api_base": sim.url, "luma_api_flavor": sim.flavor}
        server = live(**common)
        self.url = server.url
        self.settings = make_settings(public_base_url=server.url, **common)
        self.browser = requests.Session()

    def page(self, path: str = "/", **headers: str) -> str:
        answer = self.browser.get(self.url + path, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.text

    def post(self, path: str, data: dict[str, str], page: str = "/") -> requests.Response:
        token = csrf_of(self.page(page))
        return self.browser.post(self.url + path, data={"csrf_token": token, **data}, timeout=10)


def panel_row(page: str, name: str) -> str:
    """The text of the panel's row of account `name`, tags dropped and spaces folded."""
    found = re.search(rf'<tr data-account="{name}".*?</tr>', page, re.S)
    assert found, f"a row for account {name} in the panel"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(0)).split())


def row_ids(page: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr data-task-id="(\d+)"', page)]


def stored(db: Database, task_id: int) -> Task:
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task


# -- the panel ------------------------------------------------------------------------------


def test_the_panel_lists_both_accounts_with_their_numbers_and_refreshes_live(
    live: Any, make_settings: Any, db: Database, sim: Simulator
) -> None:
    app = Dashboard(
        live,
        make_settings,
        sim,
        max_in_flight=4,
        account_env=(*POOL, ("LUMA_ACCOUNT_BETA_DAILY_LIMIT", "20")),
    )
    page = app.page()
    assert 'id="accounts"' in page and 'id="account"' not in page  # no lone balance line
    assert panel_row(page, "alpha") == "alpha luma enabled 0 / 4 0 —"
    assert panel_row(page, "beta") == "beta luma enabled 0 / 4 0 / 20 —"

    worker.run_once(app.settings, db=db)  # reads each account's balance
    for account in ("beta", "beta", "alpha"):  # sent at once: a slot is free
        answer = requests.post(
            f"{app.url}/api/tasks", json={"user_prompt": "a kite", "account": account}, timeout=10
        )
        assert answer.status_code == 201 and answer.json()["state"] == "pending", answer.text
    live_part = app.page("/", **{"X-Live": "1"})  # what the page's live updates fetch
    assert live_part.lstrip().startswith('<section id="task-list"')
    for page in (app.page(), live_part):
        alpha, beta = panel_row(page, "alpha"), panel_row(page, "beta")
        assert alpha.startswith("alpha luma enabled 1 / 4 1 $1,234.56"), alpha
        assert beta.startswith("beta luma enabled 2 / 4 2 / 20 $7.05"), beta
    assert 'data-cents="123456"' in live_part


def test_a_disabled_account_shows_its_reason_and_when(
    live: Any, make_settings: Any, db: Database, sim: Simulator
) -> None:
    app = Dashboard(live, make_settings, sim)
    sim.revoke(B)
    worker.run_once(app.settings, db=db)  # its balance read is refused: beta is disabled
    beta = panel_row(app.page(), "beta")
    assert beta.startswith("beta luma disabled the upstream refused its key"), beta
    assert "just now" in beta and "tracker accounts enable beta" in beta
    assert panel_row(app.page(), "alpha").startswith("alpha luma enabled")


def test_a_paused_account_says_until_when(
    live: Any, make_settings: Any, db: Database, sim: Simulator
) -> None:
    app = Dashboard(live, make_settings, sim)
    alpha = accounts.named(app.settings, "alpha")
    assert alpha is not None
    account_rows.pause(db, alpha, 600, "no credit: insufficient balance")
    shown = panel_row(app.page(), "alpha")
    assert shown.startswith("alpha luma paused until 20") and "UTC" in shown, shown


def test_a_task_waiting_for_its_account_says_why_on_its_page(
    live: Any, make_settings: Any, db: Database, sim: Simulator
) -> None:
    """Issue 21 left the reason on the account only: a pinned task just said "queued"."""
    app = Dashboard(live, make_settings, sim)
    waiting = {name: make_task(db, "queued", account=name).id for name in ("alpha", "beta")}
    sim.revoke(B)
    worker.run_once(app.settings, db=db)  # beta's balance read is refused: beta is disabled
    alpha = accounts.named(app.settings, "alpha")
    assert alpha is not None
    beta_page = app.page(f"/tasks/{waiting['beta']}")
    assert "Waits: this account takes no work now, disabled (the upstream refused its key" in (
        beta_page
    )
    assert "tracker accounts enable beta" in beta_page
    assert "Waits:" not in app.page(f"/tasks/{waiting['alpha']}")  # alpha takes work
    account_rows.pause(db, alpha, 600, "no credit: insufficient balance")
    alpha_page = app.page(f"/tasks/{waiting['alpha']}")
    assert re.search(
        r"Waits: this account takes no work now, paused until 20[0-9-]+ [0-9:]+ UTC", alpha_page
    ), alpha_page
    account_rows.enable(db, alpha)
    assert "Waits:" not in app.page(f"/tasks/{waiting['alpha']}")


def test_one_healthy_default_account_has_no_panel_but_a_disabled_one_has(
    live: Any, make_settings: Any, db: Database
) -> None:
    server = live()  # LUMA_API_KEY alone: account default
    page = requests.get(server.url + "/", timeout=10).text
    assert 'id="accounts"' not in page and 'data-account="' not in page
    assert "<th>Account</th>" not in page and 'name="account"' not in page
    form = requests.get(server.url + "/tasks/new", timeout=10).text
    assert 'name="account"' not in form

    default = accounts.pool(make_settings())[0]
    account_rows.disable(db, default, "the upstream refused its key: 401 Unauthorized")
    shown = panel_row(requests.get(server.url + "/", timeout=10).text, "default")
    assert shown.startswith("default proxy disabled the upstream refused its key: 401")


def test_the_lone_luma_account_keeps_its_balance_line(
    live: Any, make_settings: Any, db: Database
) -> None:
    one = Simulator(flavor="luma", credit_balance=4_200).start()
    try:
        server = live(luma_api_base=one.url, luma_api_flavor="luma")
        worker.run_once(make_settings(luma_api_base=one.url, luma_api_flavor="luma"), db=db)
        page = requests.get(server.url + "/", timeout=10).text
    finally:
        one.stop()
    assert 'id="account"' in page and "$42.00" in page and 'id="accounts"' not in page


# -- the list by account --------------------------------------------------------------------


def test_the_list_by_account_with_the_tabs_and_search(
    live: Any, make_settings: Any, db: Database
) -> None:
    app = Dashboard(live, make_settings, None)
    beta_done = make_task(db, "completed", account="beta", user_prompt="a red kite").id
    alpha_done = make_task(db, "completed", account="alpha", user_prompt="a red kite").id
    beta_failed = make_task(db, "failed", account="beta", user_prompt="a blue boat").id
    waiting = make_task(db, "queued", user_prompt="a red boat").id  # no account yet

    everything = app.page()
    assert row_ids(everything) == [waiting, beta_failed, alpha_done, beta_done]
    assert "<th>Account</th>" in everything  # several accounts: each row says its own
    assert f'<tr data-task-id="{waiting}"' in everything and ">any</span>" in everything

    page = app.page("/?account=beta")
    assert row_ids(page) == [beta_failed, beta_done]
    assert 'id="account-filter"' in page and "Tasks of account <strong>beta</strong>" in page
    assert 'href="/?state=failed&amp;account=beta"' in page  # the tabs keep the account
    assert 'name="account" value="beta"' in page  # so does the search
    assert 'aria-current="true"' in panel_row_html(page, "beta")
    assert row_ids(app.page("/?account=BETA")) == [beta_failed, beta_done]
    assert row_ids(app.page("/?state=failed&account=beta")) == [beta_failed]
    assert row_ids(app.page("/?state=failed&account=alpha")) == []
    assert row_ids(app.page("/?q=red&account=beta")) == [beta_done]
    assert row_ids(app.page(f"/?q={beta_done}&account=alpha")) == []
    assert row_ids(app.page("/?account=alpha")) == [alpha_done]

    unknown = app.page("/?account=gamma")
    assert row_ids(unknown) == [] and "No tasks of account gamma" in unknown
    assert "no account of this name is configured: the accounts are alpha, beta" in unknown
    odd = app.page("/?account=%3Cscript%3E%27%22" + "x" * 500)
    assert row_ids(odd) == [] and "<script>'" not in odd and "&lt;script&gt;" in odd


def panel_row_html(page: str, name: str) -> str:
    found = re.search(rf'<tr data-account="{name}".*?>', page, re.S)
    assert found
    return found.group(0)


def test_the_pages_of_one_account(live: Any, make_settings: Any, db: Database) -> None:
    app = Dashboard(live, make_settings, None)
    beta = make_tasks(db, 30, "completed", account="beta")
    make_tasks(db, 10, "failed", account="alpha")
    beta += make_tasks(db, 30, "failed", account="beta")
    first = app.page("/?account=beta")
    assert row_ids(first) == beta[::-1][:50]
    older = re.search(r'rel="next" href="([^"]+)"', first)
    assert older and "account=beta" in older.group(1)
    assert row_ids(app.page(older.group(1).replace("&amp;", "&"))) == beta[::-1][50:]


# -- the form, the import field, the detail ---------------------------------------------------


def test_the_forms_account_select_pins_the_task(
    live: Any, make_settings: Any, db: Database, sim: Simulator
) -> None:
    app = Dashboard(live, make_settings, sim)
    form = app.page("/tasks/new")
    select = re.search(r'<select id="account" name="account".*?</select>', form, re.S)
    assert select, "an account select"
    assert re.findall(r'<option value="([^"]*)"', select.group(0)) == ["", "alpha", "beta"]
    assert "Any account with room" in select.group(0)

    sent = app.post(
        "/tasks/new", {"kind": "generate", "user_prompt": "a kite", "account": "beta"}, "/tasks/new"
    )
    assert sent.status_code == 200 and "submitted" in sent.text
    task_id = int(sent.url.rsplit("/", 1)[1])
    task = stored(db, task_id)
    assert task.account == "beta" and task.account_pinned
    assert sim.creates_by_key[B] == 1 and not sim.creates_by_key.get(A)
    assert re.search(r"<dt>Account</dt><dd[^>]*><a [^>]*>beta</a> <span[^>]*>\(pinned\)", sent.text)

    anyone = app.post("/tasks/new", {"kind": "generate", "user_prompt": "b"}, "/tasks/new")
    assert anyone.status_code == 200
    assert not stored(db, int(anyone.url.rsplit("/", 1)[1])).account_pinned

    unknown = app.post(
        "/tasks/new", {"kind": "generate", "user_prompt": "c", "account": "gamma"}, "/tasks/new"
    )
    assert unknown.status_code == 400
    assert re.search(r'id="account-error">Account must be one of alpha, beta', unknown.text)

    # a derived task's form needs none (it goes to its source's account) ...
    source = stored(db, task_id)
    derived = app.page(f"/tasks/new?kind=extend&source={source.upstream_id}")
    assert 'name="account"' not in derived
    # ... but a source made elsewhere, with two accounts of its API, needs one
    elsewhere = app.post(
        "/tasks/new",
        {"kind": "extend", "source_task_id": "made-elsewhere", "user_prompt": "on"},
        "/tasks/new",
    )
    assert elsewhere.status_code == 400 and 'id="account-error"' in elsewhere.text
    assert '<select id="account" name="account"' in elsewhere.text
    with db.read() as session:
        assert session.query(Task).count() == 2  # nothing refused was stored


def test_the_import_field_takes_the_account(
    live: Any, make_settings: Any, db: Database, sim: Simulator
) -> None:
    app = Dashboard(live, make_settings, sim)
    page = app.page()
    select = re.search(r'<select id="import_account" name="account".*?</select>', page, re.S)
    assert select, "an account select beside the import field"
    assert re.findall(r'<option value="([^"]*)"', select.group(0)) == ["", "alpha", "beta"]
    made = requests.post(  # a generation made elsewhere, by beta's key
        f"{sim.url}/generations",
        json={"prompt": "a heron", "model": "ray-2"},
        headers={"Authorization": f"Bearer {B}"},
        timeout=10,
    )
    upstream_id = made.json()["id"]

    needed = app.post("/tasks/import", {"upstream_id": upstream_id})
    assert "Nothing imported: Account must name the account" in needed.text
    wrong = app.post("/tasks/import", {"upstream_id": upstream_id, "account": "alpha"})
    assert "Nothing imported: the upstream does not know" in wrong.text
    done = app.post("/tasks/import", {"upstream_id": upstream_id, "account": "beta"})
    assert "Imported as task" in done.text
    with db.read() as session:
        [task] = session.query(Task).all()
    assert task.account == "beta" and task.upstream_id == upstream_id
