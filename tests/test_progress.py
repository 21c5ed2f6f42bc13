"""Progress and the upstream's wait estimate: kept, shown, never going back while a task runs.

Answers arrive by callback over real HTTP; what is asserted is what a user sees: the task
JSON (one task and the list) and the dashboard's list and detail pages.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
import requests

from tests.support.scripted import Reply, ScriptedUpstream, raw_task
from tests.support.waiting import api_task
from tracker.web.openapi import SPEC

VIDEO = "https://cdn.example/v.mp4"


@pytest.fixture
def started(live: Any, upstream: ScriptedUpstream) -> Any:
    """A submitted task (upstream id up-1) and a way to call its hook."""
    app = live(luma_api_base=upstream.url).url
    upstream.then(Reply(201, raw_task("up-1", estimate_wait_seconds=90)))
    task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a fox"}, timeout=5).json()
    hook = upstream.creates()[-1].body["notify_hook"]

    class Started:
        url, id = app, task["id"]
        first = task

        def call(self, body: dict[str, Any]) -> dict[str, Any]:
            assert requests.post(hook, json=body, timeout=5).status_code == 200
            return api_task(app, task["id"])

        def call_raw(self, data: bytes) -> requests.Response:
            headers = {"Content-Type": "application/json"}
            return requests.post(hook, data=data, headers=headers, timeout=5)

        def page(self, path: str) -> str:
            response = requests.get(f"{app}{path}", timeout=5)
            assert response.status_code == 200
            return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.text)).split())

    return Started()


def reseller(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "up-1", "status": status, "type": "video", **extra}


def test_the_create_answers_wait_estimate_is_shown(started: Any) -> None:
    assert started.first["state"] == "pending"
    assert (started.first["progress"], started.first["estimate_wait_seconds"]) == (None, 90)
    assert "about 2 min left" in started.page("/")
    assert "about 2 min left" in started.page(f"/tasks/{started.id}")


def test_progress_rises_never_falls_and_completes_at_100(started: Any) -> None:
    assert started.call(reseller("running", progress=10))["progress"] == 10
    task = started.call(reseller("processing", progress="45%"))
    assert (task["state"], task["progress"]) == ("processing", 45)
    # the estimate was about the queue; the upstream no longer gives one
    assert task["estimate_wait_seconds"] is None
    # a late, reordered answer: the bar does not jump back
    assert started.call(reseller("processing", progress="30%"))["progress"] == 45
    # nor does a stale "queued" with 0 %
    assert started.call(reseller("queued", progress=0))["progress"] == 45
    listed = requests.get(f"{started.url}/api/tasks", timeout=5).json()["tasks"]
    assert [(t["progress"], t["estimate_wait_seconds"]) for t in listed] == [(45, None)]
    assert "45 %" in started.page("/")
    assert "45 %" in started.page(f"/tasks/{started.id}")
    done = started.call(reseller("succeed", progress=100, output={"video_url": VIDEO}))
    assert (done["state"], done["progress"], done["video_url"]) == ("completed", 100, VIDEO)
    assert "100 %" in started.page(f"/tasks/{started.id}")


def test_a_failed_task_shows_no_progress(started: Any) -> None:
    assert started.call(reseller("running", progress=70))["progress"] == 70
    task = started.call(reseller("failed", progress=70, error="Frame moderation failed"))
    assert (task["state"], task["progress"], task["estimate_wait_seconds"]) == (
        "failed",
        None,
        None,
    )
    assert task["failure_reason"] == "Frame moderation failed"
    assert "<progress" not in requests.get(f"{started.url}/", timeout=5).text


def test_completed_without_a_video_link_is_not_shown_as_done(started: Any) -> None:
    """Completed without a link is queried again (upstream.md): not 100 % until the link."""
    task = started.call(raw_task("up-1", "completed"))
    assert (task["state"], task["video_url"], task["progress"]) == ("processing", None, None)


def test_the_openapi_document_describes_both_fields() -> None:
    properties = SPEC["components"]["schemas"]["Task"]["properties"]
    assert properties["progress"]["type"] == ["integer", "null"]
    assert (properties["progress"]["minimum"], properties["progress"]["maximum"]) == (0, 100)
    assert properties["estimate_wait_seconds"]["type"] == ["integer", "null"]


@pytest.mark.parametrize("field", ["progress", "estimate_wait_seconds"])
def test_a_submission_cannot_set_them(live: Any, upstream: ScriptedUpstream, field: str) -> None:
    app = live(luma_api_base=upstream.url).url
    body = {"user_prompt": "a fox", field: 50}
    response = requests.post(f"{app}/api/tasks", json=body, timeout=5)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert "the tracker sets it" in response.json()["error"]
    assert upstream.posts() == []


@pytest.mark.parametrize(
    ("given", "progress", "wait"),
    [
        ({"progress": "abc%", "estimate_wait_seconds": "soon"}, None, None),
        ({"progress": -5, "estimate_wait_seconds": -1}, 0, None),
        ({"progress": 250, "estimate_wait_seconds": 1e12}, 100, None),
        ({"progress": True, "estimate_wait_seconds": [30]}, None, None),
        ({"progress": {"value": 3}, "estimate_wait_seconds": "12.2"}, None, 13),
    ],
)
def test_odd_values_from_the_upstream_are_bounded_never_a_500(
    started: Any, given: dict[str, Any], progress: int | None, wait: int | None
) -> None:
    task = started.call(reseller("running", **given))
    assert (task["state"], task["progress"], task["estimate_wait_seconds"]) == (
        "processing",
        progress,
        wait,
    )
    raw = b'{"id": "up-1", "status": "running", "progress": NaN, "estimate_wait_seconds": Infinity}'
    assert started.call_raw(raw).status_code == 200
