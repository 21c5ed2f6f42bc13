"""After every feature is used, no secret is found in a log line, an event, an API answer,
an HTML page or the database: not the upstream key, not the admin token, not a callback token."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import select

from lumasim.simulator import Simulator
from tests.support.waiting import api_task, wait_for
from tracker import create_app
from tracker.db import Database
from tracker.flows import worker
from tracker.settings import Settings
from tracker.tasks.models import Base

KEY = "sk-live-UPSTREAM-7f3a9c0b1d2e4f56"
ADMIN = "admin-4c1d8e2b-9a7f-ADMIN-TOKEN"


@pytest.fixture
def keyed_sim() -> Iterator[Simulator]:
    simulator = Simulator(api_key=KEY, processing_after=0.2, complete_after=0.5).start()
    yield simulator
    simulator.stop()


def test_no_secret_leaks_anywhere(  # type: ignore[no-untyped-def]
    db, live, make_settings, keyed_sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    overrides = {"luma_api_base": keyed_sim.url, "luma_api_key": KEY, "api_token": ADMIN}
    app = live(**overrides).url
    settings = make_settings(public_base_url=app, **overrides)
    seen: list[str] = []  # every answer's headers and body

    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {ADMIN}"

    def keep(response: requests.Response) -> requests.Response:
        seen.append(str(dict(response.headers)))
        seen.append(response.text)
        return response

    def task(task_id: int) -> dict:  # type: ignore[type-arg]
        return api_task(app, task_id, headers={"Authorization": f"Bearer {ADMIN}"})

    # submit, complete by callbacks, extend, fail, refuse-then-resend, poll by hand
    first = keep(api.post(f"{app}/api/tasks", json={"user_prompt": "a lantern at dusk"})).json()
    done = wait_for(lambda: (t := task(first["id"]))["state"] == "completed" and t)
    extend = keep(
        api.post(
            f"{app}/api/tasks",
            json={"source_task_id": done["upstream_id"], "user_prompt": "the lantern goes out"},
        )
    ).json()
    failing = keep(api.post(f"{app}/api/tasks", json={"user_prompt": "this must fail"})).json()
    keyed_sim.fail_next("create", status=500)
    refused = keep(api.post(f"{app}/api/tasks", json={"user_prompt": "unlucky one"})).json()
    assert refused["state"] == "rejected"
    keep(api.post(f"{app}/api/tasks/{refused['id']}/resend", json={}))
    keep(api.post(f"{app}/api/tasks/{first['id']}/poll", json={}))
    for task_id in (extend["id"], failing["id"], refused["id"]):
        wait_for(lambda task_id=task_id: task(task_id)["state"] in ("completed", "failed"))

    # callbacks: garbage to a real token, anything to a wrong one
    hooks = [t.notify_hook for t in keyed_sim.tasks.values() if t.notify_hook]
    keep(requests.post(hooks[0], data=b"garbage", timeout=5))
    keep(requests.post(hooks[0] + "x", json={"state": "completed"}, timeout=5))

    # the worker: a pass polls and archives
    worker.run_once(settings, db=db)
    archived = wait_for(lambda: (t := task(first["id"]))["media_url"] and t)

    # everything a person reads: the API, the pages (signed in, and not), the media
    keep(api.get(f"{app}/api/tasks"))
    for task_id in (first["id"], extend["id"], failing["id"], refused["id"]):
        keep(api.get(f"{app}/api/tasks/{task_id}"))
    keep(api.get(app + archived["media_url"]))
    keep(api.get(f"{app}/api/openapi.json"))
    keep(requests.get(f"{app}/api/tasks", timeout=5))  # 401
    pages = requests.Session()
    keep(pages.get(f"{app}/", timeout=5))  # the login form
    keep(pages.post(f"{app}/login", data={"token": "wrong"}, timeout=5))
    login = keep(pages.get(f"{app}/login", timeout=5))
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    form = {"token": ADMIN} | ({"csrf_token": csrf.group(1)} if csrf else {})
    assert keep(pages.post(f"{app}/login", data=form, timeout=5)).ok
    for path in ("/", "/?state=completed", "/?q=lantern", "/tasks/new", "/tasks/999999"):
        keep(pages.get(app + path, timeout=5))
    for task_id in (first["id"], extend["id"], failing["id"], refused["id"]):
        keep(pages.get(f"{app}/tasks/{task_id}", timeout=5))

    tokens = [urlsplit(hook).path.rsplit("/", 1)[1] for hook in hooks]
    assert len(tokens) >= 4 and all(len(t) >= 22 for t in tokens)

    with db.read() as session:
        rows = [
            repr(row)
            for table in Base.metadata.sorted_tables
            for row in session.execute(select(table)).all()
        ]
    places = {
        "log lines": caplog.text,
        "answers and pages": "\n".join(seen),
        "database": "\n".join(rows),
    }
    # each place holds what it should (the search below is not over empty text)
    assert "lantern" in places["answers and pages"] and "lantern" in places["database"]
    assert "archived task" in places["log lines"]
    for where, text in places.items():
        for secret in (KEY, ADMIN, *tokens):
            assert secret not in text, f"a secret ({secret[:6]}…) was found in the {where}"


def test_the_shortest_token_allowed_is_masked_in_logs(
    make_settings: Callable[..., Settings], db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    token = "0123456789abcdef"  # 16 characters
    create_app(make_settings(api_token=token), db=db)
    with caplog.at_level(logging.INFO):
        logging.getLogger("tracker.test").info("someone sent %s", token)
    assert token not in caplog.text and "[redacted]" in caplog.text
