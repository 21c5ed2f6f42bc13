"""`tracker db copy --to postgresql://...`: move every row from this database to a new one.

The step users take when they outgrow one machine (SQLite -> PostgreSQL). Every table the
models know (tasks, events, counters, and whatever later tables they add: deliveries,
worker heartbeats) is copied in one read snapshot of the source and one transaction on the
target, in foreign-key order with ids kept, then the counts are compared before the commit:
a copy is whole or absent. The target must be empty (its migrations seed the per-state
counters at zero, which are overwritten); an unmigrated target is migrated first. Sequences
are moved past the copied ids so that new rows do not collide.

Rows go in batches (`yield_per`), never the whole table in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Table, func, select, text
from sqlalchemy.engine import make_url

from tracker import dbschema
from tracker.db import Database
from tracker.settings import Settings, SettingsError, normalize_database_url
from tracker.tasks.models import Base

BATCH = 1000
# rows a migration writes by itself: present in an empty database, replaced by the copy's
SEEDED = frozenset({"state_counts"})


class CopyError(Exception):
    """The copy cannot start or did not add up; nothing was committed to the target."""


@dataclass
class Copied:
    target: str  # the URL with its password hidden
    counts: dict[str, int] = field(default_factory=dict)
    migrated: bool = False


def shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def copy(
    source: Database,
    target_url: str,
    *,
    upgrade: Callable[[str], None],
    report: Callable[[str], None] = print,
) -> Copied:
    """Copy every row of `source` into the empty database at `target_url`; raise CopyError."""
    try:
        target_url = normalize_database_url(target_url, name="--to")
    except SettingsError as exc:
        raise CopyError(str(exc)) from None
    if make_url(target_url) == make_url(source.url):
        raise CopyError("--to names the database being copied")
    result = Copied(target=shown(target_url))
    tables = list(Base.metadata.sorted_tables)
    with source.engine.connect() as src:
        if src.dialect.name == "postgresql":  # one snapshot for every table's rows
            src = src.execution_options(isolation_level="REPEATABLE READ")
        problem = dbschema.problem(dbschema.current_heads(src))
        if problem:
            raise CopyError(f"this database is not ready to copy: {problem}")
        target = Database(target_url)
        try:
            result.migrated = _prepare(target, target_url, upgrade)
            if result.migrated:
                report(f"migrated {result.target}")
            with target.engine.begin() as dst:
                _refuse_unless_empty(dst, tables, result.target)
                for table in reversed(tables):  # the seeded counters, children first
                    dst.execute(table.delete())
                for table in tables:
                    result.counts[table.name] = _copy_table(src, dst, table)
                    report(f"{table.name}: {result.counts[table.name]} rows")
                _check_counts(src, dst, tables)
                if dst.dialect.name == "postgresql":
                    _advance_sequences(dst, tables)
        except CopyError:
            raise
        except Exception as exc:
            cause = getattr(exc, "orig", None) or exc
            raise CopyError(
                f"the copy failed ({type(cause).__name__}); nothing was written to the target"
            ) from None
        finally:
            target.dispose()
    return result


def _prepare(target: Database, url: str, upgrade: Callable[[str], None]) -> bool:
    """Migrate the target when it is behind (an empty one included); True when it was."""
    try:
        with target.engine.connect() as conn:
            current = dbschema.current_heads(conn)
    except Exception as exc:
        cause = getattr(exc, "orig", None) or exc
        raise CopyError(f"cannot reach the target database ({type(cause).__name__})") from None
    problem = dbschema.problem(current)
    if problem is None:
        return False
    if not problem.startswith("migrations pending"):
        raise CopyError(f"the target database cannot take this copy: {problem}")
    upgrade(url)
    return True


def _refuse_unless_empty(dst: Connection, tables: list[Table], name: str) -> None:
    held, counters = [], []
    for table in tables:
        if table.name in SEEDED:
            if "count" in table.c and dst.scalar(
                select(func.count()).select_from(table).where(table.c["count"] != 0)
            ):
                counters.append(f"non-zero {table.name}")
            continue
        rows = dst.scalar(select(func.count()).select_from(table)) or 0
        if rows:
            held.append(f"{rows} rows in {table.name}")
    if held or counters:
        raise CopyError(
            f"{name} is not empty ({', '.join(held + counters)}): "
            "copy only into a new, empty database"
        )


def _copy_table(src: Connection, dst: Connection, table: Table) -> int:
    query = select(table).order_by(*table.primary_key.columns)
    total = 0
    batch: list[dict[str, object]] = []
    for row in src.execution_options(yield_per=BATCH).execute(query):
        batch.append(dict(row._mapping))
        if len(batch) >= BATCH:
            dst.execute(table.insert(), batch)
            total += len(batch)
            batch = []
    if batch:
        dst.execute(table.insert(), batch)
        total += len(batch)
    return total


def _check_counts(src: Connection, dst: Connection, tables: list[Table]) -> None:
    for table in tables:
        want = src.scalar(select(func.count()).select_from(table))
        got = dst.scalar(select(func.count()).select_from(table))
        if want != got:
            raise CopyError(f"{table.name}: {got} rows copied of {want}; nothing was committed")
    for table in tables:
        if table.name in SEEDED:
            order = list(table.primary_key.columns)
            if list(src.execute(select(table).order_by(*order))) != list(
                dst.execute(select(table).order_by(*order))
            ):
                raise CopyError(f"{table.name} differs after the copy; nothing was committed")


def _advance_sequences(dst: Connection, tables: list[Table]) -> None:
    """Explicit ids do not move PostgreSQL's sequences: the next new task must not reuse one."""
    for table in tables:
        for column in table.primary_key.columns:
            sequence = dst.scalar(
                text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": table.name, "column": column.name},
            )
            if sequence is None:
                continue
            top = dst.scalar(select(func.max(column)))
            dst.execute(
                text("SELECT setval(CAST(:seq AS regclass), :value, :called)"),
                {"seq": sequence, "value": top or 1, "called": top is not None},
            )


def next_steps(settings: Settings, target: str) -> list[str]:
    """What the person copying must change so that every process uses the new database."""
    lines = [
        "next:",
        f"  1. set DATABASE_URL={target} (with its password) for the web, the worker and the "
        "release step, and restart them; keep the old database until you have checked",
    ]
    if settings.media_url:
        lines.append(
            f"  2. videos: already in {settings.media_url}; give every machine the same "
            "TRACKER_MEDIA_URL and AWS_* settings"
        )
    elif settings.media_dir:
        lines.append(
            f"  2. videos: they are in {settings.media_dir} on this machine only; for several "
            "machines set TRACKER_MEDIA_URL=s3://bucket/prefix (and AWS_*), then run "
            "`tracker archive --missing` here to move them into the bucket (or copy the "
            "folder to the new machine and point TRACKER_MEDIA_DIR at it)"
        )
    return lines
