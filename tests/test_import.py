"""Tracking a task made elsewhere: POST /api/tasks/import, `tracker import`, the dashboard field.

The upstream is the simulator (either dialect) or a scripted server, over real HTTP.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import select

from lumasim.simulator import Simulator
from tests.support.scripted import Reply, ScriptedUpstream
from tests.support.waiting import api_task, wait_for
from tracker import cli
from tracker.db import Database
from tracker.flows import imports, worker
from tracker.tasks.models import Task


@pytest.fixture(params=["proxy", "luma"])
def flavor(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def sim(flavor: str) -> Any:
    simulator = Simulator(processing_after=0.2, complete_after=0.6, flavor=flavor).start()
    yield simulator
    simulator.stop()


def made_elsewhere(sim: Simulator, prompt: str = "a heron lands on a pier") -> str:
    """A task created straight at the upstream, as Luma's web app or another tool would."""
    body = {"prompt": prompt, "model": "ray-2"} if sim.flavor == "luma" else {"user_prompt": prompt}
    path = "/generations" if sim.flavor == "luma" else "/luma/generations"
    answer = requests.post(sim.url + path, json=body, timeout=5)
    assert answer.status_code == 201
    return answer.json()["id"]


def do_import(app: str, upstream_id: Any) -> requests.Response:
    return requests.post(f"{app}/api/tasks/import", json={"upstream_id": upstream_id}, timeout=10)


def test_a_completed_task_is_stored_completed_and_archived_then_extended(
    live: Any, sim: Simulator, flavor: str, db: Database, make_settings: Any
) -> None:
    upstream_id = made_elsewhere(sim)
    sim.set_state(upstream_id, "completed")
    app = live(luma_api_base=sim.url, luma_api_flavor=flavor).url
    answer = do_import(app, upstream_id)
    assert answer.status_code == 201, answer.text
    task = answer.json()
    assert (task["state"], task["upstream_id"], task["upstream"]) == (
        "completed",
        upstream_id,
        flavor,
    )
    assert task["user_prompt"] == "a heron lands on a pier"
    assert task["video_url"].startswith(sim.url)
    assert task["events"][0]["note"].startswith("imported")

    settings = make_settings(luma_api_base=sim.url, luma_api_flavor=flavor)
    worker.run_once(settings, db=db)
    archived = api_task(app, task["id"])
    assert archived["media_url"]
    assert requests.get(app + archived["media_url"], timeout=5).content[4:8] == b"ftyp"

    # the point of importing: extend a video made elsewhere
    extend = requests.post(
        f"{app}/api/tasks",
        json={"source_task_id": upstream_id, "user_prompt": "the heron flies off"},
        timeout=5,
    ).json()
    assert extend["state"] == "pending"
    assert sim.tasks[extend["upstream_id"]].source_id == upstream_id


def test_an_unfinished_task_is_followed_to_completed(
    live: Any, sim: Simulator, flavor: str, db: Database, make_settings: Any
) -> None:
    upstream_id = made_elsewhere(sim)
    sim.set_state(upstream_id, "processing")
    app = live(luma_api_base=sim.url, luma_api_flavor=flavor, poll_after=0.05).url
    task = do_import(app, upstream_id).json()
    assert task["state"] == "processing"
    sim.set_state(upstream_id, "completed")
    settings = make_settings(luma_api_base=sim.url, luma_api_flavor=flavor, poll_after=0.05)

    def done() -> bool:
        worker.run_once(settings, db=db)
        return api_task(app, task["id"])["state"] == "completed"

    wait_for(done, timeout=20, interval=0.1)


def test_an_id_already_tracked_answers_200_and_the_same_task(
    live: Any, sim: Simulator, flavor: str
) -> None:
    app = live(luma_api_base=sim.url, luma_api_flavor=flavor).url
    made = requests.post(f"{app}/api/tasks", json={"user_prompt": "a swan"}, timeout=5).json()
    again = do_import(app, made["upstream_id"])
    assert again.status_code == 200
    assert again.json()["id"] == made["id"]
    first = do_import(app, (other := made_elsewhere(sim)))
    second = do_import(app, other)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert len(requests.get(f"{app}/api/tasks", timeout=5).json()["tasks"]) == 2


def test_an_id_the_upstream_does_not_know_is_a_404_in_its_words(
    live: Any, sim: Simulator, flavor: str
) -> None:
    app = live(luma_api_base=sim.url, luma_api_flavor=flavor).url
    answer = do_import(app, "0b1c2d3e-nope")
    assert answer.status_code == 404
    words = "Generation not found" if flavor == "luma" else "Task not found"
    assert words in answer.json()["error"]
    assert requests.get(f"{app}/api/tasks", timeout=5).json()["tasks"] == []


@pytest.mark.parametrize("failure", ["500", "html", "unreachable", "not-understood"])
def test_an_upstream_that_fails_is_a_502_and_nothing_is_stored(
    live: Any, upstream: ScriptedUpstream, failure: str
) -> None:
    base = "http://127.0.0.1:9" if failure == "unreachable" else upstream.url
    app = live(luma_api_base=base, luma_api_flavor="luma").url
    reply = {
        "500": Reply(500, {"detail": "Internal Server Error"}),
        "html": Reply(200, "<html>Bad gateway</html>"),
        "not-understood": Reply(200, {"hello": "world"}),
    }.get(failure)
    if reply is not None:
        upstream.route("GET", "/generations/gen-9", reply)
    answer = do_import(app, "gen-9")
    assert answer.status_code == 502
    assert answer.json()["error"]
    assert requests.get(f"{app}/api/tasks", timeout=5).json()["tasks"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "upstream_id"),
        ({"upstream_id": None}, "upstream_id"),
        ({"upstream_id": 12}, "upstream_id"),
        ({"upstream_id": "  "}, "upstream_id"),
        ({"upstream_id": "a/b"}, "upstream_id"),
        ({"upstream_id": "x" * 129}, "upstream_id"),
        ({"upstream_id": "a\u0000b"}, "upstream_id"),
        ({"upstream_id": "abc", "prompt": "x"}, "prompt"),
        (["abc"], None),
    ],
)
def test_bad_input_is_400_naming_the_field_and_nothing_is_asked(
    live: Any, upstream: ScriptedUpstream, body: Any, field: str | None
) -> None:
    app = live(luma_api_base=upstream.url).url
    answer = requests.post(f"{app}/api/tasks/import", json=body, timeout=5)
    assert answer.status_code == 400
    assert answer.json().get("field") == field
    assert upstream.seen == []


