"""Outgoing webhooks under attack (issue 23, item 3): receivers that trickle or break off, and
names that no resolver takes. Every receiver is a real server on 127.0.0.1; every test runs on
SQLite and on PostgreSQL where it touches the database (the `db` fixture).

- A receiver that trickles one header line every few seconds held an attempt for minutes (the
  10 s limit was per read); its lease ran out mid-attempt and a second sender sent the same
  delivery at once. An attempt now ends at 10 s in total, and other deliveries go meanwhile.
- A receiver that sends its headers, then closes mid-body, was "failed unexpectedly" with a
  traceback: it is an ordinary failed attempt, one log line.
- A notify_url with a DNS label over 63 characters was a 400 with a traceback beside it (gevent
  prints the resolver's UnicodeError): the name is checked before it is resolved.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.support.factory import pending_by_callback
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Receiver
from tracker.db import Database
from tracker.flows.notify import Sender
from tracker.settings import Settings
from tracker.storage import netguard
from tracker.tasks import deliveries, webhooks
from tracker.tasks.models import Delivery, utcnow

SECRET = "whsec_" + base64.b64encode(b"attack-notify-secret-0123456789ab").decode()
LONG_LABEL = "http://" + "a" * 64 + ".example.com/hook"


class RawReceiver:
    """A raw socket server on 127.0.0.1 that answers every POST by `script(conn)`.

    It counts connections by webhook-id, and how many of one id it held at once.
    """

    def __init__(self, script: Any) -> None:
        self.script = script
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.now_in: Counter[str] = Counter()
        self.most_at_once: Counter[str] = Counter()
        self.closed_at: dict[str, float] = {}  # when the sender hung up, by webhook-id
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            fields = dict(
                line.split(":", 1) for line in head.decode("latin-1").lower().split("\r\n")[1:]
            )
            hook_id = fields.get("webhook-id", "").strip()
            length = int(fields.get("content-length", "0"))
            while len(body) < length and (chunk := conn.recv(65536)):
                body += chunk  # read whole: what is left unread is not a hang-up
            with self.lock:
                self.seen[hook_id] += 1
                self.now_in[hook_id] += 1
                self.most_at_once[hook_id] = max(self.most_at_once[hook_id], self.now_in[hook_id])
            try:
                self.script(conn, self.stopping)
            except OSError:
                pass  # the sender hung up
            finally:
                with self.lock:
                    self.now_in[hook_id] -= 1
                    self.closed_at[hook_id] = time.monotonic()

    def stop(self) -> None:
        self.stopping.set()
        self.server.close()


def trickle(conn: socket.socket, stopping: threading.Event) -> None:
    """A status line, then one header line every 2 s for a minute: never a whole answer."""
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for n in range(30):
        for _ in range(20):  # 2 s, looking whether the sender hung up
            if stopping.wait(0.1) or _hung_up(conn):
                return
        conn.sendall(b"X-Slow-%d: still here\r\n" % n)


def _hung_up(conn: socket.socket) -> bool:
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False


def broken_length(conn: socket.socket, stopping: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part")


def broken_chunks(conn: socket.socket, stopping: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\nonly a part")


@pytest.fixture
def healthy() -> Iterator[Receiver]:
    server = Receiver(SECRET)
    yield server
    server.stop()


def _settings(make_settings: Any, **overrides: Any) -> Settings:
    base = {"notify_secrets": (SECRET,), "notify_allow_private": True}
    settings: Settings = make_settings(**(base | overrides))
    return settings


def _rows(db: Database, **where: Any) -> list[Delivery]:
    with db.read() as session:
        query = select(Delivery).filter_by(**where).order_by(Delivery.id)
        return list(session.scalars(query))


# -- 1. a receiver that trickles its headers ------------------------------------------------


@pytest.mark.slow  # waits out the real 10 s deadline
def test_a_trickling_receiver_is_cut_off_at_10_s_while_other_deliveries_go(
    db: Database, make_settings: Any, healthy: Receiver
) -> None:
    """Four tasks notify a receiver that trickles a header line every 2 s; two senders (two
    workers) race. Each trickled delivery is sent once, by one sender, and its attempt ends
    as a timeout at about 10 s; the operator's target gets every event meanwhile."""
    slow = RawReceiver(trickle)
    settings = _settings(make_settings, notify_url=healthy.url, notify_retry_schedule=(60.0,))
    webhooks.configure(settings)
    slow_tasks = [pending_by_callback(db, settings, notify_url=slow.url) for _ in range(4)]
    others = [pending_by_callback(db, settings) for _ in range(8)]
    databases = [Database(db.url), Database(db.url)]
    senders = [Sender(settings, d, f"sender-{n}") for n, d in enumerate(databases)]
    threads = [threading.Thread(target=s.run_forever) for s in senders]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        # every event of the operator's target arrives while the trickled attempts hang on
        wait_for(lambda: sum(slow.now_in.values()) == len(slow_tasks), timeout=8)
        wait_for(lambda: len(healthy.received) >= len(slow_tasks) + len(others), timeout=8)
        healthy_done = time.monotonic()

        def recorded() -> list[Delivery]:
            rows = _rows(db, target_kind="task")
            return rows if all(row.attempts for row in rows) else []

        rows = wait_for(recorded, timeout=40, interval=0.2)
        # the receiver's threads notice the hang-ups on their next look (every 0.1 s)
        wait_for(lambda: len(slow.closed_at) == len(slow_tasks), timeout=20)
    finally:
        for sender in senders:
            sender.stopping.set()
        for thread in threads:
            thread.join(timeout=30)
        for sender, database in zip(senders, databases, strict=True):
            sender.close()
            database.dispose()
        slow.stop()
        webhooks.configure(None)
    assert healthy_done < min(slow.closed_at.values())
    assert all(r.verified for r in healthy.received)
    assert len(rows) == len(slow_tasks)
    for row in rows:
        (attempt,) = row.attempts
        assert attempt["status"] is None and "no answer within 10 s" in attempt["response"]
        assert 9_000 <= attempt["latency_ms"] < 25_000, attempt
        assert row.state == "pending" and row.tries == 1  # retried on the schedule
        assert slow.seen[row.webhook_id] == 1 and slow.most_at_once[row.webhook_id] == 1
    # the attempts ended: the sender hung up (at about 10 s, not after the minute of trickle)
    assert max(slow.closed_at.values()) - started < 25


