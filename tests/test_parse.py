"""The parser understands every answer shape in upstream.md, and never raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.tasks.machine import needs_query
from tracker.upstream.creates import error_reason
from tracker.upstream.parse import Update, parse, parse_batch

RAW_PENDING = {
    "id": "749d328e-4fd0-43a8-8c89-32394d60da69",
    "prompt": "",
    "state": "pending",
    "queue_state": None,
    "created_at": "2024-12-22T14:48:39.947851Z",
    "batch_id": "",
    "video": None,
    "video_raw": None,
    "liked": None,
    "estimate_wait_seconds": None,
    "thumbnail": None,
    "last_frame": None,
}
RAW_DONE = {
    **RAW_PENDING,
    "state": "completed",
    "video": {
        "url": "https://cdn.example/v.mp4?sig=1",
        "width": 1280,
        "height": 720,
        "download_url": "https://cdn.example/d.mp4",
    },
    "thumbnail": {"url": "https://cdn.example/t.jpg", "width": 1280, "height": 720},
}


def test_raw_object_pending() -> None:
    update = parse(RAW_PENDING)
    assert update.understood
    assert update.state == "pending"
    assert update.upstream_id == RAW_PENDING["id"]
    assert update.video_url is None


def test_raw_object_completed_with_video_and_thumbnail() -> None:
    update = parse(RAW_DONE)
    assert update.state == "completed"
    assert update.video_url == "https://cdn.example/v.mp4?sig=1"
    assert update.thumbnail_url == "https://cdn.example/t.jpg"
    assert not needs_query(update)


def test_raw_object_failed_with_reason() -> None:
    update = parse({**RAW_PENDING, "state": "failed", "failure_reason": "Frame moderation failed"})
    assert update.state == "failed"
    assert update.failure_reason == "Frame moderation failed"


def test_completed_without_video_url_needs_a_query() -> None:
    update = parse({**RAW_PENDING, "state": "completed"})
    assert update.state == "completed"
    assert needs_query(update)


def test_seed_wrapper_with_task_status() -> None:
    body = {
        "code": 200,
        "message": "ok",
        "request_id": "r-1",
        "data": {"task_id": "t-1", "task_status": "processing", "created_at": 1, "updated_at": 2},
    }
    update = parse(body)
    assert (update.state, update.upstream_id, update.upstream_state) == (
        "processing",
        "t-1",
        "processing",
    )


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("NOT_START", "pending"),
        ("SUBMITTED", "pending"),
        ("QUEUED", "pending"),
        ("IN_PROGRESS", "processing"),
        ("SUCCESS", "completed"),
        ("FAILURE", "failed"),
    ],
)
def test_task_platform_wrapper_states(status: str, state: str) -> None:
    body = {"task_id": "t-2", "status": status, "fail_reason": "", "data": {"id": "t-2"}}
    update = parse(body)
    assert update.state == state
    assert update.upstream_id == "t-2"


def test_task_platform_unknown_is_not_understood() -> None:
    update = parse({"task_id": "t-3", "status": "UNKNOWN", "data": None})
    assert not update.understood
    assert needs_query(update)


def test_task_platform_failure_reason_from_wrapper() -> None:
    body = {"task_id": "t-4", "status": "FAILURE", "fail_reason": "Contains blacklisted words"}
    assert parse(body).failure_reason == "Contains blacklisted words"


def test_task_platform_wrapper_success_carries_raw_video() -> None:
    body = {"task_id": RAW_DONE["id"], "status": "SUCCESS", "data": RAW_DONE}
    update = parse(body)
    assert update.state == "completed"
    assert update.video_url == "https://cdn.example/v.mp4?sig=1"


def test_callback_envelope_with_timestamp() -> None:
    update = parse({"timestamp": 1735000000, "data": RAW_DONE})
    assert update.state == "completed"
    assert update.upstream_id == RAW_DONE["id"]


@pytest.mark.parametrize(("word", "state"), [("queued", "pending"), ("dreaming", "processing")])
def test_luma_own_state_names(word: str, state: str) -> None:
    assert parse({"id": "x", "state": word}).state == state


def test_batch_bare_list() -> None:
    updates = parse_batch([RAW_PENDING, RAW_DONE | {"id": "other"}])
    assert [(u.upstream_id, u.state) for u in updates] == [
        (RAW_PENDING["id"], "pending"),
        ("other", "completed"),
    ]


def test_batch_wrapped() -> None:
    body = {
        "code": "success",
        "data": [
            {"task_id": "a", "status": "IN_PROGRESS", "fail_reason": "", "data": {"id": "a"}},
            {"task_id": "b", "status": "FAILURE", "fail_reason": "bad frame", "data": {}},
        ],
    }
    updates = {u.upstream_id: u for u in parse_batch(body)}
    assert updates["a"].state == "processing"
    assert updates["b"].state == "failed"
    assert updates["b"].failure_reason == "bad frame"


@pytest.mark.parametrize("body", [None, 3, "text", [], {}, {"foo": "bar"}, [1, 2], {"data": 5}])
def test_garbage_is_not_understood(body: object) -> None:
    assert parse(body) == Update()


def test_error_reasons() -> None:
    assert error_reason({"detail": "Prompt is required"}) == "Prompt is required"
    assert error_reason({"detail": {"reason": "Too many", "code": 1}}) == "Too many"
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    assert "HTML" in error_reason(None, page)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["id", "task_id", "state", "status", "task_status", "data", "video", "url", "x"]
            )
            | st.text(max_size=5),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@given(json_values)
def test_parse_never_raises(body: object) -> None:
    update = parse(body)
    assert isinstance(update, Update)
    assert update.state in (None, "pending", "processing", "completed", "failed")
    parse_batch(body)
    error_reason(body, json.dumps(body, default=str)[:100])


def test_nul_characters_are_dropped() -> None:
    update = parse({"id": "a\x00b", "state": "failed", "failure_reason": "bad\x00 frame"})
    assert update.upstream_id == "ab"
    assert update.failure_reason == "bad frame"