def _cli_environment(
    monkeypatch: pytest.MonkeyPatch, db: Database, sim: Simulator, flavor: str, tmp_path: Any
) -> None:
    """The environment the `tracker` command reads, pointed at this test's database and sim."""
    for name, value in {
        "DATABASE_URL": db.url,
        "LUMA_API_BASE": sim.url,
        "LUMA_API_FLAVOR": flavor,
        "TRACKER_MEDIA_DIR": str(tmp_path / "media"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LUMA_API_KEY", raising=False)


def test_the_cli_imports(
    sim: Simulator, flavor: str, db: Database, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    _cli_environment(monkeypatch, db, sim, flavor, tmp_path)
    upstream_id = made_elsewhere(sim)
    runner = CliRunner()
    first = runner.invoke(cli.main, ["import", upstream_id])
    assert first.exit_code == 0, first.output
    assert f'"upstream_id": "{upstream_id}"' in first.output
    again = runner.invoke(cli.main, ["import", upstream_id])
    assert again.exit_code == 0 and "already tracked" in again.output
    unknown = runner.invoke(cli.main, ["import", "no-such-id"])
    assert unknown.exit_code != 0 and "not found" in unknown.output
    bad = runner.invoke(cli.main, ["import", "a/b"])
    assert bad.exit_code == 2 and "UPSTREAM_ID" in bad.output


def test_the_cli_imports_every_generation_of_the_account(
    sim: Simulator, flavor: str, db: Database, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """`tracker import --all` pages through Luma's list (two a page here) and tracks each
    generation not yet tracked; the proxy lists none, and says so."""
    _cli_environment(monkeypatch, db, sim, flavor, tmp_path)
    monkeypatch.setattr(imports, "PAGE", 2)
    runner = CliRunner()
    if flavor == "proxy":
        refused = runner.invoke(cli.main, ["import", "--all"])
        assert refused.exit_code != 0 and "lists no generations" in refused.output
        return
    made = [made_elsewhere(sim, f"a heron, take {n}") for n in range(3)]
    tracked_first = runner.invoke(cli.main, ["import", made[0]])
    assert tracked_first.exit_code == 0, tracked_first.output
    first = runner.invoke(cli.main, ["import", "--all"])
    assert first.exit_code == 0, first.output
    assert "imported 2 generations; 1 were tracked already" in first.output
    with db.read() as session:
        assert sorted(session.scalars(select(Task.upstream_id))) == sorted(made)
    again = runner.invoke(cli.main, ["import", "--all"])
    assert "imported 0 generations; 3 were tracked already" in again.output
    both = runner.invoke(cli.main, ["import", made[0], "--all"])
    assert both.exit_code == 2 and "one of them" in both.output


def test_the_dashboard_field_imports(live: Any, sim: Simulator, flavor: str) -> None:
    upstream_id = made_elsewhere(sim)
    app = live(luma_api_base=sim.url, luma_api_flavor=flavor).url
    browser = requests.Session()
    page = browser.get(app + "/", timeout=5).text
    assert 'name="upstream_id"' in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    done = browser.post(
        app + "/tasks/import",
        data={"csrf_token": token.group(1), "upstream_id": upstream_id},
        timeout=10,
    )
    assert done.status_code == 200 and "Imported as task" in done.text
    assert upstream_id in done.text
    missing = browser.post(
        app + "/tasks/import",
        data={"csrf_token": token.group(1), "upstream_id": "nope"},
        timeout=10,
    )
    assert "Nothing imported" in missing.text and "not found" in missing.text


def test_the_dashboard_field_takes_a_webhook_url_through_the_address_guard(
    live: Any, sim: Simulator, flavor: str, db: Database
) -> None:
    """Issue 11: a per-task notify_url on import, from the dashboard too, guarded as the API's."""
    upstream_id = made_elsewhere(sim)
    app = live(luma_api_base=sim.url, luma_api_flavor=flavor).url
    browser = requests.Session()
    page = browser.get(app + "/", timeout=5).text
    assert 'name="notify_url"' in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    private = browser.post(
        app + "/tasks/import",
        data={
            "csrf_token": token.group(1),
            "upstream_id": upstream_id,
            "notify_url": "http://127.0.0.1:9/hook",
        },
        timeout=10,
    )
    assert "Nothing imported" in private.text and "notify_url" in private.text
    assert requests.get(app + "/api/tasks", timeout=5).json()["tasks"] == []

    allowed = live(luma_api_base=sim.url, luma_api_flavor=flavor, notify_allow_private=True).url
    page = browser.get(allowed + "/", timeout=5).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    done = browser.post(
        allowed + "/tasks/import",
        data={
            "csrf_token": token.group(1),
            "upstream_id": upstream_id,
            "notify_url": "http://127.0.0.1:9/hook",
        },
        timeout=10,
    )
    assert "Imported as task" in done.text
    with db.read() as session:
        stored = session.scalars(select(Task.notify_url)).all()
    assert stored == ["http://127.0.0.1:9/hook"]
