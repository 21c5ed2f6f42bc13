"""The callback route, called over real HTTP the way an upstream would call it: every shape of
answer, and hostile bodies (deep nesting, lone surrogates, NaN) that must break nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from sqlalchemy import select, text

from tests.support.databases import TEST_DATABASE_URL
from tests.support.scripted import Reply, ScriptedUpstream, raw_task
from tests.support.servers import LiveServer
from tests.support.shown import everything_shows, strict
from tests.support.waiting import api_task, wait_for
from tracker.db import Database
from tracker.tasks.models import Task, TaskEvent, utcnow
from tracker.upstream.parse import parse

VIDEO = "https://cdn.example/video.mp4?X-Amz-Signature=abc"
THUMB = "https://cdn.example/thumb.jpg"
JSON = {"Content-Type": "application/json"}


@dataclass
class Submitted:
    app: str
    id: int
    upstream_id: str
    hook: str

    def call(self, body: Any = None, *, data: bytes | None = None, **kw: Any) -> requests.Response:
        if data is not None:
            return requests.post(self.hook, data=data, timeout=5, **kw)
        return requests.post(self.hook, json=body, timeout=5, **kw)

    def task(self) -> dict[str, Any]:
        return api_task(self.app, self.id)


@pytest.fixture
def new_task(live, upstream: ScriptedUpstream):  # type: ignore[no-untyped-def]
    app = live(luma_api_base=upstream.url).url
    made = 0

    def make(prompt: str = "a slow river") -> Submitted:
        nonlocal made
        made += 1
        upstream_id = f"up-{made}"
        upstream.then(Reply(201, raw_task(upstream_id)))
        task = requests.post(f"{app}/api/tasks", json={"user_prompt": prompt}, timeout=5).json()
        hook = upstream.posts()[-1].body["notify_hook"]
        return Submitted(app, task["id"], upstream_id, hook)

    return make


def done(task_id: str) -> dict[str, Any]:
    return raw_task(
        task_id,
        "completed",
        video={"url": VIDEO, "width": 1280, "height": 720, "download_url": VIDEO},
        thumbnail={"url": THUMB, "width": 1280, "height": 720},
    )


def test_processing_then_completed(new_task) -> None:  # type: ignore[no-untyped-def]
    t = new_task()
    assert t.call(raw_task(t.upstream_id, "processing")).status_code == 200
    assert t.task()["state"] == "processing"
    assert t.call(done(t.upstream_id)).status_code == 200
    task = t.task()
    assert task["state"] == "completed"
    assert task["video_url"] == VIDEO
    assert task["thumbnail_url"] == THUMB
    assert task["completed_at"] is not None
    sources = [e["source"] for e in task["events"]]
    assert sources.count("callback") == 2
    last = task["events"][-1]
    assert (last["state_before"], last["state_after"]) == ("processing", "completed")
    assert last["payload"]["state"] == "completed"


@pytest.mark.parametrize(
    "shape",
    [
        lambda uid: {"timestamp": 1735000000, "data": done(uid)},
        lambda uid: {"task_id": uid, "status": "SUCCESS", "fail_reason": "", "data": done(uid)},
        lambda uid: {"code": 200, "message": "ok", "data": done(uid)},
    ],
    ids=["envelope", "task-platform", "code-wrapper"],
)
def test_every_wrapper_shape_completes(new_task, shape) -> None:  # type: ignore[no-untyped-def]
    t = new_task()
    assert t.call(shape(t.upstream_id)).status_code == 200
    assert t.task()["state"] == "completed"


def test_seed_wrapper_status_only(new_task) -> None:  # type: ignore[no-untyped-def]
    t = new_task()
    body = {"code": 200, "data": {"task_id": t.upstream_id, "task_status": "processing"}}
    assert t.call(body).status_code == 200
    assert t.task()["state"] == "processing"


def test_pending_straight_to_failed(new_task) -> None:  # type: ignore[no-untyped-def]
    t = new_task()
    body = raw_task(t.upstream_id, "failed", failure_reason="Frame moderation failed")
    assert t.call(body).status_code == 200
    task = t.task()
    assert task["state"] == "failed"
    assert task["failure_reason"] == "Frame moderation failed"


def test_late_processing_never_overwrites_completed(new_task) -> None:  # type: ignore[no-untyped-def]
    t = new_task()
    t.call(done(t.upstream_id))
    answer = t.call(raw_task(t.upstream_id, "processing"))
    assert answer.status_code == 200
    task = t.task()
    assert task["state"] == "completed"
    assert task["video_url"] == VIDEO
    assert "ignored" in task["events"][-1]["note"]


def test_duplicates_are_harmless_and_recorded_once(new_task) -> None:  # type: ignore[no-untyped-def]
    t = new_task()
    for _ in range(3):
        assert t.call(done(t.upstream_id)).status_code == 200
    task = t.task()
    assert task["state"] == "completed"
    assert [e["source"] for e in task["events"]].count("callback") == 1


def test_completed_without_video_is_not_done(new_task) -> None:  # type: ignore[no-untyped-def]
    t = new_task()
    assert t.call(raw_task(t.upstream_id, "completed")).status_code == 200
    task = t.task()
    assert task["state"] == "processing"
    assert task["upstream_state"] == "completed"
    assert "queried" in task["events"][-1]["note"]


def test_wrong_token_is_404_and_changes_nothing(new_task) -> None:  # type: ignore[no-untyped-def]
    t = new_task()
    forged = t.hook[:-4] + ("AAAA" if not t.hook.endswith("AAAA") else "BBBB")
    response = requests.post(forged, json=done(t.upstream_id), timeout=5)
    assert response.status_code == 404
    base = t.hook.rsplit("/", 1)[0]
    assert requests.post(f"{base}/", json={}, timeout=5).status_code in (404, 405)
    assert t.task()["state"] == "pending"


def test_body_naming_another_task_changes_nothing(new_task) -> None:  # type: ignore[no-untyped-def]
    first, second = new_task(), new_task()
    # first's token, second's id in the body
    assert first.call(done(second.upstream_id)).status_code == 200
    assert first.task()["state"] == "pending"
    assert second.task()["state"] == "pending"
    assert "another task" in first.task()["events"][-1]["note"]


@pytest.mark.parametrize(
    "data",
    [b"", b"not json at all", b"<html>oops</html>", b"[1,2,3]", b'{"hello": "world"}', b"\xff\x00"],
)
def test_garbage_is_stored_as_not_understood(new_task, data: bytes) -> None:  # type: ignore[no-untyped-def]
    t = new_task()
    response = t.call(data=data, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.json()["understood"] is False
    task = t.task()
    assert task["state"] == "pending"
    assert "not understood" in task["events"][-1]["note"]


def test_echoed_callback_url_is_not_stored(new_task) -> None:  # type: ignore[no-untyped-def]
    t = new_task()
    token = t.hook.rsplit("/", 1)[1]
    t.call(raw_task(t.upstream_id, "processing", notify_hook=t.hook))
    assert token not in requests.get(f"{t.app}/api/tasks/{t.id}", timeout=5).text


def test_unknown_task_and_methods(new_task) -> None:  # type: ignore[no-untyped-def]
    t = new_task()
    assert requests.get(f"{t.app}/api/tasks/999999", timeout=5).status_code == 404
    assert requests.get(t.hook, timeout=5).status_code == 405
    assert requests.get(f"{t.app}/healthz", timeout=5).status_code == 200


def test_callback_before_the_create_answer(live, upstream: ScriptedUpstream) -> None:  # type: ignore[no-untyped-def]
    """The upstream may call back while our create request still waits for its answer."""
    app = live(luma_api_base=upstream.url).url
    upstream.then(Reply(201, raw_task("up-race"), delay=1.0))
    answer: dict[str, Any] = {}

    def submit() -> None:
        answer.update(
            requests.post(f"{app}/api/tasks", json={"user_prompt": "a fast one"}, timeout=10).json()
        )

    thread = threading.Thread(target=submit)
    thread.start()
    wait_for(lambda: upstream.posts())
    hook = upstream.posts()[0].body["notify_hook"]
    assert requests.post(hook, json=raw_task("up-race", "processing"), timeout=5).status_code == 200
    thread.join(timeout=10)
    task = api_task(app, answer["id"])
    assert task["state"] == "processing"  # the answer's "pending" did not move it back
    assert task["upstream_id"] == "up-race"


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs TEST_DATABASE_URL (CI sets it)")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # a server to drop us
def test_a_callback_on_connections_the_server_dropped_is_stored(db: Database, new_task) -> None:  # type: ignore[no-untyped-def]
    """The route's pool has no pre-ping (a round trip per callback): it retries once instead.

    Every connection to this test's own database is ended by the server, as a restart or a
    proxy's idle timeout would; the next callback still gets 200 and is stored, once.
    """
    sub = new_task()
    for progress in (10, 20):  # the route's pool holds live connections now
        assert sub.call({"id": sub.upstream_id, "state": "processing", "progress": progress}).ok
    with db.engine.connect() as conn:
        ended = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    assert ended, "the app held no connection to end"
    answer = sub.call({"id": sub.upstream_id, "state": "processing", "progress": 30})
    assert answer.status_code == 200, answer.text
    task = sub.task()
    assert task["progress"] == 30
    assert [e["payload"].get("progress") for e in task["events"] if e["source"] == "callback"] == [
        10,
        20,
        30,
    ]


# -- hostile bodies: kept, stored as strict JSON, and shown everywhere (issue 9, item 2) -------


def _submit(
    live: Callable[..., LiveServer], upstream: ScriptedUpstream, upstream_id: str = "up-1"
) -> tuple[str, int, str]:
    app = live(luma_api_base=upstream.url).url
    upstream.then(Reply(200, raw_task(upstream_id)))
    task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a fox"}, timeout=5).json()
    return app, task["id"], upstream.posts()[-1].body["notify_hook"]


def _last_callback(db: Database, task_id: int) -> TaskEvent:
    with db.read() as session:
        events = session.scalars(
            select(TaskEvent)
            .where(TaskEvent.task_id == task_id, TaskEvent.source == "callback")
            .order_by(TaskEvent.id)
        ).all()
        assert events, "the callback was stored"
        return events[-1]


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
    shown = everything_shows(app, task_id)
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
    shown = everything_shows(app, task_id)
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
    shown = everything_shows(app, task_id)
    assert shown["state"] == "pending"  # not taken at its word: asked instead
    assert shown["events"][-1]["payload"]["progress"] is None
    with db.read() as session:
        assert session.get(Task, task_id).next_check_at <= utcnow()


def test_query_answers_with_non_finite_numbers_are_stored_strict(db, live, upstream) -> None:  # type: ignore[no-untyped-def]
    app, task_id, _ = _submit(live, upstream)
    answer = '{"id": "up-1", "state": "processing", "progress": NaN, "eta": 1e999}'
    upstream.then(Reply(200, answer, content_type="application/json"))
    assert requests.post(f"{app}/api/tasks/{task_id}/poll", json={}, timeout=10).status_code == 200
    shown = everything_shows(app, task_id)
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
    shown = everything_shows(app, task_id)
    assert shown["events"][-1]["payload"] in (payload, {"a": None, "b": None})


def test_lone_surrogates_never_give_a_500(db, live, upstream) -> None:  # type: ignore[no-untyped-def]
    app = live(luma_api_base=upstream.url).url
    headers = {"Content-Type": "application/json"}
    refused = requests.post(
        f"{app}/api/tasks", data=b'{"user_prompt": "a fox \\ud800"}', headers=headers, timeout=5
    )
    assert refused.status_code == 400
    assert refused.json()["field"] == "user_prompt"
    upstream.then(Reply(200, raw_task("up-9")))
    task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a fox"}, timeout=5).json()
    hook = upstream.posts()[-1].body["notify_hook"]
    body = b'{"id": "up-9", "state": "failed", "failure_reason": "bad \\ud800 frame"}'
    assert requests.post(hook, data=body, headers=headers, timeout=5).status_code == 200
    failed = api_task(app, task["id"])
    assert failed["state"] == "failed"
    assert failed["failure_reason"].startswith("bad ")


def test_deep_nesting_is_not_understood_not_a_crash(db, live, upstream) -> None:  # type: ignore[no-untyped-def]
    assert not parse([[[[[[[[[[{"id": "x", "state": "completed"}]]]]]]]]]]).understood
    assert parse(json.loads("[" * 900 + "]" * 900)) == parse(None)
    app = live(luma_api_base=upstream.url).url
    requests.post(f"{app}/api/tasks", json={"user_prompt": "a fox"}, timeout=5)
    hook = upstream.posts()[-1].body["notify_hook"]
    for depth in (500, 900, 5000):
        response = requests.post(
            hook,
            data="[" * depth + "]" * depth,
            headers={"Content-Type": "application/json"},
            timeout=5,
        )
        assert response.status_code == 200
