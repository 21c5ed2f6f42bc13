"""POST /api/tasks: validation, what is sent upstream, and every kind of upstream answer
(cut off, late, refused with an absurd Retry-After), a resend included."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta

import pytest
import requests
from sqlalchemy import update

from tests.support.scripted import Reply, ScriptedUpstream, raw_task
from tests.support.sent import submit_in_background
from tracker.flows import submit as submit_flow
from tracker.flows import worker
from tracker.flows.services import make_client
from tracker.tasks import claims
from tracker.tasks.models import Task, utcnow
from tracker.tasks.store import NewTask

KEY = "sk-test-upstream-key-0123456789"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def app_url(live, upstream: ScriptedUpstream) -> str:
    return live(luma_api_base=upstream.url, read_timeout=1.0).url


def submit(app_url: str, body: object, **kwargs: object) -> requests.Response:
    return requests.post(f"{app_url}/api/tasks", json=body, timeout=10, **kwargs)


def count_tasks(app_url: str) -> int:
    return len(requests.get(f"{app_url}/api/tasks", timeout=5).json()["tasks"])


def test_extend_is_sent_with_auth_and_callback(app_url: str, upstream: ScriptedUpstream) -> None:
    upstream.then(Reply(201, raw_task("up-1")))
    response = submit(app_url, {"source_task_id": "src-1", "user_prompt": "add cat"})
    assert response.status_code == 201
    task = response.json()
    assert task["state"] == "pending"
    assert task["upstream_id"] == "up-1"
    assert task["kind"] == "extend"
    assert task["source_task_id"] == "src-1"

    [sent] = upstream.posts()
    assert sent.path == "/luma/generations/src-1/extend"
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["Accept"] == "application/json"
    # optional fields the user did not give are left out, not sent empty
    assert set(sent.body) == {"user_prompt", "notify_hook"}
    assert sent.body["notify_hook"].startswith(f"{app_url}/callbacks/luma/")
    token = sent.body["notify_hook"].rsplit("/", 1)[1]
    assert len(token) >= 22  # at least 128 bits, url-safe base64
    # the token is not in the answer, nor in the stored events
    assert token not in response.text
    assert token not in requests.get(f"{app_url}/api/tasks/{task['id']}", timeout=5).text


def test_generate_sends_its_options(app_url: str, upstream: ScriptedUpstream) -> None:
    body = {
        "user_prompt": "a red fox at dawn",
        "expand_prompt": True,
        "aspect_ratio": "16:9",
        "loop": False,
        "resolution": "720p",
        "duration": "5s",
        "model_name": "ray-v2",
        "image_url": "https://img.example/a.png",
    }
    response = submit(app_url, body)
    assert response.status_code == 201
    assert response.json()["kind"] == "generate"
    [sent] = upstream.posts()
    assert sent.path == "/luma/generations"
    assert {k: sent.body[k] for k in body} == body


def test_without_public_base_url_no_notify_hook(live, upstream: ScriptedUpstream) -> None:
    url = live(callbacks=False, luma_api_base=upstream.url).url
    assert submit(url, {"user_prompt": "a calm sea"}).status_code == 201
    [sent] = upstream.posts()
    assert "notify_hook" not in sent.body


BAD_BODIES = [
    ([1, 2], None),
    ({}, "user_prompt"),
    ({"user_prompt": None}, "user_prompt"),
    ({"user_prompt": 42}, "user_prompt"),
    ({"user_prompt": "   "}, "user_prompt"),
    ({"user_prompt": "x" * 5001}, "user_prompt"),
    ({"user_prompt": "nul \x00 inside"}, "user_prompt"),
    ({"user_prompt": "ok prompt", "expand_prompt": "yes"}, "expand_prompt"),
    ({"user_prompt": "ok prompt", "image_url": 5}, "image_url"),
    ({"user_prompt": "ok prompt", "image_end_url": "not an image"}, "image_end_url"),
    ({"user_prompt": "ok prompt", "source_task_id": ["a"]}, "source_task_id"),
    ({"user_prompt": "ok prompt", "source_task_id": "a/../b"}, "source_task_id"),
    ({"user_prompt": "ok prompt", "aspect_ratio": "2:1"}, "aspect_ratio"),
    ({"user_prompt": "ok prompt", "loop": "no"}, "loop"),
    ({"user_prompt": "ok prompt", "source_task_id": "s1", "loop": True}, "loop"),
    ({"user_prompt": "ok prompt", "duration": "five"}, "duration"),
    ({"user_prompt": "ok prompt", "notify_hook": "http://evil"}, "notify_hook"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_input_is_400_naming_the_field(
    app_url: str, upstream: ScriptedUpstream, body: object, field: str | None
) -> None:
    response = submit(app_url, body)
    assert response.status_code == 400
    answer = response.json()
    assert answer.get("field") == field
    if field:
        assert field in answer["error"]
    # issue 10: every problem is listed too, the first being `error` and `field`
    assert answer["errors"][0] == {"field": field, "error": answer["error"]}
    assert upstream.posts() == []
    assert count_tasks(app_url) == 0


@pytest.mark.parametrize("raw", [b"", b"{not json", b"\xff\xfe", b"null", b'"a string"'])
def test_non_json_bodies_are_400(app_url: str, upstream: ScriptedUpstream, raw: bytes) -> None:
    response = requests.post(
        f"{app_url}/api/tasks",
        data=raw,
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 400
    assert "error" in response.json()
    assert upstream.posts() == []


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


def test_upstream_refusal_is_rejected_with_reason(app_url: str, upstream: ScriptedUpstream) -> None:
    detail = "Prompt is too short, minimum length is 3 characters"
    upstream.then(Reply(400, {"detail": detail}))
    task = submit(app_url, {"user_prompt": "ab"}).json()
    assert task["state"] == "rejected"
    assert detail in task["failure_reason"]


def test_upstream_refusal_with_nested_detail(app_url: str, upstream: ScriptedUpstream) -> None:
    upstream.then(Reply(422, {"detail": {"reason": "Loop is not supported", "code": 1}}))
    task = submit(app_url, {"user_prompt": "a long prompt"}).json()
    assert task["state"] == "rejected"
    assert "Loop is not supported" in task["failure_reason"]


def test_429_leaves_the_task_queued(app_url: str, upstream: ScriptedUpstream) -> None:
    upstream.then(Reply(429, {"detail": "Too many requests"}, {"Retry-After": "30"}))
    response = submit(app_url, {"user_prompt": "a quiet forest"})
    assert response.status_code == 201
    task = response.json()
    assert task["state"] == "queued"
    assert task["upstream_id"] is None
    assert "30 s" in task["events"][-1]["note"]


@pytest.mark.parametrize("retry_after", ["1e12", "inf", "nan", "-5"])
def test_absurd_retry_after_is_bounded(db, make_settings, upstream, retry_after: str) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(luma_api_base=upstream.url)
    upstream.then(Reply(429, {"detail": "slow down"}, headers={"Retry-After": retry_after}))
    task = submit_flow.submit(
        db, settings, make_client(settings), NewTask(kind="generate", user_prompt="a fox")
    )
    with db.read() as session:
        stored = session.get(Task, task.id)
        assert stored.state == "queued"
        assert stored.next_check_at <= utcnow() + timedelta(hours=1, seconds=5)


def test_connection_refused_leaves_the_task_queued(live) -> None:
    url = live(luma_api_base="http://127.0.0.1:9").url  # nothing listens on port 9
    task = submit(url, {"user_prompt": "a quiet forest"}).json()
    assert task["state"] == "queued"


@pytest.mark.parametrize(
    "reply",
    [
        Reply(500, {"detail": "internal"}),
        Reply(502, "<html><body>502 Bad Gateway</body></html>"),
        Reply(200, "<html><body>maintenance</body></html>"),
        Reply(200, raw_task("late"), delay=2.5),  # past the 1 s read timeout
    ],
    ids=["500", "502-html", "200-html", "timeout"],
)
def test_ambiguous_outcome_is_rejected_and_not_resent(
    app_url: str, upstream: ScriptedUpstream, reply: Reply
) -> None:
    upstream.then(reply)
    task = submit(app_url, {"user_prompt": "a quiet forest"}).json()
    assert task["state"] == "rejected"
    assert task["failure_reason"].startswith("outcome unknown")
    assert len(upstream.posts()) == 1


def _cut_off_answers() -> tuple[socket.socket, list[bytes]]:
    """An upstream that answers 200 but cuts the body short: the request did arrive."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    hits: list[bytes] = []

    def run() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(rest) < length:
                rest += conn.recv(65536)
            hits.append(head.split(b"\r\n")[0])
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
                b'{"id": "up-1", "state": "pen'
            )
            conn.close()

    threading.Thread(target=run, daemon=True).start()
    return server, hits


