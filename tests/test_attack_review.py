"""Issue 23: what the second attack review found, each fixed with its regression test here.

A number too big for a float is "not understood", like NaN: a callback or a query answer
whose `progress`, `estimate_wait_seconds`, `state`, `id` or `failure_reason` is an integer
of 309+ digits used to get a 500 (OverflowError in parsers that promise never to raise), was
never stored, and made the worker give the lease back and claim the task at once, hundreds of
times a minute. An id of dots only collapsed the URL path it went in. Real HTTP: the live
tracker, a scripted upstream on 127.0.0.1, the real database.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.support.scripted import Reply, ScriptedUpstream
from tracker.db import Database
from tracker.flows import worker
from tracker.tasks.models import Task
from tracker.upstream import parse

HUGE = "9" * 400  # past a float's range, below Python's digit limit for int()
FIELDS = ("progress", "estimate_wait_seconds", "state", "id", "failure_reason")


def _body(field: str) -> bytes:
    """A callback or an answer with that field a huge integer (raw JSON: no Python float)."""
    body = {"id": "gen-1", "state": "processing", "progress": 40}
    text = json.dumps(body | {field: "HUGE"})
    return text.replace('"HUGE"', HUGE).encode()


@pytest.mark.parametrize("field", FIELDS)
def test_the_parsers_never_raise_on_a_huge_integer(field: str) -> None:
    upd, payload = parse.parse_body(_body(field))
    assert not upd.understood  # as NaN: not understood, the task is queried instead
    assert isinstance(payload, dict)
    big = int(HUGE)
    for value in (big, -big, 10**5000):
        assert parse.parse({"id": "g", field: value}) is not None  # never raises


@pytest.mark.parametrize("field", FIELDS)
def test_a_callback_with_a_huge_integer_is_answered_200_and_stored(
    live: Any, upstream: ScriptedUpstream, db: Database, field: str
) -> None:
    app = live(luma_api_base=upstream.url).url
    upstream.route("POST", "/luma/generations", Reply(200, {"id": "gen-1", "state": "pending"}))
    task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a fox"}, timeout=10).json()
    hook = upstream.creates()[-1].body["notify_hook"]
    answer = requests.post(
        hook, data=_body(field), headers={"Content-Type": "application/json"}, timeout=10
    )
    assert answer.status_code == 200
    shown = requests.get(f"{app}/api/tasks/{task['id']}", timeout=10).json()
    callbacks = [e for e in shown["events"] if e["source"] == "callback"]
    assert callbacks and "not understood" in (callbacks[-1]["note"] or "")


def test_a_query_answer_with_a_huge_integer_backs_the_task_off(
    make_settings: Any, upstream: ScriptedUpstream, db: Database
) -> None:
    """One query a pass at most, then the backoff: never claimed again at once."""
    settings = make_settings(luma_api_base=upstream.url, poll_after=0.0, media_dir="")
    upstream.route("POST", "/luma/generations", Reply(200, {"id": "gen-1", "state": "pending"}))
    raw = _body("progress").decode()
    upstream.route(
        "GET", "/luma/generations/gen-1", Reply(200, raw, content_type="application/json")
    )
    upstream.route("POST", "/luma/tasks", Reply(200, f"[{raw}]", content_type="application/json"))
    from tracker.flows import submit as submit_flow
    from tracker.flows.services import make_client
    from tracker.tasks.store import NewTask

    client = make_client(settings)
    made = submit_flow.submit(db, settings, client, NewTask("generate", "a fox"))
    client.close()
    for _ in range(5):
        worker.run_once(settings, db=db)
    asked = [s for s in upstream.seen if s.method == "GET" or s.path == "/luma/tasks"]
    assert 1 <= len(asked) <= 3  # the first pass asks; the backoff holds the next ones
    with db.read() as session:
        task = session.get(Task, made.id)
        assert task is not None and task.state in ("pending", "processing")
        assert task.next_check_at is not None and task.claimed_until is None


@pytest.mark.parametrize("dots", [".", "..", " ... "])
def test_an_id_of_dots_only_is_refused_everywhere_an_id_enters(
    live: Any, upstream: ScriptedUpstream, dots: str
) -> None:
    """Issue 23: `.` passed the id pattern; the URL path collapsed it (an import queried
    `/luma/generations/`, an extend sent a paid create to `/luma/generations/extend`)."""
    app = live(luma_api_base=upstream.url).url
    for path, body, field in (
        ("/api/tasks/import", {"upstream_id": dots}, "upstream_id"),
        ("/api/tasks", {"source_task_id": dots, "user_prompt": "more"}, "source_task_id"),
    ):
        answer = requests.post(f"{app}{path}", json=body, timeout=10)
        assert answer.status_code == 400 and answer.json()["field"] == field
    assert upstream.seen == []  # nothing reached the upstream
