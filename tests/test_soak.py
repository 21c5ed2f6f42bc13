"""The soak (issue 23): the whole pipeline under load and faults, and the report that judges it.

The quick variant runs the real thing — two trackers (gunicorn and a worker each) on a private
PostgreSQL, moto's S3 server, the busy upstream and the signature-checking receiver, each its
own process — with a short fault schedule, and asserts the zeros (not the timings: this machine
is shared). The report's counting is checked on its own too, on a database holding every kind
of loss, so a report of zeros is known to be able to say otherwise.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from bench import bench_soak, soak_report
from bench.soak_report import Submitted, Window
from lumasim.media import distinct_video
from tests.support.factory import add_callbacks, make_task, set_fields
from tests.support.private_postgres import PostgresNotInstalled, server_binaries
from tracker.db import Database


def _binaries_or_skip() -> None:
    try:
        server_binaries()
    except PostgresNotInstalled as exc:
        pytest.skip(f"the soak starts its own PostgreSQL: {exc}")


@pytest.mark.slow
def test_quick_soak_loses_nothing_under_faults() -> None:
    _binaries_or_skip()
    plan = replace(bench_soak.QUICK, drain=300.0)  # a loaded machine drains slower: no timings
    report, text = bench_soak.soak(plan)
    assert {name: n for name, n in report.zeros().items() if n} == {}, text
    assert report.tasks >= plan.tasks, text
    assert report.by_state["completed"] > 0 and report.by_state["failed"] > 0, text
    # the faults really happened: a soak without them would prove nothing
    assert report.chaos["postgres restart"] == 1 and report.chaos["receiver down"] == 1, text
    kills = sum(n for what, n in report.chaos.items() if what.startswith("kill -9"))
    assert kills >= 3, text
    assert {429, 500, 503} <= set(report.upstream_faults), text
    assert report.callbacks_lost > 0 and report.callbacks_200 > 0, text
    assert report.webhook_refused > 0, text


Entry = dict[str, object]


def _log(**fields: object) -> Entry:
    return {"t": time.time(), **fields}


def test_the_report_counts_every_kind_of_loss(db: Database) -> None:
    """Each figure that must be 0 is not, on a run where that thing went wrong."""
    good = make_task(db, "completed", user_prompt="soak 0", upstream_id="u-good")
    bad = make_task(db, "completed", user_prompt="soak 1", upstream_id="u-bad")
    missing = make_task(db, "completed", user_prompt="soak 2", upstream_id="u-missing")
    stuck = make_task(db, "processing", user_prompt="soak 3", upstream_id="u-stuck")
    failed = make_task(db, "failed", user_prompt="soak 4 that will fail", upstream_id="u-failed")
    heard = {"id": "u-good", "state": "completed"}
    # Luma's Generation echoes its request, whose callback_url (the token) is stored masked
    echoed = {"id": "u-good", "state": "dreaming", "request": {"prompt": "soak 0"}}
    sent = {**echoed, "request": {"prompt": "soak 0", "callback_url": "http://h/cb/secret"}}
    stored = {**echoed, "request": {"prompt": "soak 0", "callback_url": "http://h/cb/[masked]"}}
    add_callbacks(db, good.id, [heard, stored])
    for task in (good, bad, missing):
        set_fields(db, task.id, media_path=f"{task.id}.mp4")
    objects = {
        f"{good.id}.mp4": distinct_video("u-good.mp4"),
        f"{bad.id}.mp4": distinct_video("u-good.mp4"),  # another task's video
    }
    upstream_log = [
        _log(ev="create", id="u-good", prompt="soak 0"),
        _log(ev="create", id="u-bad", prompt="soak 1"),
        _log(ev="create", id="u-bad2", prompt="soak 1"),  # paid twice
        _log(ev="callback", id="u-good", status=200, body=heard),
        _log(ev="callback", id="u-good", status=200, body=sent),  # stored, token masked
        _log(ev="callback", id="u-good", status=200, body={**sent, "state": "queued"}),
        _log(ev="callback", id="u-bad", status=200, body={"id": "u-bad", "state": "completed"}),
        _log(ev="callback", id="u-stuck", status=500, body={"id": "u-stuck"}),
        _log(ev="callback", id="u-failed", status=503, body={"id": "u-failed"}),
    ]

    def hook(task_id: int, kind: str, status: int = 204, verified: bool = True) -> Entry:
        return _log(ev="webhook", task=task_id, type=kind, status=status, verified=verified)

    receiver_log = [
        hook(good.id, "task.completed"),
        hook(good.id, "task.completed"),  # a duplicate: allowed, counted
        hook(good.id, "task.archived"),
        hook(bad.id, "task.completed"),
        hook(bad.id, "task.archived", status=500),  # refused, never received after
        hook(missing.id, "task.completed", verified=False),
        hook(missing.id, "task.archived"),
    ]
    submitted = [
        Submitted(0, "soak 0", "a", "calm", time.time(), 201, good.id),
        Submitted(5, "soak 5", "b", "calm", time.time(), 201, 9999),  # answered, not stored
        Submitted(6, "soak 6", "b", "chaos", time.time(), 0, None),  # no answer, no task
    ]
    report = soak_report.count(
        db.engine,
        objects.get,
        upstream_log,
        receiver_log,
        submitted,
        [Window("kill", 0.0, 1.0)],
        {"calm": (time.time() - 60, time.time())},
    )
    zeros = report.zeros()
    assert zeros["tasks lost"] == 2, report.lost
    assert report.unfinished == [stuck.id]
    assert report.archive_missing == [missing.id]
    assert report.archive_different == [bad.id]
    assert report.creates_twice == [bad.id]
    assert sorted(report.webhooks_missing) == sorted(
        [f"task {bad.id} task.archived", f"task {failed.id} task.failed"]
    )
    assert zeros["webhooks with a bad signature"] == 1
    assert report.webhook_duplicates == 1 and report.webhook_refused == 1
    assert report.callbacks_200 == 4
    assert report.callbacks_not_stored == ["u-good queued", "u-bad completed"]
    assert report.server_errors == ["callback for u-stuck: 500"]
    assert report.callbacks_refused == {500: 1, 503: 1}
    assert json.dumps(zeros)  # printable as it is
