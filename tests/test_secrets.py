"""After every feature is used, no secret is found in a log line, an event, an API answer,
an HTML page or the database: not the upstream key, not the admin token, not a callback token,
not even when the upstream echoes the callback URL back encoded (issue 9, item 11)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import pytest
import requests
from sqlalchemy import select
from werkzeug.wrappers import Request, Response

from lumasim.simulator import Simulator
from tests.support.scripted import raw_task
from tests.support.servers import LiveServer, serve
from tests.support.shown import everything_shows
from tests.support.waiting import api_task, wait_for
from tracker import redact
from tracker.db import Database
from tracker.flows import worker
from tracker.settings import Settings
from tracker.tasks.models import Base
from tracker.web.app import create_app

KEY = "sk-live-UPSTREAM-7f3a9c0b1d2e4f56"
ADMIN = "admin-4c1d8e2b-9a7f-ADMIN-TOKEN"


@pytest.fixture
def keyed_sim() -> Iterator[Simulator]:
    simulator = Simulator(api_key=KEY, processing_after=0.2, complete_after=0.5).start()
    yield simulator
    simulator.stop()


def _stored_text(db: Database) -> str:
    with db.read() as session:
        return "\n".join(
            repr(row)
            for table in Base.metadata.sorted_tables
            for row in session.execute(select(table)).all()
        )


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

    places = {
        "log lines": caplog.text,
        "answers and pages": "\n".join(seen),
        "database": _stored_text(db),
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


# -- a callback token that the upstream echoes back, in any shape (issue 9, item 11) ----------


class EchoUpstream:
    """An upstream that echoes notify_hook back in every shape it can think of."""

    def __init__(self) -> None:
        self.hook = ""
        self.refuse = False
        self.server: LiveServer = serve(lambda _url: self)
        self.url = self.server.url

    def echoes(self) -> dict[str, str]:
        token = self.hook.rsplit("/", 1)[1]
        return {
            "url_encoded": quote(self.hook, safe=""),
            "twice_encoded": quote(quote(self.hook, safe=""), safe=""),
            "form": f"notify_hook={quote_plus(self.hook)}&x=1",
            "json_text": json.dumps({"notify_hook": self.hook}).replace("/", "\\/"),
            "bare": token,
            "quoted": f'token "{token}"',
        }

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = json.loads(request.get_data() or b"null")
        if isinstance(body, dict) and "notify_hook" in body:
            self.hook = body["notify_hook"]
        if self.refuse:
            detail = [{"msg": "bad hook", "input": quote(self.hook, safe="")}]
            answer: dict[str, Any] = {"detail": detail, "echo": self.echoes()}
            status = 422
        elif request.method == "POST":
            answer, status = raw_task("up-echo", echo=self.echoes()), 200
        else:  # a query: the task failed, and the reason names the hook
            reason = f"cannot call {quote(self.hook, safe='')} ({self.hook.rsplit('/', 1)[1]})"
            answer = raw_task("up-echo", "failed", failure_reason=reason, echo=self.echoes())
            status = 200
        return Response(json.dumps(answer), status, content_type="application/json")(
            environ, start_response
        )


@pytest.fixture
def echo() -> Iterator[EchoUpstream]:
    server = EchoUpstream()
    yield server
    server.server.stop()


def test_a_token_echoed_in_any_encoding_is_never_stored(db, live, echo: EchoUpstream) -> None:  # type: ignore[no-untyped-def]
    app = live(luma_api_base=echo.url).url
    task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a fox"}, timeout=5).json()
    token = echo.hook.rsplit("/", 1)[1]
    # the create answer (above), a callback and a query answer all echo it
    callback = {"id": "up-echo", "state": "processing", "echo": echo.echoes()}
    assert requests.post(echo.hook, json=callback, timeout=5).status_code == 200
    assert (
        requests.post(f"{app}/api/tasks/{task['id']}/poll", json={}, timeout=5).status_code == 200
    )

    shown = everything_shows(app, task["id"])
    assert shown["state"] == "failed"
    assert shown["failure_reason"].startswith("cannot call ")
    assert [e["source"] for e in shown["events"]][-2:] == ["callback", "poll"]
    assert shown["events"][-3]["payload"]["answer"]["echo"]  # the create answer is kept too
    page = requests.get(f"{app}/tasks/{task['id']}", timeout=5).text
    answer = json.dumps(shown)
    stored = _stored_text(db)
    assert answer.count("[redacted]") >= 3 * 6  # each echo, in each of the three events
    for where, text in (("answer", answer), ("page", page), ("database", stored)):
        assert token not in text, f"the token is in the {where}"


def test_a_refusal_echoing_the_token_encoded_keeps_none(db, live, echo: EchoUpstream) -> None:  # type: ignore[no-untyped-def]
    echo.refuse = True
    app = live(luma_api_base=echo.url).url
    task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a fox"}, timeout=5).json()
    token = echo.hook.rsplit("/", 1)[1]
    assert task["state"] == "rejected"
    assert "[redacted]" in task["failure_reason"]
    for text in (json.dumps(task), _stored_text(db)):
        assert token not in text


def test_log_lines_mask_an_encoded_callback_url(caplog: pytest.LogCaptureFixture) -> None:
    redact.install_logging_filter()
    token = "Zk3_x-9QmW2bYt7LpV0aRc4sNd8eHf1gJh5iKj6lMn0"
    caplog.set_level(logging.INFO)
    hook = f"https://tracker.example/callbacks/luma/{token}"
    logging.getLogger("tracker.test").info(
        "the upstream said: %s / %s", quote(hook, safe=""), hook.replace("/", "\\/")
    )
    assert token not in caplog.text
    assert caplog.text.count("[redacted]") == 2


def test_a_refusal_keeps_no_token_and_takes_no_callback(db, live, upstream) -> None:  # type: ignore[no-untyped-def]
    """A validator that echoes its input (pydantic's 422) must not leak the callback URL."""

    def echo(environ: dict[str, Any], start_response: Any) -> Any:
        body = json.loads(Request(environ).get_data() or b"null")
        upstream.seen.append(type("Seen", (), {"method": "POST", "body": body})())
        detail = [{"type": "value_error", "msg": "bad request", "input": body}]
        return Response(json.dumps({"detail": detail}), 422, content_type="application/json")(
            environ, start_response
        )

    app = live(luma_api_base=upstream.url).url
    original = upstream.__class__.__call__
    upstream.__class__.__call__ = lambda self, environ, start: echo(environ, start)
    try:
        task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a fox"}, timeout=5).json()
    finally:
        upstream.__class__.__call__ = original
    hook = upstream.seen[-1].body["notify_hook"]
    token = hook.rsplit("/", 1)[1]
    assert task["state"] == "rejected"
    assert token not in json.dumps(api_task(app, task["id"]))
    forged = {"state": "completed", "video": {"url": "https://evil.example/x.mp4"}}
    assert requests.post(hook, json=forged, timeout=5).status_code == 404
    assert api_task(app, task["id"])["state"] == "rejected"
