"""No code path leaves a task `pending` or `processing` without an upstream id.

Such a task could never be queried: it would sit until its timeout, hours later, and the
user would never learn why. Each path that could do it is played here in its order of
arrival: a callback before the create's answer, a late answer after the lease ran out,
a callback for a task given up as "outcome unknown".
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests

from tests.support.scripted import Reply, ScriptedUpstream, raw_task
from tests.support.sent import submit_in_background
from tests.support.shapes import unnamed_in_flight
from tests.support.waiting import api_task, wait_for
from tracker.db import Database
from tracker.flows.services import make_client
from tracker.tasks import claims
from tracker.tasks.models import Task

VIDEO = "https://cdn.example/v.mp4"


def submit_held(app: str, upstream: ScriptedUpstream, answer: Reply) -> tuple[Any, str, Any]:
    """Submit through the API while the upstream holds its answer."""
    hold = threading.Event()
    answer.hold = hold
    upstream.route("POST", "/luma/generations", answer)
    result: dict[str, Any] = {}

    def post() -> None:
        result["task"] = requests.post(
            f"{app}/api/tasks", json={"user_prompt": "a fox"}, timeout=10
        ).json()

    thread = threading.Thread(target=post)
    thread.start()
    wait_for(lambda: upstream.creates())
    return thread, upstream.creates()[0].body["notify_hook"], (hold, result)


def only_task(app: str) -> dict[str, Any]:
    tasks = requests.get(f"{app}/api/tasks", timeout=5).json()["tasks"]
    assert len(tasks) == 1
    return api_task(app, tasks[0]["id"])


@pytest.mark.parametrize(
    ("callback", "answer", "state", "upstream_id"),
    [
        # a callback naming no task is kept, and waits for the answer that names it
        ({"state": "dreaming"}, raw_task("up-1"), "pending", "up-1"),
        ({"status": "running", "progress": 20}, raw_task("up-1"), "pending", "up-1"),
        # ... and if the answer names none either, the outcome is unknown
        ({"state": "dreaming"}, {"code": "success", "data": None}, "rejected", None),
        # a callback that names the task: its news stands, whatever the answer says
        (raw_task("up-9", "processing"), {}, "processing", "up-9"),
        (raw_task("up-9", "processing"), {"code": 500, "message": "busy"}, "processing", "up-9"),
    ],
    ids=["no-id-then-id", "no-id-progress-then-id", "no-id-twice", "id-then-none", "id-then-no"],
)
def test_a_callback_before_the_create_answer(
    live: Any,
    upstream: ScriptedUpstream,
    db: Database,
    callback: dict[str, Any],
    answer: dict[str, Any],
    state: str,
    upstream_id: str | None,
) -> None:
    app = live(luma_api_base=upstream.url).url
    thread, hook, (hold, result) = submit_held(app, upstream, Reply(200, answer))
    assert requests.post(hook, json=callback, timeout=5).status_code == 200
    assert only_task(app)["state"] in ("submitting", "processing")
    assert unnamed_in_flight(db) == 0
    hold.set()
    thread.join(10)
    task = api_task(app, result["task"]["id"])
    assert (task["state"], task["upstream_id"]) == (state, upstream_id)
    if state == "rejected":
        assert task["failure_reason"].startswith("outcome unknown")
    assert unnamed_in_flight(db) == 0
    assert len(upstream.creates()) == 1


@pytest.mark.parametrize(
    ("answer", "state", "reason"),
    [
        (raw_task("up-slow"), "pending", None),
        ({"code": "success", "message": "", "data": None}, "rejected", "outcome unknown"),
        # (a refusal for want of credit moves the task to another account: tests/test_accounts.py)
        ({"code": 500, "message": "prompt refused by moderation"}, "rejected", "upstream refused"),
    ],
    ids=["names-it", "names-nothing", "refused"],
)
def test_an_answer_after_the_lease_ran_out(
    db: Database,
    make_settings: Any,
    upstream: ScriptedUpstream,
    answer: dict[str, Any],
    state: str,
    reason: str | None,
) -> None:
    """The task was given up as "outcome unknown" mid-send; the answer then settles it."""
    settings = make_settings(luma_api_base=upstream.url, lease_seconds=0.2, read_timeout=10.0)
    hold = threading.Event()
    upstream.route("POST", "/luma/generations", Reply(200, answer, hold=hold))
    client = make_client(settings)
    sender, done = submit_in_background(db, settings, client)
    wait_for(lambda: claims.recover_interrupted_submissions(db))  # the lease ran out
    hold.set()
    sender.join(10)
    client.close()
    with db.read() as session:
        task = session.get(Task, done["task"].id)
        assert task is not None
        assert task.state == state
        if reason:
            assert (task.failure_reason or "").startswith(reason)
            assert task.upstream_id is None
        if reason == "upstream refused":
            assert "prompt refused by moderation" in (task.failure_reason or "")
            assert task.callback_token_hash is None
    assert unnamed_in_flight(db) == 0
    assert len(upstream.creates()) == 1


@pytest.mark.parametrize(
    ("callback", "state", "upstream_id"),
    [
        ({"state": "dreaming"}, "rejected", None),  # cannot be followed: stays given up
        (raw_task("up-7", "processing"), "processing", "up-7"),  # named: followed again
        ({"status": "succeed", "output": {"video_url": VIDEO}}, "completed", None),
    ],
    ids=["no-id", "with-id", "finished-without-id"],
)
def test_a_callback_for_a_task_given_up_as_unknown(
    live: Any,
    upstream: ScriptedUpstream,
    db: Database,
    callback: dict[str, Any],
    state: str,
    upstream_id: str | None,
) -> None:
    app = live(luma_api_base=upstream.url).url
    upstream.route("POST", "/luma/generations", Reply(502, "<html>Bad Gateway</html>"))
    task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a fox"}, timeout=5).json()
    assert task["failure_reason"].startswith("outcome unknown")
    hook = upstream.creates()[0].body["notify_hook"]
    assert requests.post(hook, json=callback, timeout=5).status_code == 200
    after = api_task(app, task["id"])
    assert (after["state"], after["upstream_id"]) == (state, upstream_id)
    assert unnamed_in_flight(db) == 0
