"""The group commit (tracker/web/callbacks.py) and PostgreSQL's batched callback write
(tracker/tasks/callback_writes_pg.py): many callbacks at once, each stored, each answered
with its own outcome, none waiting forever.

The queue's own behaviour is tested with a plain function as the batch's writer; the write
itself on a real PostgreSQL, with callbacks sent from threads as the web's greenlets send them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from tests.support.databases import TEST_DATABASE_URL
from tests.support.sent import sent_task
from tracker.db import Database
from tracker.tasks import callback_writes as ingest
from tracker.tasks import callback_writes_pg, rows
from tracker.tasks.models import Delivery, Task
from tracker.upstream.parse import Update
from tracker.web import callbacks as batching


class Item(batching.Waiting):
    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        super().__init__()
        self.value = value


def _in_threads(count: int, target: Any) -> list[Any]:
    results: list[Any] = [None] * count

    def run(n: int) -> None:
        try:
            results[n] = target(n)
        except Exception as exc:  # the test reads it
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a caller never got its answer"
    return results


def test_callers_waiting_together_are_written_together_each_with_its_own_outcome() -> None:
    batches: list[list[int]] = []

    def write_batch(batch: list[Item]) -> None:
        time.sleep(0.05)  # a slow database: the others arrive meanwhile
        batches.append([item.value for item in batch])
        for item in batch:
            item.outcome = item.value * 10

    writer = batching.GroupWriter(write_batch)
    assert _in_threads(20, lambda n: writer.write(Item(n))) == [n * 10 for n in range(20)]
    assert sorted(v for batch in batches for v in batch) == list(range(20))  # each once
    assert len(batches) < 20 and max(len(batch) for batch in batches) > 1


def test_a_failed_batch_is_every_callers_error_and_the_next_batch_is_written() -> None:
    def write_batch(batch: list[Item]) -> None:
        if any(item.value < 0 for item in batch):
            raise RuntimeError("the database went away")
        for item in batch:
            item.outcome = "stored"

    writer = batching.GroupWriter(write_batch)
    with pytest.raises(RuntimeError, match="went away"):
        writer.write(Item(-1))
    assert writer.write(Item(1)) == "stored"


def test_callers_of_a_failed_batch_each_raise_their_own_copy_of_its_error() -> None:
    """The web maps the type to its answer (a lost database: 503), so the type and text stay;
    each caller's traceback is its own, not one object every caller's frames are added to."""
    lost = OperationalError("UPDATE tasks ...", {}, ConnectionError("server closed"))

    def write_batch(batch: list[Item]) -> None:
        time.sleep(0.05)  # the others arrive meanwhile
        raise lost

    writer = batching.GroupWriter(write_batch)
    errors = _in_threads(6, lambda n: writer.write(Item(n)))
    assert all(type(error) is OperationalError for error in errors)
    assert {str(error) for error in errors} == {str(lost)}
    assert all(isinstance(error.orig, ConnectionError) for error in errors)
    assert len({id(error) for error in errors} | {id(lost)}) == 7  # no two callers share one


def test_writers_end_when_idle_and_come_back_for_the_next_callback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Database no longer used keeps no thread (tests and `tracker db copy` make many)."""
    monkeypatch.setattr(batching, "IDLE", 0.05)

    def write_batch(batch: list[Item]) -> None:
        for item in batch:
            item.outcome = threading.current_thread()

    writer = batching.GroupWriter(write_batch)
    first = writer.write(Item(1))
    first.join(timeout=5)
    assert not first.is_alive() and writer._running == 0
    second = writer.write(Item(2))  # a writer again
    assert second is not first and second.name == "group-commit"


