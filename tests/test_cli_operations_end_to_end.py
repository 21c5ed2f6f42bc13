"""Issue 20: every operation from the command line, end to end on the simulator.

`tracker submit --kind ... --wait` as a user runs it (click's runner, in this process), with
a worker following the tasks meanwhile (its passes in a thread, as `tracker worker` runs
them): each kind ends completed with its archived copy printed, with callbacks (the
simulator calls a live tracker) and with them off (the worker's queries alone).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lumasim.simulator import Simulator
from tracker import cli
from tracker.db import Database
from tracker.flows import worker
from tracker.settings import load
from tracker.tasks.models import Task

pytestmark = pytest.mark.slow


@pytest.fixture
def luma() -> Iterator[Simulator]:
    simulator = Simulator(processing_after=0.1, complete_after=0.3, flavor="luma").start()
    yield simulator
    simulator.stop()


@pytest.fixture(params=[True, False], ids=["callbacks", "queries"])
def pointed(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    db: Database,
    luma: Simulator,
    live: Any,
    tmp_path: Path,
) -> Iterator[Path]:
    """The `tracker` command and a worker thread on this test's database and simulator."""
    media = tmp_path / "media"
    env = {
        "DATABASE_URL": db.url,
        "LUMA_API_BASE": luma.url,
        "LUMA_API_FLAVOR": "luma",
        "TRACKER_MEDIA_DIR": str(media),
        "TRACKER_MEDIA_ALLOW_PRIVATE": "1",
        "TRACKER_POLL_AFTER": "0",
    }
    if request.param:  # a live tracker takes the simulator's callbacks
        env["PUBLIC_BASE_URL"] = live(luma_api_base=luma.url, luma_api_flavor="luma").url
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LUMA_API_KEY", raising=False)
    settings = load(env, instance=tmp_path)
    stop = threading.Event()

    def follow() -> None:
        while not stop.is_set():
            worker.run_once(settings, db=db)
            stop.wait(0.05)

    thread = threading.Thread(target=follow, name="worker")
    thread.start()
    yield media
    stop.set()
    thread.join()


def run(*args: str) -> str:
    result = CliRunner().invoke(cli.main, ["submit", *args, "--wait"])
    assert result.exit_code == 0, result.output
    return result.output


def made(output: str) -> tuple[str, str]:
    """(what it made: `video`/`image`, the archived file) from --wait's last two lines."""
    *_, link, archived = output.strip().splitlines()
    word = link.split(":", 1)[0]
    return word, archived.removeprefix("archived: ")


def test_every_kind_from_the_command_line_ends_completed_and_archived(
    pointed: Path, db: Database
) -> None:
    source = run("--prompt", "a heron takes off")
    word, copy = made(source)
    assert word == "video" and Path(copy).is_file()
    found = re.search(r"task (\d+):", source)
    assert found, source
    with db.read() as session:
        task = session.get(Task, int(found.group(1)))
        assert task is not None and task.upstream_id
        upstream_id = task.upstream_id
    video = "https://cdn.example/source.mp4"
    kinds = [
        ["--source", upstream_id, "--prompt", "it lands"],
        ["--kind", "upscale", "--source", upstream_id, "--resolution", "1080p"],
        [
            "--kind",
            "audio",
            "--source",
            upstream_id,
            "--prompt",
            "wings",
            "--negative-prompt",
            "music",
        ],
        ["--kind", "modify", "--source", upstream_id, "--mode", "flex_2"],
        ["--kind", "modify", "--source-video-url", video, "--mode", "adhere_1"],
        ["--kind", "reframe", "--source", upstream_id, "--aspect-ratio", "9:16"],
        ["--kind", "image", "--prompt", "a kite", "--model", "photon-flash-1"],
    ]
    for args in kinds:
        word, copy = made(run(*args))
        assert word == ("image" if "image" in args else "video"), args
        assert Path(copy).is_file() and Path(copy).stat().st_size > 0, args
        assert Path(copy).suffix == (".jpg" if word == "image" else ".mp4")
