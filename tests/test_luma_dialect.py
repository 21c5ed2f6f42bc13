"""LUMA_API_FLAVOR=luma: what reaches Luma's own API, what is refused before, and how the
worker leaves the other dialect's tasks alone.

The upstream is a scripted server (tests/support/scripted.py) or the simulator speaking Luma's API,
over real HTTP; the tracker is the real app or real worker passes.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import update

from lumasim.simulator import Simulator
from tests.support.factory import make_task
from tests.support.scripted import Reply, ScriptedUpstream
from tests.support.shapes import check_final, final_task_payloads, load, named_id, unnamed_in_flight
from tests.support.waiting import api_task
from tracker import settings as settings_module
from tracker.db import Database
from tracker.flows import submit as submit_flow
from tracker.flows import worker
from tracker.flows.services import make_client
from tracker.settings import SettingsError
from tracker.tasks import claims
from tracker.tasks.models import Task, utcnow
from tracker.tasks.schema import task_json
from tracker.tasks.store import NewTask
from tracker.upstream import dialects
from tracker.upstream.accounts import from_settings
from tracker.upstream.operations import operation_for

KEY = "sk-test-upstream-key-0123456789"
FINAL = final_task_payloads()


def generation(gen_id: str, state: str = "queued", **extra: Any) -> dict[str, Any]:
    """Luma's Generation object as its create answers it (upstream.md, shape 4)."""
    return {
        "id": gen_id,
        "generation_type": "video",
        "state": state,
        "failure_reason": None,
        "created_at": "2025-01-01T12:00:00Z",
        "assets": None,
        "model": "ray-2",
        "request": {"prompt": "a fox"},
        **extra,
    }


@pytest.fixture
def luma_app(live: Any, upstream: ScriptedUpstream) -> str:
    return live(luma_api_base=upstream.url, luma_api_flavor="luma").url


def submit(app: str, body: Any) -> requests.Response:
    return requests.post(f"{app}/api/tasks", json=body, timeout=10)


# -- settings ---------------------------------------------------------------------------------


def test_the_flavor_sets_the_default_base_and_a_bad_one_stops_the_process(tmp_path: Path) -> None:
    proxy = settings_module.load({}, instance=tmp_path)
    assert (proxy.luma_api_flavor, proxy.luma_api_base) == ("proxy", "https://www.kkiai.com")
    luma = settings_module.load({"LUMA_API_FLAVOR": "luma"}, instance=tmp_path)
    assert luma.luma_api_base == "https://api.lumalabs.ai/dream-machine/v1"
    own = settings_module.load(
        {"LUMA_API_FLAVOR": "luma", "LUMA_API_BASE": "http://127.0.0.1:9/v1/"}, instance=tmp_path
    )
    assert own.luma_api_base == "http://127.0.0.1:9/v1"
    with pytest.raises(SettingsError, match="LUMA_API_FLAVOR"):
        settings_module.load({"LUMA_API_FLAVOR": "kling"}, instance=tmp_path)


# -- what is sent -----------------------------------------------------------------------------

