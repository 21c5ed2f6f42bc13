"""Every payload in tests/fixtures/upstream/ parses to what its file expects.

A new upstream shape is a new file there (see its README.md); nothing to add here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.tasks.machine import needs_query
from tracker.upstream.creates import parse_create
from tracker.upstream.parse import Update, parse, parse_batch

CORPUS = Path(__file__).parent / "fixtures" / "upstream"
FILES = sorted(CORPUS.glob("*.json"))
KINDS = ("task", "batch", "create")
FAMILIES = (
    "luma-generation",
    "raw-",
    "seed-wrapper",
    "task-platform",
    "callback-",
    "reseller-task",
    "batch-",
    "create-refused",
    "create-unknown",
)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def check(update: Update, expected: dict[str, Any], where: str) -> None:
    for key, value in expected.items():
        got = needs_query(update) if key == "needs_query" else getattr(update, key)
        assert got == value, f"{where}: {key}"


def test_the_corpus_covers_every_family() -> None:
    names = [path.stem for path in FILES]
    for family in FAMILIES:
        assert any(name.startswith(family) for name in names), family
    assert {load(path)["kind"] for path in FILES} == set(KINDS)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_payload(path: Path) -> None:
    case = load(path)
    assert set(case) == {"source", "kind", "body", "expected"}, "the file's keys (see README.md)"
    assert case["source"].strip(), "every payload says where it came from"
    body, expected = case["body"], case["expected"]
    if case["kind"] == "task":
        check(parse(body), expected, path.name)
    elif case["kind"] == "batch":
        updates = parse_batch(body)
        assert len(updates) == len(expected["updates"])
        for update, want in zip(updates, expected["updates"], strict=True):
            check(update, want, path.name)
    else:
        assert case["kind"] == "create"
        answer = parse_create(body)
        outcome = "refused" if answer.refused else "accepted" if answer.accepted else "unknown"
        assert outcome == expected["outcome"]
        assert answer.refused == expected.get("reason")
        check(answer.update, expected.get("update", {}), path.name)


@pytest.mark.parametrize(
    "path", [p for p in FILES if load(p)["kind"] == "task"], ids=lambda p: p.stem
)
def test_a_task_payload_reads_the_same_wherever_it_arrives(path: Path) -> None:
    """As a query's answer, a callback in an envelope, a batch entry, or a create answer."""
    body = load(path)["body"]
    direct = parse(body)
    assert parse({"timestamp": 1735000000, "data": body}) == direct
    if direct.upstream_id:
        assert parse_batch([body]) == [direct]
        assert parse_create(body).update == direct


_KEYS = st.sampled_from(
    [
        "id",
        "task_id",
        "state",
        "status",
        "data",
        "output",
        "assets",
        "video",
        "video_url",
        "url",
        "progress",
        "estimate_wait_seconds",
        "code",
        "success",
        "error",
        "message",
        "detail",
    ]
)
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["succeed", "45%", "dreaming", "https://x.example/v.mp4", "200", ""])
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_KEYS, children, max_size=6),
    max_leaves=25,
)


@settings(max_examples=300)
@given(_VALUES)
def test_any_body_gives_bounded_values(body: object) -> None:
    """Whatever an upstream sends, the fields fit their columns and a create has one outcome."""
    for update in [parse(body), *parse_batch(body), parse_create(body).update]:
        assert update.progress is None or 0 <= update.progress <= 100
        assert update.estimate_wait_seconds is None or update.estimate_wait_seconds >= 0
        assert update.failure_reason is None or update.state == "failed"
    answer = parse_create(body)
    assert [answer.accepted, answer.unknown, answer.refused is not None].count(True) == 1
