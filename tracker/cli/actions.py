"""Everyday work on tasks: submit, import, show, list and resend them, and follow them
(`submit --wait`, `download`, `watch`, whose loops are in `watching.py`); and the settings
every `tracker` command starts from (`command_settings`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from tracker.cli.dev import DEV_ENV, checkout, database_tag, read_dev_env
from tracker.db import Database
from tracker.flows import submit as submit_flow
from tracker.flows import validate
from tracker.flows.bodies import SUBMITS
from tracker.flows.services import make_client, start
from tracker.settings import Settings, load
from tracker.tasks import store
from tracker.tasks.schema import task_json
from tracker.tasks.states import TaskState
from tracker.upstream.luma import IMAGE_MODELS, MODES

# a body field's option, where its name is not the field's own ("--" + field, "_" as "-")
OPTIONS = {"source_task_id": "--source", "user_prompt": "--prompt", "model_name": "--model"}

# -- the settings every command starts from ---------------------------------------------------

NO_DATABASE = (
    "DATABASE_URL is not set and this folder is not in a checkout of luma-tracker: run it in "
    "the checkout (beside `make run`), or point it at a database with "
    "DATABASE_URL=sqlite:////path/to/instance/tracker.db (or postgresql://user@host/db)"
)


def command_settings(*, task: bool = False) -> Settings:
    """A `tracker` command's settings (instance/ is the checkout's), its process set up.

    A task command (`task`) outside a checkout wants DATABASE_URL rather than making a
    database there; inside one it takes what a running `make run` on its database chose
    (instance/dev.env, tracker/cli/dev.py), below its own environment, and says so on stderr.
    TRACKER_DEV_ENV=0 turns that off; `worker`, `db`, `dev` and the web never read it.
    """
    env = dict(os.environ)
    root = checkout()
    instance = (root or Path.cwd()) / "instance"
    if task and root is None and not env.get("DATABASE_URL", "").strip():
        raise click.ClickException(NO_DATABASE)
    dev_env = env.get("TRACKER_DEV_ENV", "").strip().lower() not in ("0", "false", "no", "off")
    found = read_dev_env(instance / DEV_ENV) if task and root and dev_env else None
    if found is not None and found[2] != database_tag(load(env, instance=instance).database_url):
        found = None  # `make run` on another database: its simulator has other tasks
    if found is not None:
        pid, chosen, _ = found
        taken = sorted(name for name in chosen if name not in env)
        env.update({name: chosen[name] for name in taken})
        click.echo(
            f"using the settings of `make run` (pid {pid}) from {instance / DEV_ENV}: "
            + (", ".join(taken) if taken else "none, all set here already")
            + " (TRACKER_DEV_ENV=0 ignores it)",
            err=True,
        )
    settings = start(load(env, instance=instance))
    context = click.get_current_context(silent=True)
    if context is not None:  # for the one line about a database that cannot be used
        context.meta["tracker.database_url"] = settings.database_url
    return settings


class Refused(click.ClickException):
    """Bad input to a command: one line naming the field, exit status 2 (as click's own)."""

    exit_code = 2


def option_of(field: str) -> str:
    return OPTIONS.get(field, "--" + field.replace("_", "-"))


@click.command()
@click.option(
    "--kind",
    type=click.Choice(tuple(SUBMITS)),
    default=None,
    help="what to make (default: extend with --source, else generate); "
    "the kinds past extend need LUMA_API_FLAVOR=luma",
)
@click.option("--source", "source_task_id", default=None, help="upstream id of the source video")
@click.option("--source-video-url", default=None, help="a video by its URL (modify, reframe)")
@click.option("--prompt", "user_prompt", default=None, help="required for generate, extend, image")
@click.option("--negative-prompt", default=None, help="what the sound should not be (audio)")
@click.option("--expand-prompt/--no-expand-prompt", default=None)
@click.option(
    "--model", "model_name", default=None, help=f"the model (image: {', '.join(IMAGE_MODELS)})"
)
@click.option("--aspect-ratio", default=None, help=", ".join(validate.ASPECT_RATIOS))
@click.option("--resolution", default=None, help=", ".join(validate.RESOLUTIONS))
@click.option("--mode", default=None, help=f"modify: {MODES[0]} ... {MODES[-1]}")
@click.option("--image-url", default=None)
@click.option("--image-end-url", default=None)
@click.option("--first-frame-url", default=None, help="modify: the first frame, restyled")
@click.option("--style-url", default=None, help="image: a style reference")
@click.option("--notify-url", default=None, help="POST this task's events there (signed webhooks)")
@click.option("--account", default=None, help="the upstream account to send it with (a pool)")
@click.option("--wait", "wait_", is_flag=True, help="follow it to the end: exit 0 completed, 1 not")
def submit(wait_: bool, **given: Any) -> None:
    """Submit a task: a new generation, an extend (--source), or with --kind another operation.

    Only the options given are sent; the kind says which it needs (a missing or a foreign one
    is an error naming its field, and nothing is stored).
    """
    settings = command_settings(task=True)
    database = Database(settings.database_url)
    try:
        new = validate.new_task(
            {field: value for field, value in given.items() if value is not None},
            settings.luma_api_flavor,
            allow_private=settings.notify_allow_private,
        )
        task = submit_flow.submit(database, settings, make_client(settings), new)  # its source
    except validate.ValidationError as exc:
        where = f"Invalid value for {option_of(exc.field)}: " if exc.field else ""
        raise Refused(where + exc.message) from None
    if wait_:
        from tracker.cli import watching

        sys.exit(watching.wait_for(database, settings, task.id))
    show_task(database, task.id)


@click.command("import")
@click.argument("upstream_id", required=False)
@click.option("--notify-url", default=None, help="POST this task's events there (signed webhooks)")
@click.option(
    "--all", "all_", is_flag=True, help="every generation of the account not yet tracked (luma)"
)
@click.option("--account", default=None, help="the account it was made in (with several)")
def import_(
    upstream_id: str | None, notify_url: str | None, all_: bool, account: str | None
) -> None:
    """Track a task made elsewhere (Luma's web app, another tool) by its upstream id, or with
    --all every generation of the account that is not tracked yet."""
    from tracker.flows import imports

    settings = command_settings(task=True)
    if all_ == (upstream_id is not None):
        raise click.UsageError("give an UPSTREAM_ID or --all (one of them)")
    if upstream_id is None:
        database = Database(settings.database_url)
        try:
            made, had = imports.import_all(database, settings, make_client(settings))
        except imports.ImportFailed as exc:
            raise click.ClickException(exc.message) from None
        click.echo(f"imported {made} generations; {had} were tracked already")
        return
    try:
        upstream_id = validate.check_upstream_id(upstream_id)
    except validate.ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="UPSTREAM_ID") from None
    try:
        target = validate.notify_url(notify_url, allow_private=settings.notify_allow_private)
    except validate.ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="--notify-url") from None
    database = Database(settings.database_url)
    try:
        task, created = imports.import_task(
            database,
            settings,
            make_client(settings),
            upstream_id,
            notify_url=target,
            account=account.strip().lower() if account else None,
        )
    except validate.ValidationError as exc:
        raise Refused(
            f"Invalid value for {option_of(exc.field or 'account')}: {exc.message}"
        ) from None
    except imports.UnknownUpstreamTask as exc:
        message = f"the upstream does not know {upstream_id}: {exc.reason}"
        raise click.ClickException(message) from None
    except imports.ImportFailed as exc:
        raise click.ClickException(exc.message) from None
    if not created:
        click.echo(f"already tracked as task {task.id}", err=True)
    show_task(database, task.id)