HOOK = "https://tracker.example/callbacks/luma/token"
FULL = {"aspect_ratio": "16:9", "loop": False, "resolution": "720p", "duration": "5s"}
WIRE = [  # (task, dialect, path, the body's exact bytes)
    (
        NewTask("generate", "a fox", expand_prompt=False, options={**FULL, "model_name": "ray-v2"}),
        "proxy",
        "/luma/generations",
        '{"user_prompt": "a fox", "expand_prompt": false, "aspect_ratio": "16:9", "loop": false, '
        '"resolution": "720p", "duration": "5s", "model_name": "ray-v2", "notify_hook": HOOK}',
    ),
    (
        NewTask("generate", "a fox", image_url="https://i/a.png", options={"model_name": "ray-v2"}),
        "luma",
        "/generations",
        '{"prompt": "a fox", "model": "ray-2", "keyframes": {"frame0": {"type": "image", '
        '"url": "https://i/a.png"}}, "callback_url": HOOK}',
    ),
    (
        NewTask("extend", "on", source_task_id="g/1", image_url="QUFB", image_end_url="https://e"),
        "proxy",
        "/luma/generations/g%2F1/extend",
        '{"user_prompt": "on", "image_url": "QUFB", "image_end_url": "https://e", '
        '"notify_hook": HOOK}',
    ),
    (
        NewTask(
            "extend", "on", source_task_id="g-1", expand_prompt=True, image_end_url="https://e"
        ),
        "luma",
        "/generations",
        '{"prompt": "on", "model": "ray-2", "keyframes": {"frame0": {"type": "generation", '
        '"id": "g-1"}, "frame1": {"type": "image", "url": "https://e"}}, "callback_url": HOOK}',
    ),
    (
        NewTask("upscale", "", source_task_id="g/1", options={"resolution": "4k"}),
        "luma",
        "/generations/g%2F1/upscale",
        '{"generation_type": "upscale_video", "resolution": "4k", "callback_url": HOOK}',
    ),
    (
        NewTask("audio", "rain", source_task_id="g-1", options={"negative_prompt": "music"}),
        "luma",
        "/generations/g-1/audio",
        '{"generation_type": "add_audio", "prompt": "rain", "negative_prompt": "music", '
        '"callback_url": HOOK}',
    ),
    (
        NewTask(
            "modify",
            "in snow",
            options={
                "mode": "flex_2",
                "source_video_url": "https://v/a.mp4",
                "first_frame_url": "https://i/f.jpg",
                "model_name": "ray-flash-2",
            },
        ),
        "luma",
        "/generations/video/modify",
        '{"media": {"url": "https://v/a.mp4"}, "model": "ray-flash-2", "prompt": "in snow", '
        '"generation_type": "modify_video", "mode": "flex_2", "first_frame": {"url": '
        '"https://i/f.jpg"}, "callback_url": HOOK}',
    ),
    (
        NewTask(
            "reframe", "", options={"aspect_ratio": "9:16", "source_video_url": "https://v/a.mp4"}
        ),
        "luma",
        "/generations/video/reframe",
        '{"media": {"url": "https://v/a.mp4"}, "model": "ray-2", "generation_type": '
        '"reframe_video", "aspect_ratio": "9:16", "callback_url": HOOK}',
    ),
    (
        NewTask(
            "image",
            "a kite",
            image_url="https://i/r.png",
            options={
                "model_name": "photon-flash-1",
                "aspect_ratio": "1:1",
                "style_url": "https://s",
            },
        ),
        "luma",
        "/generations/image",
        '{"generation_type": "image", "prompt": "a kite", "model": "photon-flash-1", '
        '"aspect_ratio": "1:1", "image_ref": [{"url": "https://i/r.png"}], "style_ref": '
        '[{"url": "https://s"}], "callback_url": HOOK}',
    ),
]


@pytest.mark.parametrize(("task", "dialect", "path", "wire"), WIRE)
def test_each_operation_goes_on_the_wire_in_its_dialects_words(
    task: NewTask, dialect: str, path: str, wire: str
) -> None:
    """A task row -> its operation -> the dialect's request, to the byte (key order too)."""
    request = dialects.get(dialect).request(operation_for(task), HOOK)
    assert request.path == path
    assert json.dumps(request.body) == wire.replace("HOOK", json.dumps(HOOK))


def test_a_generation_is_sent_in_lumas_words(luma_app: str, upstream: ScriptedUpstream) -> None:
    upstream.route("POST", "/generations", Reply(201, generation("gen-1")))
    body = {
        "user_prompt": "a red fox at dawn",
        "expand_prompt": True,
        "aspect_ratio": "16:9",
        "loop": False,
        "resolution": "720p",
        "duration": "5s",
        "model_name": "ray-v2",
        "image_url": "https://img.example/a.png",
        "image_end_url": "https://img.example/b.png",
    }
    response = submit(luma_app, body)
    assert response.status_code == 201, response.text
    task = response.json()
    assert (task["state"], task["upstream_id"], task["upstream"]) == ("pending", "gen-1", "luma")
    [sent] = upstream.posts()
    assert sent.path == "/generations"
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.body["callback_url"].startswith(f"{luma_app}/callbacks/luma/")
    assert {k: v for k, v in sent.body.items() if k != "callback_url"} == {
        "prompt": "a red fox at dawn",
        "model": "ray-2",
        "aspect_ratio": "16:9",
        "loop": False,
        "resolution": "720p",
        "duration": "5s",
        "keyframes": {
            "frame0": {"type": "image", "url": "https://img.example/a.png"},
            "frame1": {"type": "image", "url": "https://img.example/b.png"},
        },
    }  # no expand_prompt: Luma has none


@pytest.mark.parametrize(
    ("given", "sent"),
    [(None, "ray-2"), ("ray-v2", "ray-2"), ("ray-2", "ray-2"), ("ray-flash-2", "ray-flash-2")],
)
def test_every_create_names_a_model_in_lumas_words(
    luma_app: str, upstream: ScriptedUpstream, given: str | None, sent: str
) -> None:
    """Luma's SDK makes `model` required: LUMA_MODEL (ray-2) unless the task names one."""
    body = {"user_prompt": "a fox"} | ({"model_name": given} if given else {})
    assert submit(luma_app, body).status_code == 201
    assert upstream.posts()[0].body["model"] == sent


