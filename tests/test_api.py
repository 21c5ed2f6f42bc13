"""Listing and reading tasks through the JSON API."""

from __future__ import annotations

import requests

from tests.support.factory import make_task
from tracker.db import Database


def make(db: Database, n: int, prompt: str = "prompt") -> list[int]:
    return [make_task(db, "queued", user_prompt=f"{prompt} {i}").id for i in range(n)]


def test_list_is_newest_first_with_cursor_pages(db, live) -> None:  # type: ignore[no-untyped-def]
    ids = make(db, 7)
    url = live().url
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = requests.get(f"{url}/api/tasks", params=params, timeout=5).json()
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)


def test_state_filter(db, live) -> None:  # type: ignore[no-untyped-def]
    make(db, 3)
    url = live().url
    queued = requests.get(f"{url}/api/tasks", params={"state": "queued"}, timeout=5).json()
    assert len(queued["tasks"]) == 3
    assert all(t["state"] == "queued" for t in queued["tasks"])
    done = requests.get(f"{url}/api/tasks", params={"state": "completed"}, timeout=5).json()
    assert done["tasks"] == []


def test_bad_query_parameters_are_400(db, live) -> None:  # type: ignore[no-untyped-def]
    url = live().url
    for params, field in [
        ({"state": "nope"}, "state"),
        ({"limit": "x"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "100000"}, "limit"),
        ({"cursor": "-1"}, "cursor"),
    ]:
        response = requests.get(f"{url}/api/tasks", params=params, timeout=5)
        assert response.status_code == 400, params
        assert response.json()["field"] == field


def test_task_json_fields_and_shortened_base64(db, live) -> None:  # type: ignore[no-untyped-def]
    image = "iVBORw0KGgo" + "A" * 5000
    task = make_task(db, "queued", user_prompt="add cat", source_task_id="src-9", image_url=image)
    body = requests.get(f"{live().url}/api/tasks/{task.id}", timeout=5).json()
    fields = [
        "id",
        "upstream_id",
        "source_task_id",
        "kind",
        "state",
        "upstream_state",
        "user_prompt",
        "expand_prompt",
        "image_url",
        "image_end_url",
        "video_url",
        "thumbnail_url",
        "failure_reason",
        "created_at",
        "updated_at",
        "completed_at",
        "events",
    ]
    for field in fields:
        assert field in body
    assert body["kind"] == "extend"
    assert len(body["image_url"]) < 100
    assert "5011 chars" in body["image_url"]
    assert body["created_at"].endswith("Z")
    [event] = body["events"]
    assert event["source"] == "submit"
    assert (event["state_before"], event["state_after"]) == (None, "queued")


def test_unknown_routes_are_json_404(db, live) -> None:  # type: ignore[no-untyped-def]
    url = live().url
    response = requests.get(f"{url}/api/tasks/12345", timeout=5)
    assert response.status_code == 404
    assert response.json()["error"]
    assert requests.get(f"{url}/api/nothing", timeout=5).status_code == 404


def test_api_token_is_bearer_only(db, live) -> None:  # type: ignore[no-untyped-def]
    url = live(api_token="t0ken-for-the-api-123").url
    assert requests.get(f"{url}/api/tasks", timeout=5).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert requests.get(f"{url}/api/tasks", headers=wrong, timeout=5).status_code == 401
    # a browser replays Basic credentials cross-site by itself; the API does not take them
    basic = requests.get(f"{url}/api/tasks", auth=("x", "t0ken-for-the-api-123"), timeout=5)
    assert basic.status_code == 401
    right = {"Authorization": "Bearer t0ken-for-the-api-123"}
    assert requests.get(f"{url}/api/tasks", headers=right, timeout=5).status_code == 200
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200


def test_json_that_is_not_sent_as_json_is_refused(db, live) -> None:  # type: ignore[no-untyped-def]
    url = live().url
    # what a cross-site form can send: text/plain that happens to be JSON
    response = requests.post(
        f"{url}/api/tasks",
        data='{"user_prompt": "a forged submit"}',
        headers={"Content-Type": "text/plain"},
        timeout=5,
    )
    assert response.status_code == 415  # issue 9: any unsafe API request must be sent as JSON
    assert requests.get(f"{url}/api/tasks", timeout=5).json()["tasks"] == []
