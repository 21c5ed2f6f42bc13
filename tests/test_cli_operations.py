"""`tracker submit --kind`: every operation from the command line, on a real database, with a
scripted upstream on 127.0.0.1 (tests/support/scripted.py) that accepts every create."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, update

from tests.support.scripted import ScriptedUpstream
from tests.support.waiting import wait_for
from tracker import cli
from tracker.db import Database
from tracker.flows import validate
from tracker.tasks.models import Task, utcnow
from tracker.tasks.rows import moved
from tracker.tasks.states import TaskState

UNTRACKED = "5e2f0c44-untracked-source"  # no task of ours: an untracked source id passes
VIDEO = "https://cdn.example/v.mp4"


@pytest.fixture
def tracker_env(
    monkeypatch: pytest.MonkeyPatch, db: Database, upstream: ScriptedUpstream, tmp_path: Path
) -> Any:
    """Point the `tracker` command at this test's database and upstream: `tracker_env(flavor)`."""

    def point(flavor: str) -> Path:
        media = tmp_path / "media"
        for name, value in {
            "DATABASE_URL": db.url,
            "LUMA_API_BASE": upstream.url,
            "LUMA_API_FLAVOR": flavor,
            "TRACKER_MEDIA_DIR": str(media),
            "LUMA_CONNECT_TIMEOUT": "2",
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("LUMA_API_KEY", raising=False)
        return media

    return point


def submit(*args: str) -> Result:
    return CliRunner().invoke(cli.main, ["submit", *args])


def tasks(db: Database) -> list[Task]:
    with db.read() as session:
        return list(session.scalars(select(Task).order_by(Task.id)))


def test_an_upscale_on_luma_stores_its_kind_and_only_its_options(
    tracker_env: Any, db: Database, upstream: ScriptedUpstream
) -> None:
    tracker_env("luma")
    result = submit("--kind", "upscale", "--source", UNTRACKED, "--resolution", "1080p")
    assert result.exit_code == 0, result.output
    (task,) = tasks(db)
    assert (task.kind, task.source_task_id, task.options) == (
        "upscale",
        UNTRACKED,
        {"resolution": "1080p"},
    )
    assert task.user_prompt == ""  # no --prompt: an upscale takes none
    assert task.state == "pending"
    (create,) = upstream.creates()
    assert create.path == f"/generations/{UNTRACKED}/upscale"
    assert create.body == {"generation_type": "upscale_video", "resolution": "1080p"}


@pytest.mark.parametrize(
    ("args", "sent"),
    [
        (
            ["--kind", "image", "--prompt", "a kite", "--model", "photon-flash-1"],
            {"kind": "image", "user_prompt": "a kite", "model_name": "photon-flash-1"},
        ),
        (
            ["--kind", "modify", "--source-video-url", VIDEO, "--mode", "flex_1"],
            {"kind": "modify", "source_video_url": VIDEO, "mode": "flex_1"},
        ),
        (
            ["--kind", "audio", "--source", UNTRACKED, "--negative-prompt", "no music"],
            {"kind": "audio", "source_task_id": UNTRACKED, "negative_prompt": "no music"},
        ),
        (
            ["--kind", "reframe", "--source", UNTRACKED, "--aspect-ratio", "9:16"],
            {"kind": "reframe", "source_task_id": UNTRACKED, "aspect_ratio": "9:16"},
        ),
        (["--prompt", "a heron"], {"user_prompt": "a heron"}),  # no --kind: as before
    ],
)
def test_only_the_options_given_go_into_the_body(
    tracker_env: Any,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    sent: dict[str, Any],
) -> None:
    tracker_env("luma")
    bodies: list[dict[str, Any]] = []
    checked = validate.new_task

    def spy(body: dict[str, Any], *rest: Any, **kwargs: Any) -> Any:
        bodies.append(body)
        return checked(body, *rest, **kwargs)

    monkeypatch.setattr(validate, "new_task", spy)
    result = submit(*args)
    assert result.exit_code == 0, result.output
    assert bodies == [sent]
    (task,) = tasks(db)
    assert task.kind == sent.get("kind", "generate")


def test_an_operation_the_proxy_lacks_is_one_line_naming_kind(
    tracker_env: Any, db: Database, upstream: ScriptedUpstream
) -> None:
    tracker_env("proxy")
    result = submit("--kind", "upscale", "--source", UNTRACKED, "--resolution", "1080p")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: Invalid value for --kind: kind upscale is offered by")
    assert tasks(db) == [] and upstream.seen == []


@pytest.mark.parametrize(
    ("args", "field", "option"),
    [
        (["--kind", "modify", "--mode", "flex_1"], "source_task_id", "--source"),
        (["--kind", "image", "--model", "photon-1"], "user_prompt", "--prompt"),
        (["--kind", "extend", "--source", UNTRACKED], "user_prompt", "--prompt"),
        (["--kind", "reframe", "--source", UNTRACKED], "aspect_ratio", "--aspect-ratio"),
        (["--kind", "upscale", "--source", UNTRACKED, "--prompt", "x"], "user_prompt", "--prompt"),
        (["--kind", "image", "--prompt", "a kite", "--model", "ray-2"], "model_name", "--model"),
    ],
)
def test_what_a_kind_needs_or_refuses_is_one_line_naming_the_field(
    tracker_env: Any,
    db: Database,
    upstream: ScriptedUpstream,
    args: list[str],
    field: str,
    option: str,
) -> None:
    tracker_env("luma")
    result = submit(*args)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: Invalid value for {option}: ")
    assert field in line
    assert tasks(db) == [] and upstream.seen == []


def _complete_newest(db: Database, media: Path, **columns: Any) -> None:
    """Once the newest task's create is answered, complete it and archive its file, as the
    upstream and the worker would (a direct write: tests are exempt from the single writer)."""
    newest = wait_for(lambda: [t for t in tasks(db) if t.state == "pending"])[-1]
    names = {
        column: value.format(id=newest.id)
        for column, value in columns.items()
        if column in ("media_path", "thumbnail_path")
    }
    media.mkdir(exist_ok=True)
    for name in names.values():
        (media / name).write_bytes(b"made")
    with db.write() as session:
        session.execute(
            update(Task)
            .where(Task.id == newest.id)
            .values(
                {"state": TaskState.COMPLETED, "updated_at": utcnow(), "completed_at": utcnow()}
                | columns
                | names
            )
        )
        moved(session, newest.id, TaskState.PENDING, TaskState.COMPLETED)


@pytest.mark.parametrize(
    ("args", "columns", "word", "link", "copy"),
    [
        (
            ["--kind", "upscale", "--source", UNTRACKED, "--resolution", "1080p"],
            {"video_url": "https://cdn.example/up.mp4", "media_path": "{id}.mp4"},
            "video",
            "https://cdn.example/up.mp4",
            "{id}.mp4",
        ),
        (
            ["--kind", "image", "--prompt", "a kite", "--model", "photon-flash-1"],
            {"thumbnail_url": "https://cdn.example/kite.jpg", "media_path": "{id}.jpg"},
            "image",
            "https://cdn.example/kite.jpg",
            "{id}.jpg",
        ),
    ],
)
def test_wait_follows_any_kind_and_prints_what_it_made(
    tracker_env: Any,
    db: Database,
    args: list[str],
    columns: dict[str, str],
    word: str,
    link: str,
    copy: str,
) -> None:
    media = tracker_env("luma")
    finisher = threading.Thread(target=_complete_newest, args=(db, media), kwargs=columns)
    finisher.start()
    result = submit(*args, "--wait")
    finisher.join()
    assert result.exit_code == 0, result.output
    (task,) = tasks(db)
    lines = result.output.strip().splitlines()
    assert lines[-2:] == [f"{word}: {link}", f"archived: {media / copy.format(id=task.id)}"]
    if word == "image":
        assert task.video_url is None and "video:" not in result.output
