"""The commands that run a process: the worker and one pass of it, archiving, the simulated
upstream, and `tracker dev` (what `make run` starts)."""

from __future__ import annotations

import json
import sys

import click

from tracker.cli.actions import command_settings, show_task
from tracker.db import Database
from tracker.flows.services import make_client


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9100, show_default=True, type=int)
@click.option(
    "--key",
    "keys",
    multiple=True,
    help="require this Bearer key; repeat it for several keys, each its own upstream account",
)
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
@click.option(
    "--store",
    default=None,
    metavar="PATH",
    help="a SQLite file that keeps its tasks across restarts (default: memory only)",
)
def simulate(
    host: str,
    port: int,
    keys: tuple[str, ...],
    no_callbacks: bool,
    processing_after: float,
    complete_after: float,
    flavor: str,
    store: str | None,
) -> None:
    """Run the simulated upstream in the foreground."""
    from lumasim import run

    argv = ["--host", host, "--port", str(port), "--flavor", flavor]
    argv += ["--processing-after", str(processing_after), "--complete-after", str(complete_after)]
    for key in keys:
        if key:  # --key "": no key, as before
            argv += ["--key", key]
    if no_callbacks:
        argv.append("--no-callbacks")
    if store:
        argv += ["--store", store]
    sys.exit(run.main(argv))


@click.command()
def worker() -> None:
    """The worker: dispatch, queries, archiving and webhooks (the Procfile's `poller`)."""
    from tracker.flows import worker as worker_module

    sys.exit(worker_module.run_forever(command_settings()))


@click.command()
@click.argument("task_id", type=int, required=False)
@click.option("--once", is_flag=True, help="run a single pass of the worker and exit")
def poll(task_id: int | None, once: bool) -> None:
    """Query one task now (TASK_ID), or with --once run one pass of the worker: dispatch queued
    tasks, query quiet ones, time out old ones."""
    from tracker.flows import follow
    from tracker.flows import worker as worker_module
    from tracker.tasks.states import InvalidAction
    from tracker.upstream.client import UpstreamError

    if once == (task_id is not None):
        raise click.UsageError("give a TASK_ID (query it now) or --once (one worker pass)")
    settings = command_settings(task=True)
    if task_id is None:
        click.echo(json.dumps(worker_module.run_once(settings)))
        return
    database = Database(settings.database_url)
    try:
        follow.query_now(database, settings, make_client(settings), task_id)
    except LookupError:
        raise click.ClickException(f"no task {task_id}") from None
    except (InvalidAction, UpstreamError) as exc:
        raise click.ClickException(f"task {task_id}: {exc}") from None
    show_task(database, task_id)


@click.command()
@click.option("--missing", is_flag=True, required=True, help="all finished, not yet archived")
def archive(missing: bool) -> None:
    """Copy finished videos into the bucket or folder (the worker does it as tasks complete).

    With TRACKER_MEDIA_URL set, copies still in TRACKER_MEDIA_DIR are moved into the bucket
    first (each local copy deleted once its upload is verified). It takes leases as a worker
    does, so it keeps a heartbeat while it runs: killed, its downloads are taken over within
    a minute like a worker's.
    """
    from tracker import storage
    from tracker.flows import archive as media
    from tracker.storage.stores import StorageError
    from tracker.tasks import heartbeats

    settings = command_settings()
    if not settings.archives:
        raise click.ClickException("TRACKER_MEDIA_DIR is empty: archival is off")
    database = Database(settings.database_url)
    try:
        if settings.media_url:
            moved = storage.move_local_copies(database, settings)
            click.echo(
                f"moved {moved.moved} local cop{'y' if moved.moved == 1 else 'ies'} into "
                f"{settings.media_url}"
                + (f" ({moved.already} already there)" if moved.already else "")
            )
            for line in moved.kept:
                click.echo(f"kept in {settings.media_dir}: {line}", err=True)
        with heartbeats.Heartbeat(database, heartbeats.new_id()).running() as holder:
            count = media.archive_missing(database, settings, make_client(settings), holder=holder)
    except StorageError as exc:
        raise click.ClickException(exc.reason) from None
    click.echo(f"archived {count} task(s)")


@click.command()
def dev() -> None:
    """What `make run` starts: simulator (without LUMA_API_KEY), migrations, web and worker."""
    from tracker.cli import dev as devrun

    sys.exit(devrun.main())
