"""Issue 20, item 3: every operation of Luma's own API as a task, end to end.

Each kind goes queued -> completed -> archived on the simulator (which plays Luma's API, its
new routes included) through the JSON API, with callbacks and with callbacks off (the worker's
queries alone). Upscale and added audio answer with their source's own id: the source's
archived copy must stay what it was. Real HTTP and a real database throughout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from lumasim.simulator import Simulator
from tests.support.factory import make_task
from tracker.db import Database
from tracker.flows import worker

pytestmark = pytest.mark.slow


@pytest.fixture
def luma() -> Iterator[Simulator]:
    simulator = Simulator(processing_after=0.1, complete_after=0.3, flavor="luma").start()
    yield simulator
    simulator.stop()


class Tracker:
    """A live tracker on Luma's dialect, and the worker passes that follow and archive."""

    def __init__(self, live: Any, make_settings: Any, db: Database, sim: Simulator, hooks: bool):
        common = {"luma_api_base": sim.url, "luma_api_flavor": "luma", "poll_after": 0.0}
        server = live(callbacks=hooks, **common)
        self.url, self.db = server.url, db
        self.settings = make_settings(public_base_url=server.url if hooks else "", **common)

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = requests.post(f"{self.url}/api/tasks", json=body, timeout=10)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def task(self, task_id: int) -> dict[str, Any]:
        return dict(requests.get(f"{self.url}/api/tasks/{task_id}", timeout=10).json())

    def archived(self, task_id: int) -> dict[str, Any]:
        """Worker passes until the task is completed and archived (or a final failure)."""
        task: dict[str, Any] = {}
        for _ in range(150):
            worker.run_once(self.settings, db=self.db)
            task = self.task(task_id)
            if task["media_url"] or task["state"] in ("failed", "rejected", "timed_out"):
                break
            time.sleep(0.05)
        assert task["state"] == "completed" and task["media_url"], task
        return task

    def media(self, task: dict[str, Any]) -> requests.Response:
        answer = requests.get(f"{self.url}{task['media_url']}", timeout=10)
        assert answer.status_code == 200
        return answer


KINDS = [
    ("extend", {"user_prompt": "the heron lands"}),
    ("upscale", {"resolution": "1080p"}),
    ("audio", {"user_prompt": "wings and wind", "negative_prompt": "music"}),
    ("modify", {"mode": "flex_1", "user_prompt": "in snow"}),
    ("reframe", {"aspect_ratio": "9:16"}),
]


@pytest.mark.parametrize("hooks", [True, False], ids=["callbacks", "queries"])
@pytest.mark.parametrize(("kind", "given"), KINDS, ids=[kind for kind, _ in KINDS])
def test_each_operation_on_a_video_goes_to_the_end_and_keeps_its_source(
    live: Any,
    make_settings: Any,
    db: Database,
    luma: Simulator,
    kind: str,
    given: dict[str, Any],
    hooks: bool,
) -> None:
    tracker = Tracker(live, make_settings, db, luma, hooks)
    source = tracker.archived(tracker.submit({"user_prompt": "a heron"})["id"])
    before = tracker.media(source).content

    made = tracker.submit({"kind": kind, "source_task_id": source["upstream_id"], **given})
    assert made["kind"] == kind and made["state"] in ("pending", "processing")
    done = tracker.archived(made["id"])

    assert done["media_url"] == f"/media/{done['id']}/video" and done["video_url"]
    assert tracker.media(done).headers["Content-Type"].startswith("video/mp4")
    assert done["options"] == {k: v for k, v in given.items() if k != "user_prompt"}
    if kind in ("upscale", "audio"):  # Luma answers with the source's own id
        assert done["upstream_id"] == source["upstream_id"]
        assert done["video_url"] != source["video_url"]
    else:
        assert done["upstream_id"] != source["upstream_id"]
    assert tracker.media(tracker.task(source["id"])).content == before  # never overwritten
    assert luma.creates == 2  # one create each, never resent