def test_a_forked_process_starts_its_own_writer() -> None:
    """A process forked after callbacks were written (its parent's writer is not copied)."""

    def write_batch(batch: list[Item]) -> None:
        for item in batch:
            item.outcome = os.getpid()

    writer = batching.GroupWriter(write_batch)
    assert writer.write(Item(1)) == os.getpid()  # the parent's writer runs (IDLE 5 s)
    child = os.fork()
    if child == 0:  # the child: its exit code is the assertion
        os._exit(0 if writer.write(Item(2)) == os.getpid() else 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(child, 9)
    os.waitpid(child, 0)
    pytest.fail("the forked process's callback was never written")


TOKENS = [f"group-commit-token-{n}-" + "z" * 24 for n in range(3)]


def _progress(db: Database, settings: Any, task: int, progress: int) -> bool | None:
    upd = Update(understood=True, state="processing", upstream_id=f"up-{task}", progress=progress)
    return batching.write(db, settings, TOKENS[task], upd, {"progress": progress})


def _stored(db: Database, task_id: int) -> tuple[int | None, list[int]]:
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        sent = sorted(json.loads(e.payload)["progress"] for e in task.events if e.payload)
        return task.progress, sent


def test_many_callbacks_at_once_on_few_tasks_are_all_stored(
    db: Database, make_settings: Any
) -> None:
    """Batches then hold several callbacks of one task (and on PostgreSQL two batches may want
    the same row: one skips it): every callback is stored, and each task keeps the largest
    progress it was sent."""
    settings = make_settings()
    ids = [sent_task(db, token, f"up-{n}", "processing") for n, token in enumerate(TOKENS)]
    sent = list(range(1, 61))

    results = _in_threads(len(sent), lambda n: _progress(db, settings, n % 3, sent[n]))
    assert results == [False] * len(sent)
    for n, task_id in enumerate(ids):
        mine = [p for i, p in enumerate(sent) if i % 3 == n]
        assert _stored(db, task_id) == (max(mine), mine)


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs TEST_DATABASE_URL (CI sets it)")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SKIP LOCKED
def test_a_callback_for_a_row_another_transaction_holds_is_written_once_it_is_free(
    db: Database, make_settings: Any
) -> None:
    """The batch skips a locked row rather than wait for it; after its tries the callback
    waits for the lock in the locked way, and is stored once the holder is done."""
    settings = make_settings()
    task_id = sent_task(db, TOKENS[0], "up-0", "processing")
    answered: list[bool | None] = []
    with db.write() as session:
        session.execute(text("SELECT id FROM tasks WHERE id = :id FOR UPDATE"), {"id": task_id})
        caller = threading.Thread(target=lambda: answered.append(_progress(db, settings, 0, 42)))
        caller.start()
        caller.join(timeout=1.0)
        assert caller.is_alive() and answered == []  # waiting for the row, not answered
        session.execute(text("UPDATE tasks SET progress = 7 WHERE id = :id"), {"id": task_id})
    caller.join(timeout=30)
    assert answered == [False]
    assert _stored(db, task_id) == (42, [42])


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs TEST_DATABASE_URL (CI sets it)")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # the batched write
def test_callbacks_of_one_task_in_one_batch_are_decided_in_order_and_written_as_one(
    db: Database, make_settings: Any
) -> None:
    """The second is decided on the task as the first leaves it: a smaller progress after a
    larger one keeps the larger (decided on the row as read, it would write 30). Both events
    are stored, an identical third once, and a move after them waits for a later batch."""
    settings = make_settings()
    task_id = sent_task(db, TOKENS[0], "up-0", "processing")
    token_hash = rows.hash_token(TOKENS[0])

    def one(progress: int | None, state: str = "processing") -> batching.Callback:
        upd = Update(understood=True, state=state, upstream_id="up-0", progress=progress)
        return batching.Callback(db, settings, token_hash, upd, {"progress": progress})

    batch = [one(70), one(30), one(30), one(None, "failed")]
    callback_writes_pg.write_batch(batch)
    assert [item.outcome for item in batch[:3]] == [False, False, False]
    assert batch[3].outcome is callback_writes_pg.AGAIN  # a move: once the others are written
    assert _stored(db, task_id) == (70, [30, 70])


# -- SQLite: a batch is one transaction, written in arrival order ----------------------------


def _sqlite_callback(
    db: Database,
    settings: Any,
    token: str,
    progress: int | None,
    state: str = "processing",
    upstream_id: str = "up-0",
) -> batching.Callback:
    upd = Update(understood=True, state=state, upstream_id=upstream_id, progress=progress)
    payload = {"state": state, "progress": progress}
    return batching.Callback(db, settings, rows.hash_token(token), upd, payload)


def _history(db: Database, task_id: int) -> list[tuple[str | None, int | None]]:
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        ordered = sorted(task.events, key=lambda e: e.id)
        found = [json.loads(e.payload) for e in ordered if e.payload]
        return [(p["state"], p["progress"]) for p in found if "progress" in p]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_sqlite_batch_is_written_in_order_a_move_with_webhooks_between_its_runs(
    db: Database, make_settings: Any
) -> None:
    """Each callback is decided on the task as the one before left it. A move that makes
    webhook deliveries is written alone the locked way (with its delivery),
    between the callbacks before it and after it, so the one after it sees it (ignored)."""
    settings = make_settings()
    task_id = sent_task(db, TOKENS[0], "up-0", "processing", notify_url="https://example.com/h")
    batch = [
        _sqlite_callback(db, settings, TOKENS[0], 70),
        _sqlite_callback(db, settings, TOKENS[0], 30),
        _sqlite_callback(db, settings, TOKENS[0], None, "failed"),
        _sqlite_callback(db, settings, TOKENS[0], 90),
        _sqlite_callback(db, settings, "no-such-token-000000000000000000000", 5),
    ]
    ingest.write_batch(batch)
    assert [item.error for item in batch] == [None] * 5
    assert [item.outcome for item in batch] == [False, False, True, False, None]
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None and task.state == "failed"
        types = [d.type for d in session.scalars(select(Delivery).order_by(Delivery.id))]
        assert types == ["task.processing", "task.failed"]  # the first made by sent_task
    assert _history(db, task_id) == [
        ("processing", 70),
        ("processing", 30),
        ("failed", None),
        ("processing", 90),
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_one_callback_a_sqlite_batch_cannot_store_fails_only_itself(
    db: Database, make_settings: Any
) -> None:
    settings = make_settings()
    ids = [sent_task(db, token, f"up-{n}", "processing") for n, token in enumerate(TOKENS)]
    batch = [
        _sqlite_callback(db, settings, token, 40 + n, upstream_id=f"up-{n}")
        for n, token in enumerate(TOKENS)
    ]

    class Unwritable:
        def __str__(self) -> str:
            raise RuntimeError("this payload cannot be stored")

    batch[1].payload = {"progress": Unwritable(), "state": "processing"}

    ingest.write_batch(batch)
    assert isinstance(batch[1].error, RuntimeError)
    assert [batch[0].outcome, batch[2].outcome] == [False, False]
    assert [batch[0].error, batch[2].error] == [None, None]
    assert _stored(db, ids[0]) == (40, [40]) and _stored(db, ids[2]) == (42, [42])
    assert _stored(db, ids[1]) == (None, [])  # nothing of the failed one


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_sqlite_batch_waits_for_the_lock_only_as_long_as_its_oldest_caller_has_left(
    db: Database, make_settings: Any
) -> None:
    """A caller that queued for the web's whole lock wait behind a batch that waited out a
    locked database is answered (503) at once, not made to wait a second time; one that just
    came waits for the lock as before, and is stored when it is let go within the wait."""
    settings = make_settings()
    task_id = sent_task(db, TOKENS[0], "up-0", "processing")
    web = Database(db.url, lock_wait=2.0)  # as the web process opens it
    holder = sqlite3.connect(db.url.removeprefix("sqlite:///"), check_same_thread=False)
    try:
        for progress, queued, stored in ((10, 2.0, False), (20, 0.0, True)):
            item = _sqlite_callback(web, settings, TOKENS[0], progress)
            item.since -= queued
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock...
            release = threading.Timer(0.5, holder.rollback)  # ...for half a second
            release.start()
            ingest.write_batch([item])
            release.join()
            assert (item.error is None) is stored, item.error
            assert isinstance(item.error, OperationalError) or item.outcome is False
        assert _stored(db, task_id) == (20, [20])
    finally:
        holder.close()
        web.dispose()
