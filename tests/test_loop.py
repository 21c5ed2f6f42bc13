"""The whole loop against the simulated upstream: submit, callbacks, completed; extend it.

Every test runs on both dialects (LUMA_API_FLAVOR=proxy and luma): the same API, states
and callback route, whichever API the simulator speaks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from lumasim.simulator import Simulator
from tests.support.waiting import api_task, wait_for
from tracker.flows import worker
from tracker.upstream import accounts, dialects
from tracker.upstream.operations import Generate

FLAVORS = ["proxy", "luma"]


@pytest.fixture(params=FLAVORS)
def flavor(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def sim(flavor: str) -> Iterator[Simulator]:
    """The simulated upstream speaking this test's dialect."""
    simulator = Simulator(processing_after=0.2, complete_after=0.6, flavor=flavor).start()
    yield simulator
    simulator.stop()


def test_submit_to_completed_by_callbacks_then_extend(live, sim, flavor) -> None:  # type: ignore[no-untyped-def]
    app = live(luma_api_base=sim.url, luma_api_flavor=flavor).url
    created = requests.post(
        f"{app}/api/tasks", json={"user_prompt": "a paper boat on a lake"}, timeout=5
    )
    assert created.status_code == 201
    task = created.json()
    assert task["state"] == "pending"
    assert task["upstream"] == flavor

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
    source = sim.tasks[finished["upstream_id"]].source_id
    assert source == done["upstream_id"]  # the upstream extended that very video


def test_submit_to_completed_by_polling_only(  # type: ignore[no-untyped-def]
    live, sim, flavor, db, make_settings
) -> None:
    accounts.forget_manners()
    app = live(callbacks=False, luma_api_base=sim.url, luma_api_flavor=flavor, poll_after=0.1).url
    task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a red kite"}, timeout=5).json()
    assert task["state"] == "pending"
    settings = make_settings(luma_api_base=sim.url, luma_api_flavor=flavor, poll_after=0.1)

    def finished() -> dict[str, Any] | None:
        worker.run_once(settings, db=db)
        shown = api_task(app, task["id"])
        return shown if shown["state"] == "completed" and shown["media_url"] else None

    done = wait_for(finished, timeout=20, interval=0.1)
    assert done["video_url"].startswith(sim.url)
    assert done["thumbnail_url"].startswith(sim.url)
    assert {e["source"] for e in done["events"]} >= {"submit", "poll"}
    assert not [e for e in done["events"] if e["source"] == "callback"]
    archived = requests.get(app + done["media_url"], timeout=5)
    assert archived.status_code == 200 and archived.content[4:8] == b"ftyp"
    routes = {r.route for r in sim.requests}
    if flavor == "luma":
        assert "batch" not in routes  # Luma's API has none: the worker never tried one
    assert sim.creates == 1


def test_failure_reported_by_callback(live, sim, flavor) -> None:  # type: ignore[no-untyped-def]
    app = live(luma_api_base=sim.url, luma_api_flavor=flavor).url
    task = requests.post(
        f"{app}/api/tasks", json={"user_prompt": "please fail this one"}, timeout=5
    ).json()
    failed = wait_for(lambda: (t := api_task(app, task["id"]))["state"] == "failed" and t)
    assert failed["failure_reason"] == "Frame moderation failed"


def test_extending_an_unfinished_video_is_rejected(live, sim, flavor) -> None:  # type: ignore[no-untyped-def]
    """A tracked source still running is a 400 naming source_task_id, and nothing is stored;
    an untracked one reaches the upstream, which refuses it (the task is rejected)."""
    app = live(luma_api_base=sim.url, luma_api_flavor=flavor).url
    first = requests.post(f"{app}/api/tasks", json={"user_prompt": "a red kite"}, timeout=5).json()
    refused = requests.post(
        f"{app}/api/tasks",
        json={"source_task_id": first["upstream_id"], "user_prompt": "more kite"},
        timeout=5,
    )
    assert refused.status_code == 400 and refused.json()["field"] == "source_task_id"
    assert f"task {first['id']}" in refused.json()["error"]
    assert "not completed" in refused.json()["error"]
    listed = requests.get(f"{app}/api/tasks", timeout=5).json()
    assert [task["id"] for task in listed["tasks"]] == [first["id"]]
    made = dialects.get(flavor).request(Generate("elsewhere"), None)  # in another tool
    headers = {"Authorization": f"Bearer {sim.api_key}"} if sim.api_key else {}
    answer = requests.post(f"{sim.url}{made.path}", json=made.body, headers=headers, timeout=5)
    untracked = answer.json()["id"]
    sim.set_state(untracked, "dreaming")
    second = requests.post(
        f"{app}/api/tasks",
        json={"source_task_id": untracked, "user_prompt": "more kite"},
        timeout=5,
    ).json()
    assert second["state"] == "rejected"
    assert "completed" in second["failure_reason"]
