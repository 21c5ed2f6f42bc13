"""Issue 21: a pool of upstream accounts, on the simulator playing several accounts.

Real HTTP (the tracker live, the simulator with one key per account) and the real database
(SQLite, and PostgreSQL when TEST_DATABASE_URL is set): where each task goes, what a
refused key does, the daily limit under racing submits, and what a bad setting says.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from lumasim.simulator import Simulator
from tracker import settings as settings_module
from tracker.db import Database
from tracker.flows import worker
from tracker.settings import SettingsError
from tracker.tasks.models import Task
from tracker.upstream import account_rows, accounts

A, B = "key-alpha-0001", "key-beta-0002"


@pytest.fixture(params=["proxy", "luma"])
def sim(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    simulator = Simulator(
        api_keys=[A, B], flavor=request.param, processing_after=0.1, complete_after=0.3
    ).start()
    yield simulator
    simulator.stop()


def pool_env(**extra: str) -> tuple[tuple[str, str], ...]:
    env = {"LUMA_ACCOUNT_ALPHA_KEY": A, "LUMA_ACCOUNT_BETA_KEY": B, **extra}
    return tuple(sorted(env.items()))


class Pool:
    """A live tracker on the pool, and worker passes on the same settings."""

    def __init__(self, live: Any, make_settings: Any, db: Database, sim: Simulator, **extra: str):
        common = {
            "luma_api_base": sim.url,
            "luma_api_flavor": sim.flavor,
            "luma_api_key": "",
            "account_env": pool_env(**extra),
            "max_in_flight": 2,
            "poll_after": 0.0,
        }
        server = live(**common)
        self.url, self.db = server.url, db
        self.settings = make_settings(public_base_url=server.url, **common)

    def submit(self, body: dict[str, Any]) -> requests.Response:
        # a generous timeout: 100 racing submits on a busy 2-core machine queue up
        return requests.post(f"{self.url}/api/tasks", json=body, timeout=120)

    def task(self, task_id: int) -> dict[str, Any]:
        return dict(requests.get(f"{self.url}/api/tasks/{task_id}", timeout=10).json())

    def until_final(self, ids: list[int], passes: int = 200) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = []
        for _ in range(passes):
            worker.run_once(self.settings.with_overrides(media_dir=""), db=self.db)
            tasks = [self.task(task_id) for task_id in ids]
            if all(t["state"] in ("completed", "failed", "rejected") for t in tasks):
                break
            time.sleep(0.05)
        return tasks


def test_the_pool_comes_from_the_environment_and_a_bad_one_stops_start(tmp_path: Any) -> None:
    env = {
        "LUMA_ACCOUNT_ALPHA_KEY": A,
        "LUMA_ACCOUNT_Beta_KEY": B,
        "LUMA_ACCOUNT_BETA_FLAVOR": "luma",
    }
    pool = accounts.pool(settings_module.load(env, instance=tmp_path))
    assert [(a.name, a.dialect) for a in pool] == [("alpha", "proxy"), ("beta", "luma")]
    assert accounts.pool(settings_module.load({}, instance=tmp_path))[0].name == "default"
    for bad, named in [
        ({"LUMA_ACCOUNT_X_KEY": A, "LUMA_API_KEY": B}, "LUMA_API_KEY"),
        ({"LUMA_ACCOUNT_X_FLAVOR": "luma"}, "LUMA_ACCOUNT_X_KEY"),
        ({"LUMA_ACCOUNT_X-1_KEY": A}, "LUMA_ACCOUNT_X-1_KEY"),
        ({"LUMA_ACCOUNT_X_KEY": A, "LUMA_ACCOUNT_x_KEY": B}, "LUMA_ACCOUNT_"),
        (
            {"LUMA_ACCOUNT_X_KEY": A, "LUMA_ACCOUNT_X_DAILY_LIMIT": "0"},
            "LUMA_ACCOUNT_X_DAILY_LIMIT",
        ),
    ]:
        with pytest.raises(SettingsError, match=named):
            accounts.pool(settings_module.load(bad, instance=tmp_path))


@pytest.mark.slow
def test_a_bad_account_setting_is_one_line_and_no_start(tmp_path: Any) -> None:
    env = {"PATH": "/usr/bin:/bin", "LUMA_ACCOUNT_X_FLAVOR": "luma", "HOME": str(tmp_path)}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.db'}"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "tracker"), "list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "LUMA_ACCOUNT_X_KEY" in done.stderr and "Traceback" not in done.stderr


def test_new_work_spreads_and_derived_work_follows_its_source(
    live: Any, make_settings: Any, db: Database, sim: Simulator
) -> None:
    pool = Pool(live, make_settings, db, sim)
    ids = [pool.submit({"user_prompt": f"a kite {n}"}).json()["id"] for n in range(6)]
    done = pool.until_final(ids)
    assert {t["state"] for t in done} == {"completed"}
    assert {t["account"] for t in done} == {"alpha", "beta"}  # both took work
    # the least loaded first: both busy while work waits; one create a task, none twice
    assert sum(sim.creates_by_key.values()) == 6 and min(sim.creates_by_key.values()) >= 2

    for source in done[:2]:  # an extend goes only to the account that made its source
        made = pool.submit({"source_task_id": source["upstream_id"], "user_prompt": "on"}).json()
        assert made["account"] == source["account"]
    assert requests.get(f"{pool.url}/api/accounts", timeout=5).json()["accounts"][0]["name"] == (
        "alpha"
    )


def test_a_pinned_task_names_a_known_account_and_its_sources_own(
    live: Any, make_settings: Any, db: Database, sim: Simulator
) -> None:
    pool = Pool(live, make_settings, db, sim)
    unknown = pool.submit({"user_prompt": "a kite", "account": "gamma"})
    assert unknown.status_code == 400 and unknown.json()["field"] == "account"
    [source] = pool.until_final(
        [pool.submit({"user_prompt": "a kite", "account": "beta"}).json()["id"]]
    )
    assert source["account"] == "beta"
    other = pool.submit(
        {"source_task_id": source["upstream_id"], "user_prompt": "on", "account": "alpha"}
    )
    assert other.status_code == 400 and "beta" in other.json()["error"]
    # a video made elsewhere: in which account? with two of this API, the body must say
    untracked = pool.submit({"source_task_id": "made-elsewhere", "user_prompt": "on"})
    assert untracked.status_code == 400 and untracked.json()["field"] == "account"
    with db.read() as session:
        assert session.query(Task).count() == 1  # nothing refused was stored


def test_a_refused_key_disables_its_account_and_its_new_work_finishes_on_the_other(
    live: Any, make_settings: Any, db: Database, sim: Simulator
) -> None:
    pool = Pool(live, make_settings, db, sim)
    [made_by_alpha] = pool.until_final(
        [pool.submit({"user_prompt": "first", "account": "alpha"}).json()["id"]]
    )
    sim.revoke(A)
    ids = [pool.submit({"user_prompt": f"kite {n}"}).json()["id"] for n in range(6)]
    pinned = pool.submit({"source_task_id": made_by_alpha["upstream_id"], "user_prompt": "onward"})
    done = pool.until_final(ids)
    assert {t["state"] for t in done} == {"completed"}, [t["failure_reason"] for t in done]
    assert {t["account"] for t in done} == {"beta"}
    assert sim.creates_by_key[B] == 6 and sim.creates_by_key[A] == 1  # none sent twice
    shown = {
        a["name"]: a for a in requests.get(f"{pool.url}/api/accounts", timeout=5).json()["accounts"]
    }
    assert shown["alpha"]["enabled"] is False and "refused" in shown["alpha"]["disabled_reason"]
    waiting = pool.task(pinned.json()["id"])
    assert waiting["state"] == "queued" and waiting["account"] == "alpha"  # waits for its own

    account_rows.enable(db, accounts.named(pool.settings, "alpha"))  # type: ignore[arg-type]
    sim.restore(A)
    [extended] = pool.until_final([waiting["id"]])
    assert extended["state"] == "completed", extended["failure_reason"]
    assert extended["account"] == "alpha"


def test_the_daily_limit_holds_under_racing_submits(
    live: Any, make_settings: Any, db: Database, sim: Simulator
) -> None:
    pool = Pool(
        live,
        make_settings,
        db,
        sim,
        LUMA_ACCOUNT_ALPHA_DAILY_LIMIT="5",
        LUMA_ACCOUNT_BETA_DAILY_LIMIT="5",
        LUMA_ACCOUNT_ALPHA_MAX_IN_FLIGHT="100",
        LUMA_ACCOUNT_BETA_MAX_IN_FLIGHT="100",
        LUMA_ACCOUNT_ALPHA_SUBMITS_PER_MINUTE="1000",
        LUMA_ACCOUNT_BETA_SUBMITS_PER_MINUTE="1000",
    )
    answers: list[int] = []

    def submit(n: int) -> None:
        answers.append(pool.submit({"user_prompt": f"race {n}"}).status_code)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    worker.run_once(pool.settings.with_overrides(media_dir=""), db=db)
    assert answers.count(201) == 100  # every submit accepted: the rest wait for tomorrow
    assert sim.creates_by_key == {A: 5, B: 5}
    shown = requests.get(f"{pool.url}/api/accounts", timeout=5).json()["accounts"]
    assert [(a["creates_today"], a["daily_limit"]) for a in shown] == [(5, 5), (5, 5)]
    with db.read() as session:
        assert session.query(Task).filter(Task.state == "queued").count() == 90