def show_task(database: Database, task_id: int, events: bool = False) -> None:
    from tracker.tasks.models import Task

    with database.read() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise click.ClickException(f"no task {task_id}")
        click.echo(json.dumps(task_json(task, events=events), indent=2))


@click.command()
@click.argument("task_id", type=int)
def show(task_id: int) -> None:
    """Print one task with its events as JSON."""
    show_task(Database(command_settings(task=True).database_url), task_id, events=True)


@click.command("list")
@click.option("--state", type=click.Choice([state.value for state in TaskState]), default=None)
@click.option("--limit", default=20, show_default=True, type=int)
def list_tasks(state: str | None, limit: int) -> None:
    """The newest tasks, one line each."""
    from sqlalchemy import select

    from tracker.tasks.models import Task

    query = select(Task).order_by(Task.id.desc()).limit(limit)
    if state:
        query = query.where(Task.state == state)
    with Database(command_settings(task=True).database_url).read() as session:
        for task in session.scalars(query):
            click.echo(
                f"{task.id:>6}  {task.state:<10}  {task.kind:<8}  "
                f"{task.upstream_id or '-':<36}  {task.user_prompt[:50]}"
            )


@click.command()
@click.argument("task_id", type=int)
def resend(task_id: int) -> None:
    """Send a rejected task again, as a new attempt."""
    settings = command_settings(task=True)
    database = Database(settings.database_url)
    try:
        submit_flow.resend(database, settings, make_client(settings), task_id)
    except LookupError:
        raise click.ClickException(f"no task {task_id}") from None
    except store.InvalidAction as exc:
        raise click.ClickException(str(exc)) from None
    show_task(database, task_id)


# -- following tasks ------------------------------------------------------------------------


@click.command()
@click.argument("task_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def download(task_id: int, output: Path | None) -> None:
    """Write the task's archived video to FILE (default ID.mp4).

    Without an archived copy yet, the upstream's link is fetched through the address guard.
    """
    from tracker.cli import watching

    settings = command_settings(task=True)
    written = watching.download_to(Database(settings.database_url), settings, task_id, output)
    click.echo(str(written))


@click.command()
@click.option("--limit", default=15, show_default=True, type=int)
@click.option("--once", is_flag=True, help="print once and exit")
def watch(limit: int, once: bool) -> None:
    """Follow the newest tasks live (Ctrl-C stops)."""
    from tracker.cli import watching

    try:
        watching.watch(Database(command_settings(task=True).database_url), limit, once=once)
    except KeyboardInterrupt:
        click.echo()