def test_a_cut_off_answer_to_a_create_is_never_resent(db, make_settings) -> None:  # type: ignore[no-untyped-def]
    server, hits = _cut_off_answers()
    settings = make_settings(luma_api_base=f"http://127.0.0.1:{server.getsockname()[1]}")
    client = make_client(settings)
    try:
        task = submit_flow.submit(
            db, settings, client, NewTask(kind="generate", user_prompt="a fox")
        )
        worker.run_once(settings, db=db, client=client)
    finally:
        server.close()
    with db.read() as session:
        stored = session.get(Task, task.id)
        assert stored.state == "rejected"
        assert stored.failure_reason.startswith("outcome unknown")
    assert len(hits) == 1  # one create, never a second


def test_an_answer_after_the_lease_revives_the_task(db, make_settings, upstream) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(luma_api_base=upstream.url, lease_seconds=0.5, read_timeout=5.0)
    client = make_client(settings)
    upstream.then(Reply(200, raw_task("up-slow"), delay=2.0))
    sender, done = submit_in_background(db, settings, client)
    deadline = utcnow() + timedelta(seconds=10)
    while not claims.recover_interrupted_submissions(db):  # the lease runs out mid-send
        assert utcnow() < deadline
    sender.join(timeout=10)
    with db.read() as session:
        task = session.get(Task, done["task"].id)
        assert task.state == "pending"
        assert task.upstream_id == "up-slow"
        assert task.failure_reason is None
        assert task.next_check_at is not None


