"""The service's upkeep: `tracker db` (migrations, moving to PostgreSQL) and `tracker notify`
(the outgoing webhooks' signing secrets)."""

from __future__ import annotations

import click

from tracker.cli.context import load_settings, open_database
from tracker.dbmigrate import alembic_config, upgrade


@click.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (the Procfile's release step)."""
    settings = load_settings()
    upgrade(settings.database_url)
    click.echo("database is at the newest migration")


@db.command("check")
def db_check() -> None:
    """Fail when the models and the migrations disagree."""
    from alembic import command

    command.check(alembic_config(load_settings().database_url))


@db.command("copy")
@click.option("--to", "target", required=True, help="postgresql://user@host/db, new and empty")
def db_copy(target: str) -> None:
    """Copy every task, event and counter into a new PostgreSQL database (moving up from SQLite).

    Stop the web and worker processes first: rows written during the copy would be left behind.
    """
    from tracker.cli import dbcopy

    settings = load_settings()
    source = open_database(settings)
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
    settings = load_settings()
    secrets = signing.signing_secrets(settings)
    if not secrets:
        raise click.ClickException("TRACKER_NOTIFY_SECRET is not set (and none is generated here)")
    for secret in secrets:
        click.echo(secret)
