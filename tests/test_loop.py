"""The whole loop against the simulated upstream: submit, callbacks, completed; extend it."""

from __future__ import annotations

import requests

from tests.conftest import api_task, wait_for


def test_submit_to_completed_by_callbacks_then_extend(live, sim) -> None:  # type: ignore[no-untyped-def]
    app = live(luma_api_base=sim.url).url
    created = requests.post(
        f"{app}/api/tasks", json={"user_prompt": "a paper boat on a lake"}, timeout=5
    )
    assert created.status_code == 201
    task = created.json()
    assert task["state"] == "pending"

    done = wait_for(lambda: (t := api_task(app, task["id"]))["state"] == "completed" and t)
    assert done["video_url"].startswith(sim.url)
    assert done["thumbnail_url"]
    states = [e["state_after"] for e in done["events"] if e["source"] == "callback"]
    assert states == ["processing", "completed"]
    video = requests.get(done["video_url"], timeout=5)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"  # a real MP4

    extend = requests.post(
        f"{app}/api/tasks",
        json={"source_task_id": done["upstream_id"], "user_prompt": "the boat sails away"},
        timeout=5,
    ).json()
    assert extend["kind"] == "extend"
    finished = wait_for(lambda: (t := api_task(app, extend["id"]))["state"] == "completed" and t)
    assert finished["source_task_id"] == done["upstream_id"]
    assert sim.creates == 2


def test_failure_reported_by_callback(live, sim) -> None:  # type: ignore[no-untyped-def]
    app = live(luma_api_base=sim.url).url
    task = requests.post(
        f"{app}/api/tasks", json={"user_prompt": "please fail this one"}, timeout=5
    ).json()
    failed = wait_for(lambda: (t := api_task(app, task["id"]))["state"] == "failed" and t)
    assert failed["failure_reason"] == "Frame moderation failed"


def test_extending_an_unfinished_video_is_rejected(live, sim) -> None:  # type: ignore[no-untyped-def]
    app = live(luma_api_base=sim.url).url
    first = requests.post(f"{app}/api/tasks", json={"user_prompt": "a red kite"}, timeout=5).json()
    second = requests.post(
        f"{app}/api/tasks",
        json={"source_task_id": first["upstream_id"], "user_prompt": "more kite"},
        timeout=5,
    ).json()
    assert second["state"] == "rejected"
    assert "completed" in second["failure_reason"]
