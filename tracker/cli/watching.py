"""The CLI's following commands: `submit --wait`, `tracker download`, `tracker watch`.

They read the database as the web app does (the worker and callbacks move the tasks). On a
terminal the state is one line rewritten in place; otherwise (a pipe, a log, CI) a plain line
is printed each time something changes, so the output stays readable in a file.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
from sqlalchemy import select

from tracker import storage
from tracker.db import Database
from tracker.settings import Settings
from tracker.storage import netguard
from tracker.storage.download import DownloadError, download
from tracker.storage.s3 import S3Store
from tracker.storage.stores import LocalStore
from tracker.tasks.models import FINAL_STATES, Task

EVERY = 0.5  # seconds between looks at the row
ARCHIVE_GRACE = 120.0  # after completion, how long `--wait` waits for the archived copy


@dataclass(frozen=True)
class Seen:
    state: str
    progress: int | None
    archived: bool
    archive_error: str | None

    def line(self, task_id: int, elapsed: float) -> str:
        shown = self.state.replace("_", " ")
        if self.progress is not None and self.state not in FINAL_STATES:
            shown += f" {self.progress}%"
        return f"task {task_id}: {shown} ({elapsed:.0f} s)"


def _look(db: Database, task_id: int) -> tuple[Seen, Task] | None:
    with db.read() as session:
        task = session.get(Task, task_id)
        if task is None:
            return None
        seen = Seen(task.state, task.progress, bool(made(task)[2]), task.archive_error)
        return seen, task


def made(task: Task) -> tuple[str, str | None, str | None]:
    """What a task makes: its word, the upstream's link and the archived copy's name. An
    image's link is the Generation's `assets.image` (the parser reads it as the thumbnail);
    every other kind makes a video."""
    if task.kind == "image":
        return "image", task.thumbnail_url, task.media_path
    return "video", task.video_url, task.media_path


def archived_path(settings: Settings, name: str | None) -> str | None:
    """Where the archived copy is: a file path, or s3://bucket/key."""
    store = storage.primary(settings)
    if store is None or not name:
        return None
    if isinstance(store, LocalStore):
        path = store.path(name)
        return str(path) if path is not None else None
    if isinstance(store, S3Store):
        return f"s3://{store.bucket}/{store.key(name)}"
    return None


def wait_for(db: Database, settings: Settings, task_id: int, *, tty: bool | None = None) -> int:
    """Follow a task to its end: 0 when it completed, 1 when it failed/was rejected/timed out."""
    tty = sys.stdout.isatty() if tty is None else tty
    started = time.monotonic()
    last_line = ""
    completed_at: float | None = None
    while True:
        looked = _look(db, task_id)
        if looked is None:
            raise click.ClickException(f"no task {task_id}")
        seen, task = looked
        elapsed = time.monotonic() - started
        line = seen.line(task_id, elapsed)
        if tty:
            click.echo("\r\x1b[2K" + line, nl=False)
        elif line.split(" (")[0] != last_line.split(" (")[0]:
            click.echo(line)
        last_line = line
        if seen.state in FINAL_STATES and seen.state != "completed":
            if tty:
                click.echo()
            click.echo(
                f"{seen.state.replace('_', ' ')}: {task.failure_reason or 'no reason given'}"
            )
            return 1
        if seen.state == "completed":
            completed_at = completed_at if completed_at is not None else time.monotonic()
            waiting_for_copy = (
                settings.archives
                and not seen.archived
                and not seen.archive_error
                and time.monotonic() - completed_at < ARCHIVE_GRACE
            )
            if not waiting_for_copy:
                if tty:
                    click.echo()
                word, link, copy = made(task)
                click.echo(f"{word}: {link or '(no link)'}")
                where = archived_path(settings, copy)
                click.echo(
                    f"archived: {where or 'not yet (' + (seen.archive_error or 'pending') + ')'}"
                )
                return 0
        time.sleep(EVERY)


def download_to(db: Database, settings: Settings, task_id: int, output: Path | None) -> Path:
    """Write the archived copy; without one, fetch the upstream link through the address guard."""
    with db.read() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise click.ClickException(f"no task {task_id}")
        word, video_url, media_path = made(task)
    # an image's archived name says its type (.jpg or .png); a video is an .mp4
    dest = output or Path(media_path or f"{task_id}.{'jpg' if word == 'image' else 'mp4'}")
    store = storage.primary(settings)
    if media_path and store is not None:
        if isinstance(store, LocalStore):
            source = store.path(media_path)
            if source is not None:
                shutil.copyfile(source, dest)
                return dest
        elif isinstance(store, S3Store):
            store.client.download_file(store.bucket, store.key(media_path), str(dest))
            return dest
    if not video_url:
        raise click.ClickException(f"task {task_id} has no archived copy and no {word} link yet")
    guard = netguard.Guard(allow_private=settings.media_allow_private)
    try:
        download(video_url, dest.resolve(), settings, guard)
    except (DownloadError, netguard.FetchError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise click.ClickException(f"could not download task {task_id}: {reason}") from None
    return dest


def watch_lines(db: Database, limit: int) -> list[str]:
    query = select(Task).order_by(Task.id.desc()).limit(limit)
    with db.read() as session:
        return [
            f"{task.id:>6}  {task.state:<10}  "
            f"{(str(task.progress) + '%') if task.progress is not None else '':>4}  "
            f"{task.user_prompt[:60]}"
            for task in session.scalars(query)
        ]


def watch(db: Database, limit: int, *, once: bool = False, tty: bool | None = None) -> None:
    """Follow the newest tasks: redrawn in place on a terminal, changed lines otherwise."""
    tty = sys.stdout.isatty() if tty is None else tty
    shown: dict[str, str] = {}
    while True:
        lines = watch_lines(db, limit)
        if tty:
            click.echo("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S") + f"  newest {limit} tasks")
            for line in lines:
                click.echo(line)
        else:
            for line in reversed(lines):
                key = line[:6]
                if shown.get(key) != line:
                    click.echo(line)
                    shown[key] = line
        if once:
            return
        time.sleep(1.0)
