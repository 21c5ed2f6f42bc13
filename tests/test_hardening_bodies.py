"""Issue 9, items 2, 8 (deep API bodies), 10 and 11: hostile bodies, forged logs, echoed tokens.

Each test drives the service over real HTTP (the app in a server thread; gunicorn as a real
process for its access log), then looks at what is stored and at what a person sees.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import requests
from sqlalchemy import select
from werkzeug.wrappers import Request, Response

from tests.support.scripted import Reply, ScriptedUpstream, raw_task
from tests.support.servers import LiveServer, serve
from tests.support.waiting import wait_for
from tracker import redact
from tracker.db import Database
from tracker.tasks.models import Base, Task, TaskEvent, utcnow

ROOT = Path(__file__).resolve().parent.parent
JSON = {"Content-Type": "application/json"}
LIVE = {"X-Live": "1"}


def strict(text: str) -> Any:
    """What a strict JSON parser (a browser's, Go's) accepts: no NaN/Infinity, valid Unicode."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    text.encode("utf-8")  # a lone surrogate cannot be encoded
    return json.loads(text, parse_constant=refuse)


def _submit(live, upstream: ScriptedUpstream, upstream_id: str = "up-1") -> tuple[str, int, str]:  # type: ignore[no-untyped-def]
    app = live(luma_api_base=upstream.url).url
    upstream.then(Reply(200, raw_task(upstream_id)))
    task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a fox"}, timeout=5).json()
    return app, task["id"], upstream.posts()[-1].body["notify_hook"]


def _everything_shows(app: str, task_id: int) -> dict[str, Any]:
    """The task's page, its live refresh and its API answer all work; the answer is strict."""
    page = requests.get(f"{app}/tasks/{task_id}", timeout=10)
    assert page.status_code == 200, page.text[:200]
    partial = requests.get(f"{app}/tasks/{task_id}", headers=LIVE, timeout=10)
    assert partial.status_code == 200, partial.text[:200]
    answer = requests.get(f"{app}/api/tasks/{task_id}", timeout=10)
    assert answer.status_code == 200, answer.text[:200]
    return strict(answer.content.decode("utf-8"))


def _last_callback(db: Database, task_id: int) -> TaskEvent:
    with db.read() as session:
        events = session.scalars(
            select(TaskEvent)
            .where(TaskEvent.task_id == task_id, TaskEvent.source == "callback")
            .order_by(TaskEvent.id)
        ).all()
        assert events, "the callback was stored"
        return events[-1]


# -- item 2: one callback must not break a task for good ----------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 1000 + b'"completed"' + b"}" * 1000,
        b"[" * 100_000,
    ],
    ids=["5000-arrays", "1000-objects", "100000-open"],
)
def test_a_deeply_nested_callback_is_kept_as_not_understood(
    db, live, upstream, body: bytes
) -> None:  # type: ignore[no-untyped-def]
    app, task_id, hook = _submit(live, upstream)
    response = requests.post(hook, data=body, headers=JSON, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"received": True, "understood": False}
    event = _last_callback(db, task_id)
    assert event.note == "not understood; the task will be queried"
    stored = json.loads(event.payload)  # stored as JSON (a string of the raw text): it loads
    assert isinstance(stored, str) and stored.startswith("[[[" if body[0:1] == b"[" else '{"a":')
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task.state == "pending" and task.next_check_at <= utcnow()  # queried instead
    shown = _everything_shows(app, task_id)
    assert shown["events"][-1]["payload"] == stored


@pytest.mark.parametrize(
    "body",
    [b'"\\ud800"', b'{"id": "up-1", "state": "processing", "note": "a \\ud800 b", "\\udfff": 1}'],
    ids=["bare", "inside"],
)
def test_a_lone_surrogate_in_a_callback_is_stored_escaped(db, live, upstream, body: bytes) -> None:  # type: ignore[no-untyped-def]
    app, task_id, hook = _submit(live, upstream)
    response = requests.post(hook, data=body, headers=JSON, timeout=10)
    assert response.status_code == 200
    event = _last_callback(db, task_id)
    assert event.payload.isascii() and "\\ud800" in event.payload  # escaped, not replaced
    json.loads(event.payload)
    shown = _everything_shows(app, task_id)
    page = requests.get(f"{app}/tasks/{task_id}", timeout=10).text
    assert "\ufffd" in page  # shown as the replacement character
    assert "\ufffd" in json.dumps(shown["events"][-1]["payload"], ensure_ascii=False)
    if b"processing" in body:
        assert shown["state"] == "processing"  # understood as before: only the text is odd


def test_non_finite_numbers_become_null_and_the_task_is_queried(db, live, upstream) -> None:  # type: ignore[no-untyped-def]
    app, task_id, hook = _submit(live, upstream)
    body = (
        b'{"id": "up-1", "state": "completed", "video": {"url": "https://cdn.example/v.mp4"},'
        b' "progress": 1e999, "ratio": NaN, "low": -Infinity}'
    )
    response = requests.post(hook, data=body, headers=JSON, timeout=10)
    assert response.status_code == 200
    assert response.json()["understood"] is False
    event = _last_callback(db, task_id)
    stored = strict(event.payload)
    assert (stored["progress"], stored["ratio"], stored["low"]) == (None, None, None)
    shown = _everything_shows(app, task_id)
    assert shown["state"] == "pending"  # not taken at its word: asked instead
    assert shown["events"][-1]["payload"]["progress"] is None
    with db.read() as session:
        assert session.get(Task, task_id).next_check_at <= utcnow()


