"""The `tracker` command: database, web helpers, worker, simulator and everyday actions.

Every subcommand reads the same settings as the web app; a bad setting stops it
with one line naming the variable.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from . import dispatch, lifecycle, validate
from . import settings as settings_module
from .db import Database
from .migrate import alembic_config, upgrade
from .serialize import task_json
from .services import make_client
from .settings import Settings, SettingsError


def _settings() -> Settings:
    from . import redact

    try:
        settings = settings_module.load()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    redact.register(settings.luma_api_key, settings.api_token)
    redact.register(settings.aws_access_key_id, settings.aws_secret_access_key)
    from . import webhooks

    webhooks.configure(settings)  # events this command causes go to TRACKER_NOTIFY_URL too
    return settings


def setup_logging(level: int = logging.INFO) -> None:
    from . import logs
    from .redact import install_logging_filter

    logs.configure(level)  # text, or one JSON object a line (TRACKER_LOG_FORMAT=json)
    install_logging_filter()
    # alembic announces each of its plugins at INFO on every start; the migrations themselves stay
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


@click.group()
def main() -> None:
    """Luma task tracker."""
    setup_logging()


# -- database -------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (the Procfile's release step)."""
    settings = _settings()
    upgrade(settings.database_url)
    click.echo("database is at the newest migration")


@db.command("check")
def db_check() -> None:
    """Fail when the models and the migrations disagree."""
    from alembic import command

    command.check(alembic_config(_settings().database_url))


@db.command("copy")
@click.option("--to", "target", required=True, help="postgresql://user@host/db, new and empty")
def db_copy(target: str) -> None:
    """Copy every task, event and counter into a new PostgreSQL database (moving up from SQLite).

    Stop the web and worker processes first: rows written during the copy would be left behind.
    """
    from . import dbcopy

    settings = _settings()
    source = _db(settings)
    try:
        copied = dbcopy.copy(source, target, upgrade=upgrade, report=click.echo)
    except dbcopy.CopyError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        source.dispose()
    click.echo(f"copied into {copied.target}; the counts match")
    for line in dbcopy.next_steps(settings, copied.target):
        click.echo(line)


# -- processes ------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9100, show_default=True, type=int)
@click.option("--key", default="", help="require this Bearer key")
@click.option("--no-callbacks", is_flag=True, help="never call notify_hook (test the poller)")
@click.option("--processing-after", default=1.0, show_default=True, type=float)
@click.option("--complete-after", default=3.0, show_default=True, type=float)
@click.option(
    "--flavor",
    type=click.Choice(["proxy", "luma"]),
    default="proxy",
    show_default=True,
    help="which API to speak: the reseller proxy's or Luma's own",
)
def simulate(
    host: str,
    port: int,
    key: str,
    no_callbacks: bool,
    processing_after: float,
    complete_after: float,
    flavor: str,
) -> None:
    """Run the simulated upstream in the foreground."""
    from lumasim import run

    argv = ["--host", host, "--port", str(port), "--flavor", flavor]
    argv += ["--processing-after", str(processing_after), "--complete-after", str(complete_after)]
    if key:
        argv += ["--key", key]
    if no_callbacks:
        argv.append("--no-callbacks")
    sys.exit(run.main(argv))


@main.command()
def worker() -> None:
    """The poller and dispatcher loop (the Procfile's `poller`)."""
    from . import worker as worker_module

    sys.exit(worker_module.run_forever(_settings()))


@main.command()
@click.option("--once", is_flag=True, required=True, help="run a single pass and exit")
def poll(once: bool) -> None:
    """One pass of the worker: dispatch queued tasks, poll quiet ones, time out old ones."""
    from . import worker as worker_module

    summary = worker_module.run_once(_settings())
    click.echo(json.dumps(summary))


@main.command()
@click.option("--missing", is_flag=True, required=True, help="all finished, not yet archived")
def archive(missing: bool) -> None:
    """Copy finished videos into the bucket or folder (the worker does it as tasks complete).

    With TRACKER_MEDIA_URL set, copies still in TRACKER_MEDIA_DIR are moved into the bucket
    first (each local copy deleted once its upload is verified). It takes leases as a worker
    does, so it keeps a heartbeat while it runs: killed, its downloads are taken over within
    a minute like a worker's.
    """
    from . import heartbeat, media, media_move
    from .storage.base import StorageError

    settings = _settings()
    if not settings.archives:
        raise click.ClickException("TRACKER_MEDIA_DIR is empty: archival is off")
    database = _db(settings)
    try:
        if settings.media_url:
            moved = media_move.move_local_copies(database, settings)
            click.echo(
                f"moved {moved.moved} local cop{'y' if moved.moved == 1 else 'ies'} into "
                f"{settings.media_url}"
                + (f" ({moved.already} already there)" if moved.already else "")
            )
            for line in moved.kept:
                click.echo(f"kept in {settings.media_dir}: {line}", err=True)
        with heartbeat.Heartbeat(database, heartbeat.new_id()).running() as holder:
            count = media.archive_missing(database, settings, make_client(settings), holder=holder)
    except StorageError as exc:
        raise click.ClickException(exc.reason) from None
    click.echo(f"archived {count} task(s)")


@main.command()
def dev() -> None:
    """What `make run` starts: simulator (without LUMA_API_KEY), migrations, web and worker."""
    from . import devrun

    sys.exit(devrun.main())


# -- everyday actions -----------------------------------------------------------------------


def _db(settings: Settings) -> Database:
    return Database(settings.database_url)


