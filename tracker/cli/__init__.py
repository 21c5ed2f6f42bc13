"""The `tracker` command: database, web helpers, worker, simulator and everyday actions.

Every subcommand that needs the settings starts as the web app and the worker do
(`tracker.flows.services.start`, through `actions.command_settings`: instance/ is the
checkout's, and the task commands take what a running `make run` chose): the same settings,
the same secrets masked, the same webhook target. A bad setting, or a database that cannot be
used, stops it with one line naming the variable, not a traceback (`_Group`).

The commands are grouped by what they are for: the service's upkeep here (`db`:
migrations, moving to PostgreSQL; `notify`: the outgoing webhooks' signing secrets),
`processes.py` (worker, poll, archive, simulate, dev) and `actions.py` (submit, import,
show, list, resend, download, watch; their following loops in `watching.py`). This file is
the group they hang from (the console script `tracker = tracker.cli:main`).
"""

from __future__ import annotations

import os
from typing import Any

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from tracker.cli import actions, processes
from tracker.cli.actions import command_settings
from tracker.db import Database
from tracker.dbschema import alembic_config, upgrade
from tracker.flows.services import setup_logging
from tracker.settings import SettingsError


class _Group(click.Group):
    """A bad setting, or a database that cannot be used, wherever a command meets it, is one
    line and exit code 1 (the worker and the web keep retrying theirs: they never get here)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None
        except DBAPIError as exc:
            url = ctx.meta.get("tracker.database_url") or os.environ.get("DATABASE_URL", "")
            problem = database_problem(exc, url)
            if problem is None:
                raise
            raise click.ClickException(problem) from None


def database_problem(exc: DBAPIError, url: str) -> str | None:
    """One line naming DATABASE_URL for a database that cannot be used (unreachable, missing,
    not migrated); None for any other error, which keeps its traceback (a bug)."""
    lines = str(exc.orig or exc).strip().splitlines()
    words = lines[0] if lines else type(exc.orig or exc).__name__
    shown = make_url(url).render_as_string(hide_password=True) if url else "the default"
    shown = shown.replace("+psycopg://", "://")
    if "no such table" in words or (isinstance(exc, ProgrammingError) and "relation" in words):
        return (
            f"the database DATABASE_URL names ({shown}) has no tables yet ({words}): "
            "run `tracker db upgrade` (or `make run`) first"
        )
    if not isinstance(exc, OperationalError):
        return None
    # psycopg: 'connection failed: connection to server at "h", port 5432 failed: FATAL:  why'
    reason = " ".join(words.rsplit(" failed: ", 1)[-1].removeprefix("FATAL:").split())
    return f"cannot use the database DATABASE_URL names ({shown}): {reason}"


@click.group(cls=_Group)
def main() -> None:
    """Luma task tracker."""
    setup_logging()


# -- the service's upkeep -------------------------------------------------------------------


@click.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (the Procfile's release step)."""
    upgrade(command_settings().database_url)
    click.echo("database is at the newest migration")


@db.command("check")
def db_check() -> None:
    """Fail when the models and the migrations disagree."""
    from alembic import command

    command.check(alembic_config(command_settings().database_url))


@db.command("copy")
@click.option("--to", "target", required=True, help="postgresql://user@host/db, new and empty")
def db_copy(target: str) -> None:
    """Copy every task, event and counter into a new PostgreSQL database (moving up from SQLite).

    Stop the web and worker processes first: rows written during the copy would be left behind.
    """
    from tracker.cli import dbcopy

    settings = command_settings()
    source = Database(settings.database_url)
    try:
        copied = dbcopy.copy(source, target, upgrade=upgrade, report=click.echo)
    except dbcopy.CopyError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        source.dispose()
    click.echo(f"copied into {copied.target}; the counts match")
    for line in dbcopy.next_steps(settings, copied.target):
        click.echo(line)


@click.group()
def notify() -> None:
    """Outgoing webhooks."""


@notify.command("secret")
@click.option("--new", "make_new", is_flag=True, help="print a fresh secret (to rotate one in)")
def notify_secret(make_new: bool) -> None:
    """Print the signing secret(s) your receiver verifies with (whsec_...)."""
    from tracker import signing

    if make_new:
        click.echo(signing.new_secret())
        return
    secrets = signing.signing_secrets(command_settings())
    if not secrets:
        raise click.ClickException("TRACKER_NOTIFY_SECRET is not set (and none is generated here)")
    for secret in secrets:
        click.echo(secret)


@click.group("accounts", invoke_without_command=True)
@click.pass_context
def accounts_(ctx: click.Context) -> None:
    """The upstream accounts (LUMA_ACCOUNT_<NAME>_KEY, or LUMA_API_KEY alone as `default`)."""
    if ctx.invoked_subcommand is not None:
        return
    from tracker.upstream.account_rows import overview

    settings = command_settings()
    rows = overview(Database(settings.database_url), settings)
    click.echo(f"{'NAME':<12} {'API':<6} {'STATE':<9} {'IN FLIGHT':>9} {'TODAY':>9} BALANCE")
    for row in rows:
        state = "enabled" if row["enabled"] else "disabled"
        today = f"{row['creates_today']}/{row['daily_limit'] or '-'}"
        cents = row["credit_balance"]
        balance = "-" if cents is None else f"${cents / 100:,.2f}"
        load = f"{row['in_flight']}/{row['max_in_flight']}"
        click.echo(
            f"{row['name']:<12} {row['upstream']:<6} {state:<9} {load:>9} {today:>9} {balance}"
        )
        if not row["enabled"]:
            click.echo(f"  disabled: {row['disabled_reason']}")


@accounts_.command("enable")
@click.argument("name")
def accounts_enable(name: str) -> None:
    """Let an account take work again (after its key was refused and then fixed)."""
    from tracker.upstream import account_rows, accounts

    settings = command_settings()
    account = accounts.named(settings, name.strip().lower())
    if account is None:
        known = ", ".join(one.name for one in accounts.pool(settings))
        raise click.ClickException(f"no account {name!r}: the accounts are {known}")
    account_rows.enable(Database(settings.database_url), account)
    click.echo(f"account {account.name} enabled")


for _command in (
    db,
    notify,
    accounts_,
    processes.simulate,
    processes.worker,
    processes.poll,
    processes.archive,
    processes.dev,
    actions.submit,
    actions.import_,
    actions.show,
    actions.list_tasks,
    actions.resend,
    actions.download,
    actions.watch,
):
    main.add_command(_command)