def test_modify_and_reframe_take_any_video_by_its_url(
    live: Any, make_settings: Any, db: Database, luma: Simulator
) -> None:
    tracker = Tracker(live, make_settings, db, luma, hooks=True)
    video = f"{luma.url}/media/sample.mp4"
    for body in (
        {"kind": "modify", "source_video_url": video, "mode": "reimagine_3"},
        {"kind": "reframe", "source_video_url": video, "aspect_ratio": "1:1", "user_prompt": "sky"},
    ):
        done = tracker.archived(tracker.submit(body)["id"])
        assert done["source_task_id"] is None
        assert done["options"]["source_video_url"] == video
        sent = [e for e in tracker.task(done["id"])["events"] if e["source"] == "submit"]
        assert any(video in str(e["payload"]) for e in sent)  # as `media.url`


@pytest.mark.parametrize("hooks", [True, False], ids=["callbacks", "queries"])
def test_an_image_is_archived_as_one_and_animated(
    live: Any, make_settings: Any, db: Database, luma: Simulator, hooks: bool
) -> None:
    tracker = Tracker(live, make_settings, db, luma, hooks)
    body = {"kind": "image", "user_prompt": "a kite", "model_name": "photon-flash-1"}
    image = tracker.archived(tracker.submit({**body, "aspect_ratio": "1:1"})["id"])
    assert image["video_url"] is None and image["thumbnail_url"]
    assert image["media_url"] == f"/media/{image['id']}/image"
    served = tracker.media(image)
    assert served.headers["Content-Type"] in ("image/jpeg", "image/png")
    assert requests.get(f"{tracker.url}/media/{image['id']}/video", timeout=5).status_code == 404

    # "animate this": the image as the first frame of a new video
    animated = tracker.submit(
        {"user_prompt": "the kite flies", "image_url": image["thumbnail_url"]}
    )
    assert tracker.archived(animated["id"])["video_url"]


def test_a_source_must_be_a_completed_video_of_the_same_api(
    live: Any, make_settings: Any, db: Database, luma: Simulator
) -> None:
    tracker = Tracker(live, make_settings, db, luma, hooks=True)
    image = tracker.archived(tracker.submit({"kind": "image", "user_prompt": "a kite"})["id"])
    made = make_task(db, "processing", upstream="luma", upstream_id="gen-still-running")
    running = {"upstream_id": made.upstream_id}  # a tracked video still being made
    for source, words in ((image, "an image"), (running, "not completed")):
        answer = requests.post(
            f"{tracker.url}/api/tasks",
            json={"kind": "upscale", "source_task_id": source["upstream_id"]},
            timeout=5,
        )
        assert answer.status_code == 400 and answer.json()["field"] == "source_task_id"
        assert words in answer.json()["error"]


def test_a_video_being_remade_takes_no_other_work_until_done(
    live: Any, make_settings: Any, db: Database, luma: Simulator
) -> None:
    """Luma answers an upscale with its source's own id and remakes that generation: audio,
    a modify or another upscale of it meanwhile would be refused upstream, or read no video.
    The tracker says so at submit, and takes the work once the remake is done."""
    tracker = Tracker(live, make_settings, db, luma, hooks=True)
    source = tracker.archived(tracker.submit({"user_prompt": "a heron"})["id"])
    upscale = tracker.submit({"kind": "upscale", "source_task_id": source["upstream_id"]})
    for body in (
        {"kind": "audio", "source_task_id": source["upstream_id"]},
        {"kind": "modify", "source_task_id": source["upstream_id"], "mode": "flex_1"},
    ):
        refused = requests.post(f"{tracker.url}/api/tasks", json=body, timeout=10)
        assert refused.status_code == 400 and refused.json()["field"] == "source_task_id"
        assert f"task {upscale['id']} (upscale)" in refused.json()["error"]
    tracker.archived(upscale["id"])
    audio = tracker.submit({"kind": "audio", "source_task_id": source["upstream_id"]})
    assert tracker.archived(audio["id"])["state"] == "completed"