@main.command()
@click.option("--source", "source_task_id", default=None, help="upstream id of the video to extend")
@click.option("--prompt", "user_prompt", required=True)
@click.option("--expand-prompt/--no-expand-prompt", default=None)
@click.option("--image-url", default=None)
@click.option("--image-end-url", default=None)
@click.option("--notify-url", default=None, help="POST this task's events there (signed webhooks)")
@click.option("--wait", "wait_", is_flag=True, help="follow it to the end: exit 0 completed, 1 not")
def submit(
    source_task_id: str | None,
    user_prompt: str,
    expand_prompt: bool | None,
    image_url: str | None,
    image_end_url: str | None,
    notify_url: str | None,
    wait_: bool,
) -> None:
    """Submit an extend (with --source) or a new generation."""
    settings = _settings()
    body = {
        "source_task_id": source_task_id,
        "user_prompt": user_prompt,
        "expand_prompt": expand_prompt,
        "image_url": image_url,
        "image_end_url": image_end_url,
        "notify_url": notify_url,
    }
    try:
        new = validate.new_task(
            {k: v for k, v in body.items() if v is not None},
            settings.luma_api_flavor,
            allow_private=settings.notify_allow_private,
        )
    except validate.ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint=exc.field) from None
    database = _db(settings)
    task = dispatch.submit(database, settings, make_client(settings), new)
    if wait_:
        from . import cli_follow

        sys.exit(cli_follow.wait_for(database, settings, task.id))
    _show(database, task.id)


@main.command("import")
@click.argument("upstream_id")
@click.option("--notify-url", default=None, help="POST this task's events there (signed webhooks)")
def import_(upstream_id: str, notify_url: str | None) -> None:
    """Track a task made elsewhere (Luma's web app, another tool) by its upstream id."""
    from . import importing

    settings = _settings()
    try:
        upstream_id = validate.check_upstream_id(upstream_id)
    except validate.ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="UPSTREAM_ID") from None
    try:
        target = validate.notify_url(notify_url, allow_private=settings.notify_allow_private)
    except validate.ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="--notify-url") from None
    database = _db(settings)
    try:
        task, created = importing.import_task(
            database, settings, make_client(settings), upstream_id, notify_url=target
        )
    except importing.UnknownUpstreamTask as exc:
        message = f"the upstream does not know {upstream_id}: {exc.reason}"
        raise click.ClickException(message) from None
    except importing.ImportFailed as exc:
        raise click.ClickException(exc.message) from None
    if not created:
        click.echo(f"already tracked as task {task.id}", err=True)
    _show(database, task.id)


def _show(database: Database, task_id: int, events: bool = False) -> None:
    from .models import Task

    with database.read() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise click.ClickException(f"no task {task_id}")
        click.echo(json.dumps(task_json(task, events=events), indent=2))


@main.command()
@click.argument("task_id", type=int)
def show(task_id: int) -> None:
    """Print one task with its events as JSON."""
    _show(_db(_settings()), task_id, events=True)


@main.command("list")
@click.option("--state", default=None)
@click.option("--limit", default=20, show_default=True, type=int)
def list_tasks(state: str | None, limit: int) -> None:
    """The newest tasks, one line each."""
    from sqlalchemy import select

    from .models import Task

    query = select(Task).order_by(Task.id.desc()).limit(limit)
    if state:
        query = query.where(Task.state == state)
    with _db(_settings()).read() as session:
        for task in session.scalars(query):
            click.echo(
                f"{task.id:>6}  {task.state:<10}  {task.kind:<8}  "
                f"{task.upstream_id or '-':<36}  {task.user_prompt[:50]}"
            )


@main.command()
@click.argument("task_id", type=int)
def resend(task_id: int) -> None:
    """Send a rejected task again, as a new attempt."""
    settings = _settings()
    database = _db(settings)
    try:
        dispatch.resend(database, settings, make_client(settings), task_id)
    except (LookupError, lifecycle.InvalidAction) as exc:
        raise click.ClickException(str(exc)) from None
    _show(database, task_id)


# -- following tasks, webhooks ------------------------------------------------------------------


@main.command()
@click.argument("task_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def download(task_id: int, output: Path | None) -> None:
    """Write the task's archived video to FILE (default ID.mp4).

    Without an archived copy yet, the upstream's link is fetched through the address guard.
    """
    from . import cli_follow

    settings = _settings()
    written = cli_follow.download_to(_db(settings), settings, task_id, output)
    click.echo(str(written))


@main.command()
@click.option("--limit", default=15, show_default=True, type=int)
@click.option("--once", is_flag=True, help="print once and exit")
def watch(limit: int, once: bool) -> None:
    """Follow the newest tasks live (Ctrl-C stops)."""
    from . import cli_follow

    try:
        cli_follow.watch(_db(_settings()), limit, once=once)
    except KeyboardInterrupt:
        click.echo()


@main.group()
def notify() -> None:
    """Outgoing webhooks."""


@notify.command("secret")
@click.option("--new", "make_new", is_flag=True, help="print a fresh secret (to rotate one in)")
def notify_secret(make_new: bool) -> None:
    """Print the signing secret(s) your receiver verifies with (whsec_...)."""
    from .webhooks import signing

    if make_new:
        click.echo(signing.new_secret())
        return
    settings = _settings()
    secrets = signing.signing_secrets(settings)
    if not secrets:
        raise click.ClickException("TRACKER_NOTIFY_SECRET is not set (and none is generated here)")
    for secret in secrets:
        click.echo(secret)