def test_luma_model_is_the_default_and_is_checked_at_start(tmp_path: Path) -> None:
    assert settings_module.load({}, instance=tmp_path).luma_model == "ray-2"
    flash = settings_module.load({"LUMA_MODEL": "ray-flash-2"}, instance=tmp_path)
    assert flash.luma_model == "ray-flash-2"
    with pytest.raises(SettingsError, match="LUMA_MODEL"):
        settings_module.load({"LUMA_MODEL": "ray-1-6"}, instance=tmp_path)


@pytest.mark.parametrize(
    ("field", "value"), [("model_name", "ray-v1"), ("model_name", "ray-1-6"), ("duration", "7s")]
)
def test_what_lumas_api_refuses_is_a_400_at_submit(
    luma_app: str, upstream: ScriptedUpstream, field: str, value: str
) -> None:
    """ray-v1 has no counterpart on Luma's API, and its durations are 5s and 9s: the 400
    names the field, and nothing is stored or sent."""
    answer = submit(luma_app, {"user_prompt": "a fox", field: value})
    assert answer.status_code == 400 and answer.json()["field"] == field
    assert "Luma's own API" in answer.json()["error"]
    assert upstream.posts() == []
    assert requests.get(f"{luma_app}/api/tasks", timeout=5).json()["tasks"] == []


def test_an_extend_is_a_create_with_the_source_as_frame0(
    luma_app: str, upstream: ScriptedUpstream
) -> None:
    upstream.route("POST", "/generations", Reply(201, generation("gen-2")))
    response = submit(
        luma_app,
        {
            "source_task_id": "gen-src",
            "user_prompt": "the fox runs off",
            "image_end_url": "https://img.example/end.png",
        },
    )
    assert response.status_code == 201
    assert response.json()["kind"] == "extend"
    [sent] = upstream.posts()
    assert sent.path == "/generations"
    assert sent.body["prompt"] == "the fox runs off"
    assert sent.body["keyframes"] == {
        "frame0": {"type": "generation", "id": "gen-src"},
        "frame1": {"type": "image", "url": "https://img.example/end.png"},
    }
    assert "user_prompt" not in sent.body and "notify_hook" not in sent.body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_prompt": "a fox", "image_url": "data:image/png;base64," + "A" * 64}, "image_url"),
        ({"user_prompt": "a fox", "image_end_url": "QUFB" * 20}, "image_end_url"),
        (
            {
                "user_prompt": "a fox",
                "source_task_id": "gen-src",
                "image_url": "https://img.example/a.png",
            },
            "image_url",
        ),
        ({"user_prompt": "a fox", "callback_url": "https://evil.example/"}, "callback_url"),
        ({"user_prompt": "a fox", "upstream": "proxy"}, "upstream"),
        ({"user_prompt": "a fox", "model_name": "\u0000"}, "model_name"),
    ],
)
def test_what_luma_cannot_take_is_a_400_naming_the_field_and_nothing_is_sent(
    luma_app: str, upstream: ScriptedUpstream, body: dict[str, Any], field: str
) -> None:
    response = submit(luma_app, body)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert upstream.seen == []
    assert requests.get(f"{luma_app}/api/tasks", timeout=5).json()["tasks"] == []


def test_base64_is_refused_with_the_reason(luma_app: str, upstream: ScriptedUpstream) -> None:
    answer = submit(luma_app, {"user_prompt": "a fox", "image_url": "QUFB" * 20}).json()
    assert "base64" in answer["error"] and "URL" in answer["error"]


def test_the_form_hides_expand_prompt_and_uploads_for_luma(live: Any) -> None:
    luma = requests.get(live(luma_api_flavor="luma").url + "/tasks/new", timeout=5).text
    assert 'name="expand_prompt"' not in luma and 'type="file"' not in luma
    proxy = requests.get(live().url + "/tasks/new", timeout=5).text
    assert 'name="expand_prompt"' in proxy and 'type="file"' in proxy


# -- every final shape, on Luma's dialect ------------------------------------------------------


