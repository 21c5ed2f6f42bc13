"""Issue 20, item 5: a create whose outcome is unknown, found again in Luma's list.

The create reaches the upstream and the connection drops before its answer: the tracker
cannot name the task, and must not send it again (it may have been paid for). On Luma's own
API the generation keeps the callback URL it was made with, so a worker pass pages through
`GET /generations` and finds it by the token in that URL. Real HTTP throughout: the
simulator (or a scripted upstream for the paging rules) on 127.0.0.1, a real database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from lumasim.simulator import Simulator
from tests.support.scripted import Reply, ScriptedUpstream
from tracker.db import Database
from tracker.flows import imports, worker
from tracker.flows import submit as submit_flow
from tracker.flows.services import make_client
from tracker.settings import Settings
from tracker.tasks.models import Task, utcnow
from tracker.tasks.store import NewTask

HOOK_BASE = "http://127.0.0.1:9"  # nothing listens: the callbacks are lost, the list is not


@pytest.fixture
def luma() -> Iterator[Simulator]:
    simulator = Simulator(processing_after=0.1, complete_after=0.3, flavor="luma").start()
    yield simulator
    simulator.stop()


def _task(db: Database, task_id: int) -> Task:
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        session.expunge(task)
        return task


def _settings(make_settings: Any, base: str, tmp_path: Path) -> Settings:
    return make_settings(
        luma_api_base=base,
        luma_api_flavor="luma",
        public_base_url=HOOK_BASE,
        poll_after=0.0,
        media_dir=str(tmp_path / "media"),
    )


def _unknown(db: Database, settings: Settings, new: NewTask | None = None) -> Task:
    client = make_client(settings)
    try:
        made = submit_flow.submit(db, settings, client, new or NewTask("generate", "a heron"))
    finally:
        client.close()
    task = _task(db, made.id)  # as the send left it
    assert task.state == "rejected" and task.outcome_unknown, task.failure_reason
    return task


@pytest.mark.parametrize(
    "new",
    [
        NewTask("generate", "a heron"),
        NewTask("image", "a kite", options={"model_name": "photon-1"}),
    ],
    ids=["video", "image"],
)
def test_a_create_whose_answer_was_lost_is_found_followed_and_archived(
    db: Database, make_settings: Any, luma: Simulator, tmp_path: Path, new: NewTask
) -> None:
    settings = _settings(make_settings, luma.url, tmp_path)
    luma.fail_next("create", drop=True, after=True)  # made upstream, then the connection drops
    task = _unknown(db, settings, new)
    assert luma.creates == 1

    done = None
    for _ in range(100):
        worker.run_once(settings, db=db)
        done = _task(db, task.id)
        if done.archived_at is not None:
            break
        time.sleep(0.05)
    assert done is not None and done.state == "completed" and done.archived_at is not None
    assert done.upstream_id in luma.tasks and not done.outcome_unknown
    assert done.failure_reason is None
    assert luma.creates == 1  # found, never sent again
    suffix = ".jpg" if new.kind == "image" else ".mp4"
    assert done.media_path == f"{task.id}{suffix}"
    with db.read() as session:
        notes = [e.note or "" for e in session.get(Task, task.id).events]  # type: ignore[union-attr]
        payloads = [e.payload or "" for e in session.get(Task, task.id).events]  # type: ignore[union-attr]
    assert any("outcome unknown" in note for note in notes)
    # the list's body carries the callback URL: its token never reaches the history
    assert all("/callbacks/luma/" not in payload or "[redacted]" in payload for payload in payloads)


def _generation(gen_id: str, made: str, hook: str | None = None) -> dict[str, Any]:
    return {
        "id": gen_id,
        "state": "completed",
        "created_at": made,
        "assets": {"video": f"http://127.0.0.1:9/{gen_id}.mp4"},
        "request": {"prompt": "x", "model": "ray-2", "callback_url": hook},
    }


def _lists(upstream: ScriptedUpstream) -> list[Any]:
    return [seen for seen in upstream.seen if (seen.method, seen.path) == ("GET", "/generations")]


def _page(generations: list[dict[str, Any]], more: bool) -> Reply:
    return Reply(200, {"generations": generations, "has_more": more, "count": len(generations)})


def test_not_found_after_fifteen_minutes_is_a_plain_rejection_saying_so(
    db: Database, make_settings: Any, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    settings = _settings(make_settings, upstream.url, tmp_path)
    upstream.route("POST", "/generations", Reply(200, {"state": "queued"}))  # names no task
    old = _unknown(db, settings)
    recent = _unknown(db, settings)
    with db.write() as session:  # sent 16 minutes ago
        session.execute(
            update(Task)
            .where(Task.id == old.id)
            .values(submitted_at=utcnow() - timedelta(minutes=16))
        )
    now = utcnow().isoformat()
    upstream.route(
        "GET", "/generations", _page([_generation("other", now, "http://x/cb/t")], False)
    )
    client = make_client(settings)
    try:
        assert imports.reconcile(db, settings, client) == 0
        gave_up, waiting = _task(db, old.id), _task(db, recent.id)
        assert gave_up.state == "rejected" and not gave_up.outcome_unknown
        assert "not found among the account's generations 15 minutes" in (
            gave_up.failure_reason or ""
        )
        assert waiting.outcome_unknown and waiting.looked_up_at is not None
        assert len(_lists(upstream)) == 1
        # a look is paced across workers: none again within LOOK_EVERY
        assert imports.reconcile(db, settings, client) == 0
        assert len(_lists(upstream)) == 1
    finally:
        client.close()


def test_paging_stops_at_has_more_or_a_page_older_than_the_create(
    db: Database, make_settings: Any, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    settings = _settings(make_settings, upstream.url, tmp_path)
    upstream.route("POST", "/generations", Reply(200, {"state": "queued"}))
    _unknown(db, settings)
    long_ago = (utcnow() - timedelta(hours=1)).isoformat()
    fresh = utcnow().isoformat()
    # one fresh generation among old ones: not a page wholly older, so the next is read;
    # the second is all old: the search ends there though the upstream says more follow
    upstream.route(
        "GET",
        "/generations",
        _page([_generation("a", long_ago), _generation("b", fresh)], True),
        _page([_generation("c", long_ago)], True),
        _page([_generation("d", fresh)], True),
    )
    client = make_client(settings)
    try:
        imports.reconcile(db, settings, client)
    finally:
        client.close()
    assert len(_lists(upstream)) == 2


def test_without_a_callback_url_or_on_the_proxy_nothing_is_looked_for(
    db: Database, make_settings: Any, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    upstream.route("POST", "/generations", Reply(200, {"state": "queued"}))
    upstream.route("POST", "/luma/generations", Reply(200, {"state": "queued"}))
    no_hook = _settings(make_settings, upstream.url, tmp_path).with_overrides(public_base_url="")
    _unknown(db, no_hook)
    proxy = make_settings(luma_api_base=upstream.url, public_base_url=HOOK_BASE)
    _unknown(db, proxy)
    for settings in (no_hook, proxy):
        client = make_client(settings)
        try:
            assert imports.reconcile(db, settings, client) == 0
        finally:
            client.close()
    assert not [s for s in upstream.seen if s.method == "GET"]
