"""A webhook target that goes down (issue 23's soak found it): deliveries wait for it.

With the retry schedule shorter than the outage, every delivery used to spend its tries on a
receiver that could not answer and end `failed`: 179 webhooks never arrived in the soak, its
receiver down for 60 s against a schedule of 48 s. Now the sender takes a target that stops
answering as down: one delivery at a time probes it, the others wait with their tries unspent
(the probes' too, for as long as the whole schedule), and all go once it answers again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select

from tests.support.factory import pending_by_callback
from tests.support.servers import free_port
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Receiver
from tracker.db import Database
from tracker.flows.notify import Sender
from tracker.settings import Settings
from tracker.tasks import webhooks
from tracker.tasks.models import Delivery

SECRET = "whsec_" + "c29hay10ZXN0LXNlY3JldC0wMTIzNDU2Nzg5YWJjZA=="


def _rows(db: Database) -> list[Delivery]:
    with db.read() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


def settled(db: Database) -> Callable[[], list[Delivery] | None]:
    def rows() -> list[Delivery] | None:
        found = _rows(db)
        return found if all(row.state != "pending" for row in found) else None

    return rows


@contextmanager
def sending(db: Database, settings: Settings) -> Iterator[Sender]:
    """A worker's sender running in a thread, on its own connection pool."""
    database = Database(db.url)
    sender = Sender(settings, database, "outage-sender")
    thread = threading.Thread(target=sender.run_forever)
    thread.start()
    try:
        yield sender
    finally:
        sender.stopping.set()
        thread.join(timeout=30)
        sender.close()
        database.dispose()


def _settings(make_settings: Any, url: str, schedule: tuple[float, ...]) -> Settings:
    settings: Settings = make_settings(
        notify_url=url, notify_secrets=(SECRET,), notify_retry_schedule=schedule
    )
    webhooks.configure(settings)
    return settings


def test_a_receiver_down_longer_than_the_retry_schedule_loses_nothing(
    db: Database, make_settings: Any
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    settings = _settings(make_settings, url, (0.5, 0.5, 0.5, 0.5))  # 2 s of retries
    try:
        for _ in range(10):
            pending_by_callback(db, settings)  # a task.pending row each
        with sending(db, settings):
            wait_for(lambda: any(row.attempts for row in _rows(db)), timeout=20)
            threading.Event().wait(4.0)  # down twice as long as the whole retry schedule
            during = _rows(db)
            receiver = Receiver(SECRET, port=port)
            try:
                done = wait_for(settled(db), timeout=60, interval=0.2)
            finally:
                receiver.stop()
    finally:
        webhooks.configure(None)
    assert [row.state for row in during if row.state == "failed"] == []
    assert {row.state for row in done} == {"succeeded"}
    assert {r.webhook_id for r in receiver.received} == {row.webhook_id for row in done}
    assert all(r.verified for r in receiver.received)
    # probes, not a flood: without the wait every row would have tried all 5 times
    failed_attempts = sum(1 for row in done for a in row.attempts if a["status"] is None)
    assert failed_attempts < 2 * len(done), failed_attempts


def test_a_target_that_never_comes_back_still_fails_its_rows(
    db: Database, make_settings: Any
) -> None:
    """The probes' tries count once the target has been down longer than the schedule."""
    settings = _settings(make_settings, f"http://127.0.0.1:{free_port()}/hook", (0.2, 0.2))
    try:
        pending_by_callback(db, settings)
        with sending(db, settings):
            failed = wait_for(
                lambda: [row for row in _rows(db) if row.state == "failed"], timeout=60
            )
    finally:
        webhooks.configure(None)
    assert failed and all(len(row.attempts) == 3 for row in failed)
