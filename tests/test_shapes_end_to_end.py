"""Every corpus shape, played end to end: by callback, by polling only, by batch, as a create.

The upstream is a scripted server over real HTTP (tests/support/scripted.py); the tracker is the
real app (callbacks) or real worker passes (polling). A new file in tests/fixtures/upstream
is played here too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.scripted import Reply, ScriptedUpstream, raw_task
from tests.support.shapes import (
    check_final,
    corpus,
    final_task_payloads,
    load,
    named_id,
    unnamed_in_flight,
)
from tests.support.waiting import api_task
from tracker.db import Database
from tracker.flows import submit, worker
from tracker.flows.services import make_client
from tracker.settings import Settings
from tracker.tasks.models import Task
from tracker.tasks.schema import task_json
from tracker.tasks.store import NewTask
from tracker.upstream import account_rows

FINAL = final_task_payloads()


def stored(db: Database, task_id: int) -> dict[str, Any]:
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task_json(task, events=True)


def passes(settings: Settings, db: Database, task_ids: list[int], count: int = 20) -> None:
    """Worker passes (no archiving: the links are not real) until the tasks are final."""
    client = make_client(settings)
    runner = worker.Worker(settings, db, client)
    try:
        for _ in range(count):
            runner.run_once(archive=False)
            if all(stored(db, i)["state"] in ("completed", "failed") for i in task_ids):
                return
            time.sleep(0.02)
    finally:
        runner.close()
        client.close()


@pytest.mark.parametrize("path", FINAL, ids=[p.stem for p in FINAL])
def test_by_callback(path: Path, live: Any, upstream: ScriptedUpstream, db: Database) -> None:
    case = load(path)
    app = live(luma_api_base=upstream.url).url
    upstream.then(Reply(201, raw_task(named_id(case["body"]))))
    task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a fox"}, timeout=5).json()
    assert task["state"] == "pending"
    hook = upstream.creates()[-1].body["notify_hook"]
    assert requests.post(hook, json=case["body"], timeout=5).status_code == 200
    check_final(api_task(app, task["id"]), case["expected"])
    assert len(upstream.creates()) == 1
    assert unnamed_in_flight(db) == 0


@pytest.mark.parametrize("path", FINAL, ids=[p.stem for p in FINAL])
def test_by_polling_only(
    path: Path, db: Database, make_settings: Any, upstream: ScriptedUpstream
) -> None:
    case = load(path)
    upstream_id = named_id(case["body"])
    upstream.route("POST", "/luma/generations", Reply(201, raw_task(upstream_id)))
    upstream.route("POST", "/luma/tasks", Reply(404, {"detail": "Not Found"}))
    upstream.route("GET", f"/luma/generations/{upstream_id}", Reply(200, case["body"]))
    settings = make_settings(luma_api_base=upstream.url, poll_after=0.0)  # no callback URL
    client = make_client(settings)
    task = submit.submit(db, settings, client, NewTask(kind="generate", user_prompt="a fox"))
    client.close()
    assert "notify_hook" not in upstream.creates()[0].body
    passes(settings, db, [task.id])
    check_final(stored(db, task.id), case["expected"])
    assert len(upstream.creates()) == 1
    assert unnamed_in_flight(db) == 0


BATCHES = corpus("batch")


@pytest.mark.parametrize("path", BATCHES, ids=[p.stem for p in BATCHES])
def test_by_batch_query(
    path: Path, db: Database, make_settings: Any, upstream: ScriptedUpstream
) -> None:
    case = load(path)
    wanted = case["expected"]["updates"]
    upstream.route(
        "POST", "/luma/generations", *[Reply(201, raw_task(w["upstream_id"])) for w in wanted]
    )
    upstream.route("POST", "/luma/tasks", Reply(200, case["body"]))
    settings = make_settings(luma_api_base=upstream.url, poll_after=0.0)
    client = make_client(settings)
    ids = [
        submit.submit(db, settings, client, NewTask(kind="generate", user_prompt="a fox")).id
        for _ in wanted
    ]
    client.close()
    passes(settings, db, ids, count=1)
    for task_id, want in zip(ids, wanted, strict=True):
        task = stored(db, task_id)
        assert task["upstream_id"] == want["upstream_id"]
        assert task["state"] == want["state"]
        if want["state"] == "completed":
            assert task["video_url"] == want["video_url"]
        if "progress" in want and want["state"] != "completed":
            assert task["progress"] == want["progress"]
    assert not [s for s in upstream.seen if s.method == "GET"]  # the batch said it all
    assert len(upstream.creates()) == len(wanted)


CREATES = corpus("create")


@pytest.mark.parametrize("path", CREATES, ids=[p.stem for p in CREATES])
def test_create_answer(
    path: Path, live: Any, db: Database, make_settings: Any, upstream: ScriptedUpstream
) -> None:
    """Accepted: followed by its id. Refused: rejected with the upstream's words. Neither:
    outcome unknown. Whatever the answer, the create is sent exactly once."""
    case = load(path)
    expected = case["expected"]
    app = live(luma_api_base=upstream.url).url
    upstream.route("POST", "/luma/generations", Reply(200, case["body"]))
    task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a fox"}, timeout=5).json()
    hook = upstream.creates()[0].body["notify_hook"]
    if expected["outcome"] == "accepted":
        assert task["state"] == "pending"
        assert task["upstream_id"] == expected["update"]["upstream_id"]
    elif expected["outcome"] == "refused" and account_rows.no_credit(expected["reason"], None):
        # not charged, and no credit: the account pauses, the task waits for one with credit
        assert task["state"] == "queued" and task["upstream_id"] is None
        paused = requests.get(f"{app}/api/accounts", timeout=5).json()["accounts"][0]
        assert paused["paused_until"] is not None
    elif expected["outcome"] == "refused":
        assert task["state"] == "rejected"
        assert task["failure_reason"] == f"upstream refused: {expected['reason']}"
        assert task["upstream_id"] is None
        # nothing was created: nothing may call back
        late = {"id": "x", "state": "completed", "video": "https://cdn.example/x.mp4"}
        assert requests.post(hook, json=late, timeout=5).status_code == 404
    else:
        assert task["state"] == "rejected"
        assert task["failure_reason"].startswith("outcome unknown: the answer named no task id")
        assert task["upstream_id"] is None
    worker.run_once(make_settings(luma_api_base=upstream.url, poll_after=0.0), db=db)
    assert len(upstream.creates()) == 1  # never resent on its own
    assert api_task(app, task["id"])["state"] == task["state"]
    assert unnamed_in_flight(db) == 0