def test_resend_sends_a_new_attempt(app_url: str, upstream: ScriptedUpstream) -> None:
    upstream.then(Reply(500, {"detail": "internal"}), Reply(201, raw_task("up-2")))
    task = submit(app_url, {"user_prompt": "a quiet forest"}).json()
    assert task["state"] == "rejected"
    response = requests.post(f"{app_url}/api/tasks/{task['id']}/resend", json={}, timeout=5)
    assert response.status_code == 200
    again = response.json()
    assert again["state"] == "pending"
    assert again["upstream_id"] == "up-2"
    assert again["attempts"] == 2
    assert any(e["source"] == "user" and "attempt 2" in e["note"] for e in again["events"])
    hooks = [s.body["notify_hook"] for s in upstream.posts()]
    assert len(hooks) == 2 and hooks[0] != hooks[1]  # each attempt has its own token


def test_resend_of_a_pending_task_is_refused(app_url: str, upstream: ScriptedUpstream) -> None:
    task = submit(app_url, {"user_prompt": "a quiet forest"}).json()
    response = requests.post(f"{app_url}/api/tasks/{task['id']}/resend", json={}, timeout=5)
    assert response.status_code == 409
    assert len(upstream.posts()) == 1


def test_a_resend_starts_a_new_timeout_clock(db, make_settings, upstream) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(luma_api_base=upstream.url, task_timeout=3600.0)
    client = make_client(settings)
    upstream.then(Reply(500, {"detail": "boom"}), Reply(200, raw_task("up-2")))
    task = submit_flow.submit(db, settings, client, NewTask(kind="generate", user_prompt="a fox"))
    two_hours_ago = utcnow() - timedelta(hours=2)
    with db.write() as session:  # the person waited two hours before resending, as advised
        session.execute(
            update(Task)
            .where(Task.id == task.id)
            .values(created_at=two_hours_ago, submitted_at=two_hours_ago)
        )
    submit_flow.resend(db, settings, client, task.id)
    worker.run_once(settings, db=db, client=client)
    with db.read() as session:
        assert session.get(Task, task.id).state == "pending"
