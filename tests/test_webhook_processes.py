"""`tracker worker` as a real process sending webhooks: killed mid-delivery, the event arrives.

The receiver hangs on the first attempt; the worker is killed (SIGKILL) while it waits. Its
lease is taken over once its heartbeat is stale (set back here, as a minute's silence would),
and a second worker sends the same event, with the same webhook-id, to a receiver that now
accepts it.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.support.factory import make_task
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Receiver
from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks import store, webhooks
from tracker.tasks.models import Delivery, Task, WorkerBeat, utcnow

TRACKER = str(Path(sys.executable).parent / "tracker")
SECRET = "whsec_" + base64.b64encode(b"process-test-secret-0123456789ab").decode()

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(SECRET, plan=["hang"])
    yield server
    webhooks.configure(None)
    server.stop()


def _worker(db: Database, receiver: Receiver, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "LUMA_"))}
    env.pop("PUBLIC_BASE_URL", None)
    env.update(
        DATABASE_URL=db.url,
        LUMA_API_BASE="http://127.0.0.1:9",
        LUMA_API_KEY="sk-test-webhook-process-key",
        TRACKER_MEDIA_DIR="",
        TRACKER_WORKER_INTERVAL="0.05",
        TRACKER_NOTIFY_URL=receiver.url,
        TRACKER_NOTIFY_SECRET=SECRET,
    )
    with log.open("wb") as err:
        return subprocess.Popen([TRACKER, "worker"], env=env, stdout=err, stderr=err)


def test_a_worker_killed_mid_delivery_loses_no_event(
    db: Database, receiver: Receiver, tmp_path: Path
) -> None:
    webhooks.configure(Settings(database_url=db.url, notify_url=receiver.url))
    task = make_task(db, "queued", user_prompt="never lost")
    with db.write() as session:
        row = session.get(Task, task.id)
        assert row is not None
        row.upstream_id = "up-never-lost"
        store.set_state(session, row, "pending")

    first = _worker(db, receiver, tmp_path / "first.log")
    try:
        assert receiver.hanging.wait(30), (tmp_path / "first.log").read_text()
    finally:
        first.kill()
        first.wait(timeout=10)
    with db.read() as session:
        (delivery,) = session.scalars(select(Delivery))
        assert delivery.state == "pending" and delivery.claimed_by is not None
        dead = delivery.claimed_by
    with db.write() as session:  # a minute of silence from the killed process
        session.execute(
            update(WorkerBeat)
            .where(WorkerBeat.id == dead)
            .values(last_seen_at=utcnow() - timedelta(minutes=5))
        )

    second = _worker(db, receiver, tmp_path / "second.log")
    try:
        wait_for(lambda: len(receiver.received) >= 2, timeout=30)

        def settled() -> bool:
            with db.read() as session:
                return session.scalar(select(Delivery.state)) == "succeeded"

        wait_for(settled, timeout=15)
    finally:
        second.terminate()
        second.wait(timeout=20)
    hung, sent = receiver.received[:2]
    assert hung.answered == "hang" and sent.answered == "ok"
    assert hung.webhook_id == sent.webhook_id and sent.verified
    assert sent.body is not None and sent.body["type"] == "task.pending"
    assert SECRET not in (tmp_path / "second.log").read_text()
