"""Helpers for tests that play the payload corpus (tests/fixtures/upstream) end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tracker.db import Database
from tracker.tasks.models import Task
from tracker.upstream.parse import parse

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "upstream"


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def corpus(kind: str) -> list[Path]:
    return [path for path in sorted(CORPUS.glob("*.json")) if load(path)["kind"] == kind]


def final_task_payloads() -> list[Path]:
    """Task payloads that end a task: failed, or completed with its video link."""
    chosen = []
    for path in corpus("task"):
        expected = load(path)["expected"]
        if expected.get("state") == "failed" or (
            expected.get("state") == "completed" and expected.get("video_url")
        ):
            chosen.append(path)
    return chosen


def named_id(body: Any) -> str:
    """The upstream id a payload speaks of (the create answer must name the same task)."""
    upstream_id = parse(body).upstream_id
    assert upstream_id, "an end-to-end payload names its task"
    return upstream_id


def unnamed_in_flight(db: Database) -> int:
    """Tasks pending or processing with no upstream id: nothing could ever follow them."""
    with db.read() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(Task)
                .where(Task.state.in_(("pending", "processing")), Task.upstream_id.is_(None))
            )
            or 0
        )


def check_final(task: dict[str, Any], expected: dict[str, Any]) -> None:
    """The task's JSON shows what the payload said: state, links, reason, progress."""
    assert task["state"] == expected["state"]
    if expected["state"] == "completed":
        assert task["video_url"] == expected["video_url"]
        assert task["progress"] == 100
    else:
        assert task["video_url"] is None
        assert task["progress"] is None
        if "failure_reason" in expected:
            assert task["failure_reason"] == expected["failure_reason"]
    if "thumbnail_url" in expected:
        assert task["thumbnail_url"] == expected["thumbnail_url"]
    assert task["estimate_wait_seconds"] is None