@pytest.mark.parametrize("path", FINAL, ids=[p.stem for p in FINAL])
def test_by_callback(path: Path, live: Any, upstream: ScriptedUpstream, db: Database) -> None:
    case = load(path)
    app = live(luma_api_base=upstream.url, luma_api_flavor="luma").url
    upstream.route("POST", "/generations", Reply(201, generation(named_id(case["body"]))))
    task = submit(app, {"user_prompt": "a fox"}).json()
    assert task["state"] == "pending"
    hook = upstream.creates()[-1].body["callback_url"]
    assert requests.post(hook, json=case["body"], timeout=5).status_code == 200
    check_final(api_task(app, task["id"]), case["expected"])
    assert len(upstream.creates()) == 1
    assert unnamed_in_flight(db) == 0


@pytest.mark.parametrize("path", FINAL, ids=[p.stem for p in FINAL])
def test_by_polling_only(
    path: Path, db: Database, make_settings: Any, upstream: ScriptedUpstream
) -> None:
    case = load(path)
    upstream_id = named_id(case["body"])
    upstream.route("POST", "/generations", Reply(201, generation(upstream_id)))
    upstream.route("GET", f"/generations/{upstream_id}", Reply(200, case["body"]))
    settings = make_settings(luma_api_base=upstream.url, luma_api_flavor="luma", poll_after=0.0)
    client = make_client(settings)
    task = submit_flow.submit(db, settings, client, NewTask(kind="generate", user_prompt="a fox"))
    client.close()
    for _ in range(20):
        worker.run_once(settings.with_overrides(media_dir=""), db=db)
        if api_state(db, task.id) in ("completed", "failed"):
            break
        time.sleep(0.02)
    with db.read() as session:
        check_final(task_json(session.get(Task, task.id)), case["expected"])
    assert len(upstream.creates()) == 1
    # no batch query on Luma's API, and no reseller path either
    allowed = {"/generations", f"/generations/{upstream_id}", "/credits"}
    assert {s.path for s in upstream.seen} <= allowed


def api_state(db: Database, task_id: int) -> str:
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task.state


# -- the other dialect's tasks ---------------------------------------------------------------


def test_after_a_switch_the_worker_leaves_the_other_dialects_tasks_alone(
    db: Database, make_settings: Any, live: Any
) -> None:
    sim = Simulator(processing_after=0.1, complete_after=0.2, flavor="luma").start()
    try:
        long_ago = utcnow() - timedelta(days=2)
        proxy_ids = [  # sent with the proxy two days ago, never finished
            make_task(
                db,
                state,
                user_prompt=f"old {n}",
                upstream_id=f"proxy-{n}" if n < 2 else None,
                submitted_at=long_ago,
                created_at=long_ago,
                next_check_at=long_ago,
            ).id
            for n, state in enumerate(("pending", "processing", "queued"))
        ]
        settings = make_settings(
            luma_api_base=sim.url, luma_api_flavor="luma", poll_after=0.0, max_in_flight=2
        )
        client = make_client(settings)
        mine = submit_flow.submit(
            db, settings, client, NewTask(kind="generate", user_prompt="a new one")
        )
        client.close()
        assert api_state(db, mine.id) == "pending"  # the proxy's tasks take no luma slot
        for _ in range(50):
            worker.run_once(settings, db=db)
            if api_state(db, mine.id) == "completed":
                break
            time.sleep(0.05)
        assert api_state(db, mine.id) == "completed"
        # the proxy's tasks kept their state: not queried, not sent, not timed out
        assert [api_state(db, i) for i in proxy_ids] == ["pending", "processing", "queued"]
        assert not [r for r in sim.requests if r.task_id and r.task_id.startswith("proxy-")]
        assert sim.creates == 1

        page = requests.get(live(luma_api_flavor="luma").url + "/", timeout=5).text
        assert 'id="other-dialect"' in page
        assert "3 unfinished tasks" in page and "proxy API" in page
        shown = requests.get(live(luma_api_flavor="luma").url + f"/tasks/{proxy_ids[0]}", timeout=5)
        assert "the reseller proxy" in shown.text
        assert "other-dialect" not in requests.get(live().url + "/", timeout=5).text

        # a manual poll of a proxy task with the luma flavor says why not, and asks nobody
        app = live(luma_api_base=sim.url, luma_api_flavor="luma").url
        before = len(sim.requests)
        refused = requests.post(f"{app}/api/tasks/{proxy_ids[0]}/poll", json={}, timeout=5)
        assert refused.status_code == 409 and "LUMA_API_FLAVOR" in refused.json()["error"]
        assert len(sim.requests) == before

        # back on the proxy flavor, the same worker code would time them out
        with db.write() as session:
            session.execute(update(Task).where(Task.id.in_(proxy_ids)).values(next_check_at=None))
        quick = make_settings(task_timeout=60)
        assert claims.time_out_overdue(db, quick, account=from_settings(quick)) == 3
    finally:
        sim.stop()