def test_query_answers_with_non_finite_numbers_are_stored_strict(db, live, upstream) -> None:  # type: ignore[no-untyped-def]
    app, task_id, _ = _submit(live, upstream)
    answer = '{"id": "up-1", "state": "processing", "progress": NaN, "eta": 1e999}'
    upstream.then(Reply(200, answer, content_type="application/json"))
    assert requests.post(f"{app}/api/tasks/{task_id}/poll", json={}, timeout=10).status_code == 200
    shown = _everything_shows(app, task_id)
    assert shown["state"] == "processing"
    assert shown["events"][-1]["payload"] == {
        "id": "up-1",
        "state": "processing",
        "progress": None,
        "eta": None,
    }


@pytest.mark.parametrize(
    "payload",
    ["[" * 5000 + "]" * 5000, '{"a": Infinity, "b": NaN}', "plain text, not JSON", "…[truncated"],
    ids=["deep", "non-finite", "text", "cut"],
)
def test_any_stored_payload_still_shows(db, live, upstream, payload: str) -> None:  # type: ignore[no-untyped-def]
    """Rows written before this fix (or by anything else) never break a page or an answer."""
    app, task_id, _ = _submit(live, upstream)
    with db.write() as session:
        session.add(TaskEvent(task_id=task_id, source="callback", payload=payload))
    shown = _everything_shows(app, task_id)
    assert shown["events"][-1]["payload"] in (payload, {"a": None, "b": None})


# -- item 8: the JSON API's body reader ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b"[" * 100_000, None, "nested more than"),
        (b'{"user_prompt": ' + b"[" * 2000 + b"]" * 2000 + b"}", None, "nested more than"),
        (b'{"user_prompt": "a fox", "loop": NaN}', "loop", "finite"),
        (b'{"user_prompt": "a fox", "duration": 1e999}', "duration", "finite"),
        (b'{"user_prompt": "a fox \\udc00"}', "user_prompt", "surrogate"),
        (b'{"user_prompt": "a fox"', None, "not valid JSON"),
    ],
    ids=["100000-open", "deep-value", "nan", "1e999", "surrogate", "cut"],
)
def test_api_bodies_get_a_400_naming_the_problem(  # type: ignore[no-untyped-def]
    db, live, upstream, body: bytes, field: str | None, words: str
) -> None:
    app = live(luma_api_base=upstream.url).url
    response = requests.post(f"{app}/api/tasks", data=body, headers=JSON, timeout=10)
    assert response.status_code == 400
    assert words in response.json()["error"]
    assert response.json().get("field") == field
    assert requests.get(f"{app}/api/tasks", timeout=5).json()["tasks"] == []


# -- item 11: a token echoed in any shape is masked ------------------------------------------


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


def _stored_text(db: Database) -> str:
    with db.read() as session:
        return "\n".join(
            repr(row)
            for table in Base.metadata.sorted_tables
            for row in session.execute(select(table)).all()
        )


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

    shown = _everything_shows(app, task["id"])
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


# -- item 10: log lines cannot be forged -----------------------------------------------------

FORGED = b"/x%0a127.0.0.1%20%22GET%20/forged%22%20200%1b[31m%e2%80%ae"


def test_app_log_values_are_escaped(caplog: pytest.LogCaptureFixture) -> None:
    redact.install_logging_filter()
    caplog.set_level(logging.INFO)
    value = '/x\n127.0.0.1 "GET /forged" 200\x1b[31m\u202eé'
    logging.getLogger("tracker.test").warning("query of %s failed: %s", 7, value)
    (record,) = [r for r in caplog.records if r.name == "tracker.test"]
    line = record.getMessage()
    assert "\n" not in line and "\x1b" not in line and "\u202e" not in line
    assert line == 'query of 7 failed: /x\\n127.0.0.1 "GET /forged" 200\\x1b[31m\\u202eé'


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_the_access_log_cannot_be_forged(db: Database, tmp_path: Path) -> None:
    """gunicorn with the Procfile's config, as in production: one request, one escaped line,
    and no callback token in it."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "LUMA_"))}
    env.pop("PUBLIC_BASE_URL", None)
    env.update(DATABASE_URL=db.url, PORT=str(port), WEB_CONCURRENCY="1", TRACKER_MEDIA_DIR="")
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app", "--config", "gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return requests.get(f"{base}/healthz", timeout=2).ok
            except (requests.ConnectionError, requests.Timeout):  # a slow boot times out
                return proc.poll() is not None  # died: fail below with its log

        wait_for(up, timeout=60)
        assert proc.poll() is None, log.read_text(errors="replace")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(
                b"GET " + FORGED + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            assert conn.recv(64).startswith(b"HTTP/1.1 404")
        wait_for(lambda: b"/forged" in log.read_bytes(), timeout=20)
        token = "a-callback-token-the-access-log-must-mask-0123456789"
        assert requests.post(f"{base}/callbacks/luma/{token}", json={}, timeout=10).status_code
        wait_for(lambda: b"/callbacks/luma/" in log.read_bytes(), timeout=20)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_bytes()
    assert b"\x1b" not in text and "\u202e".encode() not in text
    lines = text.decode().splitlines()
    assert not [line for line in lines if line.startswith("127.0.0.1 ") and "/forged" in line[:30]]
    (logged,) = [line for line in lines if "/forged" in line]
    assert logged.startswith('127.0.0.1 "GET /x\\n127.0.0.1 ')
    assert "\\x1b[31m\\u202e" in logged
    assert token not in text.decode()  # masked once, where the line's record is made
