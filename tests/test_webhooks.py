"""Outgoing webhooks: signed (checked with the `standardwebhooks` library), retried, logged.

A real receiver on 127.0.0.1 (tests/support/receiver.py) refuses, hangs or redirects when a
test says so. Every test runs on SQLite and on PostgreSQL (the `db` fixture).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select, text

from tests.support.factory import make_task, make_tasks
from tests.support.sent import sent_task
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Receiver
from tracker.db import Database
from tracker.flows.notify import Sender
from tracker.settings import Settings
from tracker.tasks import store, webhooks
from tracker.tasks.models import Delivery, Task
from tracker.tasks.states import GiveUp
from tracker.upstream.parse import Update
from tracker.web import callbacks as web_callbacks

SECRET = "whsec_" + base64.b64encode(b"test-notify-secret-0123456789abcd").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-secret-being-rotated-out-0123").decode()
TOKEN = "test-admin-token-0123456789"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(SECRET)
    yield server
    server.stop()


def _settings(make_settings: Any, **overrides: Any) -> Settings:
    base = {"notify_secrets": (SECRET,), "notify_retry_schedule": (0.0, 0.0, 0.0)}
    return make_settings(**(base | overrides))


def _deliver(settings: Settings, db: Database) -> int:
    sender = Sender(settings, db, "test-sender")
    try:
        return sender.run_once()
    finally:
        sender.close()


def _move(db: Database, settings: Settings, task_id: int, state: str, **fields: Any) -> None:
    with db.write() as session:
        task = session.get(Task, task_id)
        assert task is not None
        if task.upstream_id is None:
            task.upstream_id = f"up-{task_id}"
        upd = Update(understood=True, state=state, upstream_id=task.upstream_id, **fields)
        store.apply(session, settings, task, upd, "callback", payload={"state": state})


def _deliveries(db: Database, task_id: int) -> list[Delivery]:
    with db.read() as session:
        query = select(Delivery).where(Delivery.task_id == task_id).order_by(Delivery.id)
        return list(session.scalars(query))


def test_refused_then_accepted_same_id_signed_and_logged(
    db: Database, make_settings: Any, receiver: Receiver, live: Any
) -> None:
    settings = _settings(make_settings, notify_url=receiver.url)
    webhooks.configure(settings)
    receiver.plan = ["refuse"]
    task = make_task(db, "queued", user_prompt="a lighthouse at dusk")
    _move(db, settings, task.id, "pending")

    # refused (503), due again after the schedule's first delay (0 s here), then accepted
    assert _deliver(settings, db) == 2
    first, second = receiver.received
    assert first.answered == "refuse" and second.answered == "ok"
    assert first.verified and second.verified  # checked by the standardwebhooks library
    assert first.webhook_id == second.webhook_id
    assert second.body is not None and second.body["type"] == "task.pending"
    assert second.body["data"]["id"] == task.id and second.body["data"]["state"] == "pending"
    assert "events" not in second.body["data"]

    app = live(api_token=TOKEN, notify_secrets=(SECRET,))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answer = requests.get(f"{app.url}/api/tasks/{task.id}/deliveries", headers=auth, timeout=5)
    assert answer.status_code == 200
    (shown,) = answer.json()["deliveries"]
    assert shown["type"] == "task.pending" and shown["state"] == "succeeded"
    assert shown["target"] == receiver.url and shown["webhook_id"] == first.webhook_id
    assert [a["status"] for a in shown["attempts"]] == [503, 204]
    assert shown["attempts"][0]["response"] == "not now"
    assert SECRET not in answer.text


def test_the_seven_types_and_nothing_for_queued_or_submitting(
    db: Database, make_settings: Any, receiver: Receiver
) -> None:
    settings = _settings(make_settings, notify_url=receiver.url)
    webhooks.configure(settings)
    ids = [make_task(db, "queued", user_prompt=f"p{n}").id for n in range(4)]
    with db.write() as session:
        store.set_state(session, session.get(Task, ids[0]), "submitting")  # type: ignore[arg-type]
    assert _deliveries(db, ids[0]) == []
    _move(db, settings, ids[0], "pending")
    _move(db, settings, ids[0], "processing")
    _move(db, settings, ids[0], "completed", video_url="https://cdn.example/v.mp4")
    _move(db, settings, ids[1], "pending")
    _move(db, settings, ids[1], "failed", failure_reason="moderation")
    with db.write() as session:
        lost = session.get(Task, ids[2])
        assert lost is not None
        store.set_state(session, lost, "submitting")  # its sender died mid-request
        store.apply(session, None, lost, GiveUp("test"))
        task = session.get(Task, ids[3])
        assert task is not None
        store.set_state(session, task, "timed_out")
    with db.write() as session:
        task = session.get(Task, ids[0])
        assert task is not None
        task.media_path = f"{ids[0]}.mp4"
        webhooks.enqueue(session, task, "archived")
    _deliver(settings, db)
    assert sorted(receiver.types()) == sorted(
        [
            "task.pending",
            "task.processing",
            "task.completed",
            "task.archived",
            "task.pending",
            "task.failed",
            "task.rejected",
            "task.timed_out",
        ]
    )
    assert all(r.verified for r in receiver.received)
    failed = next(r.body for r in receiver.received if r.body and r.body["type"] == "task.failed")
    assert failed["data"]["failure_reason"] == "moderation"


def test_rotation_signs_with_every_secret(
    db: Database, make_settings: Any, receiver: Receiver
) -> None:
    secrets = (OLD_SECRET, SECRET)
    settings = _settings(make_settings, notify_url=receiver.url, notify_secrets=secrets)
    webhooks.configure(settings)
    task = make_task(db, "queued", user_prompt="two secrets")
    _move(db, settings, task.id, "pending")
    _deliver(settings, db)
    (got,) = receiver.received
    assert got.verified  # the receiver knows only the new secret
    assert len(got.headers["webhook-signature"].split(" ")) == 2


def test_per_task_url_guarded_at_submit_and_at_every_attempt(
    db: Database, make_settings: Any, receiver: Receiver, live: Any
) -> None:
    strict = live()
    refused = requests.post(
        f"{strict.url}/api/tasks",
        json={"user_prompt": "hook me", "notify_url": receiver.url},
        timeout=5,
    )
    assert refused.status_code == 400
    assert refused.json()["field"] == "notify_url"
    assert "loopback" in refused.json()["error"]
    not_url = requests.post(
        f"{strict.url}/api/tasks", json={"user_prompt": "x", "notify_url": "ftp://a"}, timeout=5
    )
    assert not_url.status_code == 400 and not_url.json()["field"] == "notify_url"

    lenient = live(notify_allow_private=True, notify_secrets=(SECRET,))
    made = requests.post(
        f"{lenient.url}/api/tasks",
        json={"user_prompt": "hook me", "notify_url": receiver.url},
        timeout=5,
    )
    assert made.status_code == 201, made.text
    task_id = made.json()["id"]
    _move(db, _settings(make_settings), task_id, "pending")
    # the worker runs without TRACKER_NOTIFY_ALLOW_PRIVATE: the address is checked again
    _deliver(_settings(make_settings), db)
    assert receiver.received == []
    (row,) = _deliveries(db, task_id)
    assert row.target_kind == "task" and row.state == "failed"  # every attempt refused
    assert len(row.attempts) == 4
    assert all(a["status"] is None and "loopback" in a["response"] for a in row.attempts)


def test_redirects_are_not_followed_and_redeliver_keeps_the_id(
    db: Database, make_settings: Any, receiver: Receiver, live: Any
) -> None:
    settings = _settings(make_settings, notify_url=receiver.url, notify_retry_schedule=())
    webhooks.configure(settings)
    receiver.plan = ["redirect"]
    task = make_task(db, "queued", user_prompt="moved")
    _move(db, settings, task.id, "pending")
    _deliver(settings, db)
    assert len(receiver.received) == 1  # the Location was never asked
    (row,) = _deliveries(db, task.id)
    assert row.state == "failed" and row.attempts[0]["status"] == 302

    app = live(api_token=TOKEN, notify_secrets=(SECRET,))
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    again = requests.post(f"{app.url}/api/deliveries/{row.id}/redeliver", headers=auth, timeout=5)
    assert again.status_code == 202
    missing = requests.post(f"{app.url}/api/deliveries/999999/redeliver", headers=auth, timeout=5)
    assert missing.status_code == 404
    _deliver(settings, db)
    assert [r.webhook_id for r in receiver.received] == [row.webhook_id, row.webhook_id]
    assert receiver.received[1].verified
    (row,) = _deliveries(db, task.id)
    assert row.state == "succeeded"


def test_archived_event_carries_signed_links_that_open_without_the_token(
    db: Database, make_settings: Any, receiver: Receiver, live: Any, tmp_path: Any
) -> None:
    app = live(api_token=TOKEN, notify_secrets=(SECRET,), notify_url=receiver.url)
    settings = _settings(make_settings, notify_url=receiver.url, public_base_url=app.url)
    task = make_task(db, "queued", user_prompt="keep me")
    media = tmp_path / "media"
    media.mkdir(exist_ok=True)
    (media / f"{task.id}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    with db.write() as session:
        row = session.get(Task, task.id)
        assert row is not None
        row.media_path = f"{task.id}.mp4"
        webhooks.enqueue(session, row, "archived")
    _deliver(settings, db)
    (got,) = receiver.received
    assert got.verified and got.body is not None and got.body["type"] == "task.archived"
    link = got.body["data"]["media_url"]
    assert link.startswith(f"{app.url}/media/{task.id}/video?expires=")
    assert requests.get(link, timeout=5).status_code == 200  # no token
    assert requests.get(link[:-2] + "00", timeout=5).status_code == 401
    assert requests.get(f"{app.url}/media/{task.id}/video", timeout=5).status_code == 401
    with db.read() as session:  # the database keeps the path, never a link that opens it
        stored = session.scalar(select(Delivery.payload).where(Delivery.task_id == task.id))
    assert "signature=" not in (stored or "")


def test_the_secret_is_in_no_row(db: Database, make_settings: Any, receiver: Receiver) -> None:
    settings = _settings(make_settings, notify_url=receiver.url)
    webhooks.configure(settings)
    task = make_task(db, "queued", user_prompt="secret?")
    _move(db, settings, task.id, "pending")
    receiver.plan = ["refuse"]
    _deliver(settings, db)
    secret_body = SECRET.removeprefix("whsec_")
    with db.read() as session:
        for table in ("deliveries", "task_events", "tasks"):
            for row in session.execute(text(f"SELECT * FROM {table}")):  # noqa: S608
                assert secret_body not in json.dumps([str(v) for v in row])


def test_two_senders_never_send_one_delivery_at_once(
    db: Database, make_settings: Any, receiver: Receiver
) -> None:
    """Two senders with their own connections race over 60 due deliveries: each goes once."""
    import threading

    settings = _settings(make_settings, notify_url=receiver.url)
    webhooks.configure(settings)
    ids = make_tasks(db, 60, "queued", user_prompt="race")
    for task_id in ids:
        _move(db, settings, task_id, "pending")
    databases = [Database(db.url), Database(db.url)]
    senders = [Sender(settings, d, f"sender-{n}", threads=4) for n, d in enumerate(databases)]
    threads = [threading.Thread(target=s.run_forever) for s in senders]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(receiver.received) >= 60, timeout=60)
    finally:
        for sender in senders:
            sender.stopping.set()
        for thread in threads:
            thread.join(timeout=30)
        for sender, database in zip(senders, databases, strict=True):
            sender.close()
            database.dispose()
    seen = [r.webhook_id for r in receiver.received]
    assert len(seen) == len(set(seen)) == 60
    assert max(receiver.max_at_once.values()) == 1


def test_detail_page_shows_deliveries_and_redeliver_needs_the_csrf_token(
    db: Database, make_settings: Any, receiver: Receiver
) -> None:
    import re

    from tracker.web.app import create_app

    settings = _settings(make_settings, notify_url=receiver.url, notify_retry_schedule=())
    app = create_app(settings, db=db)
    receiver.plan = ["refuse"]
    task = make_task(db, "queued", user_prompt="show my webhooks")
    _move(db, settings, task.id, "pending")
    _deliver(settings, db)
    (row,) = _deliveries(db, task.id)
    assert row.state == "failed"

    client = app.test_client()
    page = client.get(f"/tasks/{task.id}").get_data(as_text=True)
    assert "Deliveries" in page and "task.pending" in page and row.webhook_id in page
    assert "503" in page and "Redeliver" in page and SECRET not in page
    action = f"/tasks/{task.id}/deliveries/{row.id}/redeliver"
    refused = client.post(action, data={}, headers={"Accept": "text/html"})
    assert refused.status_code == 400
    assert _deliveries(db, task.id)[0].state == "failed"  # nothing changed
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    done = client.post(action, data={"csrf_token": token.group(1)})
    assert done.status_code == 303
    assert _deliveries(db, task.id)[0].state == "pending"
    _deliver(settings, db)
    assert [r.webhook_id for r in receiver.received] == [row.webhook_id] * 2


CALLBACK_TOKEN = "cb-token-" + "x" * 40


@pytest.mark.parametrize("target", ["global", "task"])
def test_a_callback_that_moves_the_task_makes_its_delivery(
    db: Database, make_settings: Any, receiver: Receiver, target: str
) -> None:
    """The callback route writes through the driver; a move with a target still enqueues."""
    settings = _settings(
        make_settings,
        notify_url=receiver.url if target == "global" else "",
        notify_allow_private=True,  # the receiver is on 127.0.0.1
    )
    webhooks.configure(settings)
    notify_url = receiver.url if target == "task" else None
    task_id = sent_task(db, CALLBACK_TOKEN, "up-cb", "pending", notify_url)
    token = CALLBACK_TOKEN
    processing = Update(understood=True, state="processing", upstream_id="up-cb", progress=10)
    assert web_callbacks.write(db, settings, token, processing, {"state": "processing"}) is True
    further = Update(understood=True, state="processing", upstream_id="up-cb", progress=60)
    assert web_callbacks.write(db, settings, token, further, {"progress": 60}) is False
    # the pending one is the send's (set_state above); the callback adds one, not two
    assert [d.type for d in _deliveries(db, task_id)] == ["task.pending", "task.processing"]
    _deliver(settings, db)
    got = [r.body for r in receiver.received if r.body and r.body["type"] == "task.processing"]
    assert [body["data"]["state"] for body in got] == ["processing"]
    assert all(r.verified for r in receiver.received)


def test_a_callback_with_no_target_moves_the_task_and_makes_no_delivery(
    db: Database, make_settings: Any
) -> None:
    settings = _settings(make_settings)
    webhooks.configure(settings)
    task_id, token = sent_task(db, CALLBACK_TOKEN, "up-cb", "pending"), CALLBACK_TOKEN
    done = Update(
        understood=True,
        state="completed",
        upstream_id="up-cb",
        video_url="https://cdn.example/v.mp4",
    )
    assert web_callbacks.write(db, settings, token, done, {"state": "completed"}) is True
    assert web_callbacks.write(db, settings, "not-" + token, done, {"state": "completed"}) is None
    assert _deliveries(db, task_id) == []
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        assert (task.state, task.video_url) == ("completed", "https://cdn.example/v.mp4")
        counts = dict(session.execute(text("SELECT state, count FROM state_counts")).all())
    assert counts["completed"] == 1 and counts["pending"] == 0
