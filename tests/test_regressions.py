"""Bugs a review found, each pinned by a test of what the user sees once it is fixed."""

from __future__ import annotations

import json
import socket
import threading
from datetime import timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select, update
from werkzeug.wrappers import Request, Response

from tests.support.databases import TEST_DATABASE_URL
from tests.support.scripted import Reply, raw_task
from tests.support.waiting import api_task
from tracker.flows import submit, worker
from tracker.flows.services import make_client
from tracker.tasks import claims, store, sweeps
from tracker.tasks.models import StateCount, Task, utcnow
from tracker.tasks.store import NewTask
from tracker.upstream.parse import parse


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
        task = submit.submit(db, settings, client, NewTask(kind="generate", user_prompt="a fox"))
        worker.run_once(settings, db=db, client=client)
    finally:
        server.close()
    with db.read() as session:
        stored = session.get(Task, task.id)
        assert stored.state == "rejected"
        assert stored.failure_reason.startswith("outcome unknown")
    assert len(hits) == 1  # one create, never a second


def test_a_resend_starts_a_new_timeout_clock(db, make_settings, upstream) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(luma_api_base=upstream.url, task_timeout=3600.0)
    client = make_client(settings)
    upstream.then(Reply(500, {"detail": "boom"}), Reply(200, raw_task("up-2")))
    task = submit.submit(db, settings, client, NewTask(kind="generate", user_prompt="a fox"))
    two_hours_ago = utcnow() - timedelta(hours=2)
    with db.write() as session:  # the person waited two hours before resending, as advised
        session.execute(
            update(Task)
            .where(Task.id == task.id)
            .values(created_at=two_hours_ago, submitted_at=two_hours_ago)
        )
    submit.resend(db, settings, client, task.id)
    worker.run_once(settings, db=db, client=client)
    with db.read() as session:
        assert session.get(Task, task.id).state == "pending"


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


def test_an_answer_after_the_lease_revives_the_task(db, make_settings, upstream) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(luma_api_base=upstream.url, lease_seconds=0.5, read_timeout=5.0)
    client = make_client(settings)
    upstream.then(Reply(200, raw_task("up-slow"), delay=2.0))
    done: dict[str, Task] = {}
    sender = threading.Thread(
        target=lambda: done.setdefault(
            "task",
            submit.submit(db, settings, client, NewTask(kind="generate", user_prompt="a fox")),
        )
    )
    sender.start()
    deadline = utcnow() + timedelta(seconds=10)
    while not sweeps.recover_interrupted_submissions(db):  # the lease runs out mid-send
        assert utcnow() < deadline
    sender.join(timeout=10)
    with db.read() as session:
        task = session.get(Task, done["task"].id)
        assert task.state == "pending"
        assert task.upstream_id == "up-slow"
        assert task.failure_reason is None
        assert task.next_check_at is not None


@pytest.mark.parametrize("retry_after", ["1e12", "inf", "nan", "-5"])
def test_absurd_retry_after_is_bounded(db, make_settings, upstream, retry_after: str) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(luma_api_base=upstream.url)
    upstream.then(Reply(429, {"detail": "slow down"}, headers={"Retry-After": retry_after}))
    task = submit.submit(
        db, settings, make_client(settings), NewTask(kind="generate", user_prompt="a fox")
    )
    with db.read() as session:
        stored = session.get(Task, task.id)
        assert stored.state == "queued"
        assert stored.next_check_at <= utcnow() + timedelta(hours=1, seconds=5)


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="a PostgreSQL race: needs TEST_DATABASE_URL")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_claim_never_overwrites_a_timeout(db, make_settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(task_timeout=60.0)
    task = store.create(db, NewTask(kind="generate", user_prompt="a fox"))
    with db.write() as session:
        old = utcnow() - timedelta(hours=1)
        session.execute(update(Task).where(Task.id == task.id).values(created_at=old))
    go, selected = threading.Event(), threading.Event()
    real = claims.secrets.token_urlsafe

    def slow_token(n: int) -> str:  # hold the claim between its read and its write
        selected.set()
        go.wait(10)
        return real(n)

    monkeypatch.setattr(claims.secrets, "token_urlsafe", slow_token)
    claimer = threading.Thread(target=lambda: claims.claim_for_dispatch(db, settings))
    claimer.start()
    assert selected.wait(10)
    sweeps.time_out_overdue(db, settings)  # runs in the gap
    go.set()
    claimer.join(timeout=10)
    with db.read() as session:
        stored = session.get(Task, task.id)
        counts = dict(session.execute(select(StateCount.state, StateCount.count)).all())
        moves = [(e.state_before, e.state_after) for e in stored.events]
    assert counts[stored.state] == 1
    assert sum(counts.values()) == 1 and min(counts.values()) == 0
    assert ("timed_out", "submitting") not in moves