# -- 2. a DNS label over 63 characters ----------------------------------------------------------


def test_a_too_long_dns_label_is_a_400_naming_notify_url_without_a_traceback(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_app().test_client()
    answer = client.post("/api/tasks", json={"user_prompt": "a hook", "notify_url": LONG_LABEL})
    assert answer.status_code == 400
    assert answer.get_json()["field"] == "notify_url"
    assert "notify_url" in answer.get_json()["error"]
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_name_no_resolver_takes_is_never_handed_to_the_resolver() -> None:
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["93.184.216.34"]

    guard = netguard.Guard(resolver=resolver)
    for name in ("a" * 64 + ".example.com", "a..example.com"):
        with pytest.raises(netguard.FetchError, match="could not resolve"):
            guard.resolve(name, 80)
    assert asked == []
    assert guard.resolve("a" * 63 + ".example.com", 80) == "93.184.216.34"


@pytest.mark.slow  # starts a process (gevent patches the whole interpreter)
def test_under_gevent_a_too_long_label_prints_no_traceback() -> None:
    """The web process runs under gevent, whose resolver prints a failure inside getaddrinfo
    (the UnicodeError of a label over 63 characters) as a traceback to stderr."""
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "from tracker.flows.bodies import check_notify_url\n"
        "try:\n"
        f"    check_notify_url('notify_url', {LONG_LABEL!r}, False)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "notify_url: could not resolve" in done.stdout
    assert "Traceback" not in done.stderr, done.stderr


# -- 3. a receiver that breaks off its body -----------------------------------------------------


@pytest.mark.parametrize("script", [broken_length, broken_chunks], ids=["length", "chunked"])
def test_a_receiver_that_breaks_off_its_body_is_an_ordinary_failed_attempt(
    db: Database, make_settings: Any, caplog: pytest.LogCaptureFixture, script: Any
) -> None:
    broken = RawReceiver(script)
    settings = _settings(make_settings, notify_url=broken.url, notify_retry_schedule=(0.0,))
    webhooks.configure(settings)
    try:
        task_id = pending_by_callback(db, settings)
        caplog.set_level(logging.INFO, logger="tracker.flows.notify")
        sender = Sender(settings, db, "test-sender")
        try:
            assert sender.run_once() == 2  # the first attempt and its one retry
        finally:
            sender.close()
    finally:
        broken.stop()
        webhooks.configure(None)
    (row,) = _rows(db, task_id=task_id)
    assert row.state == "failed" and row.tries == 2
    assert [a["status"] for a in row.attempts] == [None, None]
    assert all("answered 200, then broke off" in a["response"] for a in row.attempts)
    lines = [r for r in caplog.records if r.name == "tracker.flows.notify"]
    assert len(lines) == 2  # one line an attempt
    assert all(r.levelno == logging.INFO and not r.exc_info for r in lines)
    assert "Traceback" not in caplog.text and "unexpectedly" not in caplog.text


# -- the sender's bookkeeping -------------------------------------------------------------------


def test_attempts_are_recorded_together_and_each_row_settled(
    db: Database, make_settings: Any
) -> None:
    settings = _settings(make_settings, notify_url="http://127.0.0.1:9/hook")
    settings = settings.with_overrides(notify_retry_schedule=(5.0,))
    webhooks.configure(settings)
    try:
        for _ in range(4):
            pending_by_callback(db, settings)
    finally:
        webhooks.configure(None)
    with db.write_connection() as conn:
        mine = deliveries.claim(conn, "me", {"global": 3})
        assert len(mine) == 3
    (theirs,) = [row.id for row in _rows(db) if row.id not in {item.id for item in mine}]
    with db.write_connection() as conn:
        (other,) = deliveries.claim(conn, "someone-else", {"global": 5})
        assert other.id == theirs
    at = utcnow()
    results = [
        deliveries.Attempt(mine[0], deliveries.attempt_record(at, 204, 3, ""), True, "204", 3),
        deliveries.Attempt(mine[1], deliveries.attempt_record(at, 500, 3, "no"), False, "500", 3),
        deliveries.Attempt(mine[2], None, False, "not sent: lease too short", 0),  # not made
        deliveries.Attempt(other, deliveries.attempt_record(at, 204, 3, ""), True, "204", 3),
    ]
    with db.write_connection() as conn:
        states = deliveries.record(conn, settings, "me", results)
    rows = {row.id: row for row in _rows(db)}
    assert states == {
        mine[0].id: "succeeded",
        mine[1].id: "pending",
        mine[2].id: "pending",
        other.id: "pending",
    }
    assert rows[mine[0].id].claimed_by is None and len(rows[mine[0].id].attempts) == 1
    retried = rows[mine[1].id].next_attempt_at
    assert rows[mine[1].id].tries == 1 and retried is not None
    assert retried > at + timedelta(seconds=4)
    # not made: the lease given back, no try counted, no attempt shown
    assert rows[mine[2].id].claimed_by is None
    assert rows[mine[2].id].tries == 0 and rows[mine[2].id].attempts == []
    # another sender's lease: only the attempt is added, the row keeps its holder
    assert rows[other.id].claimed_by == "someone-else" and len(rows[other.id].attempts) == 1


def test_an_attempt_that_cannot_end_before_its_lease_is_not_made(
    db: Database, make_settings: Any, healthy: Receiver
) -> None:
    settings = _settings(make_settings, notify_url=healthy.url)
    webhooks.configure(settings)
    try:
        pending_by_callback(db, settings)
    finally:
        webhooks.configure(None)
    with db.write_connection() as conn:
        (item,) = deliveries.claim(conn, "me", {"global": 1})
    short = dataclasses.replace(item, lease_ends=time.monotonic() + 12)  # 10 s + 5 s won't fit
    sender = Sender(settings, db, "me")
    try:
        result = sender.deliver(short)
    finally:
        sender.close()
    assert result.record is None and healthy.received == []


def test_a_busy_host_s_rows_wait_while_other_hosts_go_first(
    db: Database, make_settings: Any
) -> None:
    settings = _settings(make_settings)
    webhooks.configure(settings)
    try:
        slow, fine = "http://127.0.0.1:9/slow", "http://192.0.2.7:9/fine"
        busy = [pending_by_callback(db, settings, notify_url=slow) for _ in range(6)]
        free = [pending_by_callback(db, settings, notify_url=fine) for _ in range(2)]
    finally:
        webhooks.configure(None)
    in_flight = Counter({"127.0.0.1": 3})  # the sender already has 3 attempts at that host
    with db.write_connection() as conn:
        taken = deliveries.claim(conn, "me", {"task": 8}, in_flight, per_host=4)
    hosts = Counter(deliveries.host_of(item.target) for item in taken)
    assert hosts == {"127.0.0.1": 1, "192.0.2.7": 2}
    waiting = [row for row in _rows(db, claimed_by=None) if row.task_id in busy]
    assert len(waiting) == 5
    now = utcnow()
    assert all((row.next_attempt_at or now) > now for row in waiting)  # put back, behind the rest
    assert all(row.tries == 0 and row.attempts == [] for row in waiting)
    assert {row.task_id for row in _rows(db, claimed_by="me")} >= set(free)
