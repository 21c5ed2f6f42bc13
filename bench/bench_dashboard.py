"""Dashboard pages at a million tasks: server time on SQLite and on PostgreSQL.

For each database, at 1,000 and at 1,000,000 tasks:

1. a fresh database, migrated (so the search structures of migration 0002 exist);
2. the tasks written in bulk: the table's secondary indexes and triggers are set aside,
   the rows go in (SQLite: executemany in one transaction; PostgreSQL: COPY), the
   indexes and triggers come back (SQLite rebuilds its FTS5 index), and `state_counts`
   is set to what was written, as store.set_state would have kept it. PostgreSQL
   gets ANALYZE, as autovacuum would do; SQLite gets no ANALYZE, as the service never runs it;
3. each page asked for through Flask's test client (the whole request: routing, the
   queries, the template): WARMUP untimed runs, then RUNS timed ones; median and p95.

Run: `python -m bench dashboard`, or `make bench`. Quicker: `-- --rows 200000 --runs 15`.
PostgreSQL: TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/test; the
benchmark works in a database of its own beside it (tracker_bench_dashboard), dropped after.
Results are printed and written to docs/benchmarks.md under "## Dashboard".
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench import machine
from bench.report import replace_section

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## Dashboard"
BENCH_DB = "tracker_bench_dashboard"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
SMALL, LARGE = 1_000, 1_000_000
RUNS, WARMUP = 30, 5
SSD_PAGE = "search: same, random_page_cost = 1.1"
PLANT_BELOW = 100_000  # databases smaller than this get the searched words planted
PAGE_GOAL_MS, SEARCH_GOAL_MS, RATIO_GOAL = 25.0, 100.0, 1.5

# state mix of a service that has run for a while
STATE_MIX = {
    "completed": 0.72,
    "failed": 0.07,
    "rejected": 0.02,
    "timed_out": 0.01,
    "processing": 0.04,
    "pending": 0.04,
    "submitting": 0.005,
    "queued": 0.095,
}
SCENE_TEXT = (
    "cinematic slow camera light sunset ocean city rain night forest mountain river street "
    "drone shot close wide golden hour fog snow desert neon lighthouse harbour storm waves "
    "portrait macro aerial tracking dolly push pull pan tilt handheld vintage film grain "
    "warm cold blue red green purple orange silver reflection shadow silhouette crowd market "
    "train station bridge tower castle garden flower tree leaves autumn spring summer winter "
    "sky clouds stars moon sun dawn dusk morning evening fire smoke water glass mirror window "
    "door road car bicycle boat ship plane bird horse dog cat fox wolf bear deer whale fish "
    "child woman man dancer runner musician painter chef farmer sailor pilot astronaut robot"
)
SCENE = SCENE_TEXT.split()
SYLLABLES_TEXT = "ka lo mi ne ru sa to vi ze po la mo ki nu re si ta vo zu pe"
SYLLABLES = SYLLABLES_TEXT.split()


def vocabulary() -> list[str]:
    """The scene words first (the frequent ones), then made-up words for a long tail."""
    words = list(dict.fromkeys(SCENE))
    rng = random.Random(7)
    seen = set(words)
    while len(words) < 6000:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


WORDS = vocabulary()
# searches: a word in most prompts, one in about 2 %, a rare one, two words, half-typed words
SEARCHES = {
    "search: common word": WORDS[0],
    "search: word in ~2 % of prompts": WORDS[60],
    "search: rare word": WORDS[4000],
    "search: two words": f"{WORDS[3]} {WORDS[25]}",
    "search: half-typed common word (5 letters)": WORDS[0][:5],
    "search: half-typed word (8 letters)": "lighthou",
}
# the small database gets the searched words in ~60 prompts each, and the ~2 % word in every
# failed task, so that its result pages are as full as the large one's: a fair comparison
PLANTS = [WORDS[0], WORDS[60], WORDS[4000], f"{WORDS[3]} {WORDS[25]}", "lighthouse"]


@dataclass
class Filled:
    rows: int
    seconds: float
    counts: Counter[str]
    word_hits: dict[str, int]
    upstream_prefix: str
    deep_cursor: int
    deep_failed_cursor: int
    size_mb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def generate(count: int, seed: int = 1, plant: bool = False) -> Iterator[tuple[Any, ...]]:
    """Rows for the tasks table, oldest first, ids 1..count."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** 1.07 for rank in range(len(WORDS))]
    cumulative = list(_accumulate(weights))
    states = list(STATE_MIX)
    state_cum = list(_accumulate(STATE_MIX.values()))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    upstream_ids: list[str] = []
    for task_id in range(1, count + 1):
        state = rng.choices(states, cum_weights=state_cum)[0]
        words = rng.choices(WORDS, cum_weights=cumulative, k=rng.randint(6, 16))
        if plant and task_id % 16 < len(PLANTS):
            words.append(PLANTS[task_id % 16])
        if plant and state == "failed":
            words.append(WORDS[60])
        prompt = " ".join(words).capitalize()
        extend = upstream_ids and rng.random() < 0.6
        source = rng.choice(upstream_ids[-5000:]) if extend else None
        sent = state not in ("queued", "rejected", "submitting")
        upstream = str(uuid.UUID(int=rng.getrandbits(128), version=4)) if sent else None
        if upstream and state == "completed":
            upstream_ids.append(upstream)
        created = start + timedelta(seconds=task_id * 20)
        done = state in ("completed", "failed")
        yield (
            task_id,
            upstream,
            source,
            "extend" if source else "generate",
            state,
            state if sent else None,
            prompt,
            "{}",
            f"https://cdn.example/{upstream}.mp4" if state == "completed" else None,
            f"https://cdn.example/{upstream}.jpg" if state == "completed" else None,
            "Frame moderation failed" if state == "failed" else None,
            1,
            created,
            created + timedelta(seconds=90),
            created + timedelta(seconds=1) if sent else None,
            created + timedelta(seconds=90) if done else None,
            0,
            0,
        )


COLUMNS = (
    "id, upstream_id, source_task_id, kind, state, upstream_state, user_prompt, options, "
    "video_url, thumbnail_url, failure_reason, attempts, created_at, updated_at, "
    "submitted_at, completed_at, quiet_polls, archive_attempts"
)
TIME_COLUMNS = (12, 13, 14, 15)


def _accumulate(values: Any) -> Iterator[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


def _tally(row: tuple[Any, ...], counts: Counter[str], hits: Counter[str]) -> None:
    counts[row[4]] += 1
    words = set(row[6].lower().split())
    for name, query in SEARCHES.items():
        terms = query.split()
        if all(t in words for t in terms[:-1]) and (
            terms[-1] in words
            or ("half-typed" in name and any(w.startswith(terms[-1]) for w in words))
        ):
            hits[name] += 1


# -- filling --------------------------------------------------------------------------------


def fill_sqlite(path: Path, count: int) -> Filled:
    from tracker.dbschema import upgrade

    url = f"sqlite:///{path}"
    upgrade(url)
    started = time.monotonic()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-400000")
    saved = con.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'tasks' "
        "AND type IN ('index', 'trigger') AND sql IS NOT NULL"
    ).fetchall()
    con.execute("BEGIN")
    for kind, name, _ in saved:
        con.execute(f'DROP {kind.upper()} "{name}"')
    counts: Counter[str] = Counter()
    hits: Counter[str] = Counter()
    placeholders = ", ".join("?" * len(COLUMNS.split(",")))
    insert = f"INSERT INTO tasks ({COLUMNS}) VALUES ({placeholders})"  # noqa: S608
    batch: list[tuple[Any, ...]] = []
    prefix = ""
    failed: list[int] = []
    for row in generate(count, plant=count < PLANT_BELOW):
        _tally(row, counts, hits)
        if row[4] == "failed":
            failed.append(row[0])
        if row[0] == count // 2 + 1 and row[1]:
            prefix = row[1][:8]
        batch.append(_sqlite_row(row))
        if len(batch) == 20_000:
            con.executemany(insert, batch)
            batch.clear()
    if batch:
        con.executemany(insert, batch)
    for _kind, _, sql in sorted(saved, key=lambda item: item[0] != "index"):
        con.execute(sql)
    con.execute("INSERT INTO tasks_fts(tasks_fts) VALUES ('rebuild')")
    _set_counts(con.execute, counts, "?")
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    seconds = time.monotonic() - started
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
    return Filled(
        count, seconds, counts, dict(hits), prefix or "0000", count // 10, _deep(failed), size
    )


def _deep(ids: list[int]) -> int:
    """A cursor a tenth of the way from the oldest, with at least a page older than it."""
    return ids[min(len(ids) - 1, max(len(ids) // 10, 60))] if ids else 1


def _sqlite_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Times as SQLAlchemy stores them in SQLite: naive UTC text."""
    values = list(row)
    for index in TIME_COLUMNS:
        if values[index] is not None:
            values[index] = values[index].replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return tuple(values)


def _set_counts(execute: Any, counts: Counter[str], mark: str) -> None:
    execute("UPDATE state_counts SET count = 0")
    for state, number in counts.items():
        execute(
            f"UPDATE state_counts SET count = {mark} WHERE state = {mark}",  # noqa: S608
            (number, state),
        )


def fill_postgres(url: str, count: int) -> Filled:
    import psycopg

    from tracker.dbschema import upgrade

    upgrade(url)
    started = time.monotonic()
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    counts: Counter[str] = Counter()
    hits: Counter[str] = Counter()
    prefix = ""
    failed: list[int] = []
    with psycopg.connect(plain) as con:
        con.execute("SET maintenance_work_mem = '1GB'")
        saved = con.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tasks' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        ).fetchall()
        for name, _ in saved:
            con.execute(f'DROP INDEX "{name}"')
        with con.cursor() as cur, cur.copy(f"COPY tasks ({COLUMNS}) FROM STDIN") as copy:
            for row in generate(count, plant=count < PLANT_BELOW):
                _tally(row, counts, hits)
                if row[4] == "failed":
                    failed.append(row[0])
                if row[0] == count // 2 + 1 and row[1]:
                    prefix = row[1][:8]
                copy.write_row(row)
        for _, definition in saved:
            con.execute(definition)
        con.execute("SELECT setval(pg_get_serial_sequence('tasks', 'id'), %s)", (count,))
        _set_counts(con.execute, counts, "%s")
        con.commit()
        con.autocommit = True
        con.execute("VACUUM ANALYZE tasks")
        size = con.execute("SELECT pg_database_size(current_database())").fetchone()
    seconds = time.monotonic() - started
    mb = (size[0] if size else 0) / 2**20
    return Filled(
        count, seconds, counts, dict(hits), prefix or "0000", count // 10, _deep(failed), mb
    )


# -- measuring ------------------------------------------------------------------------------


def pages(filled: Filled) -> dict[str, str]:
    cursor = filled.deep_cursor
    found = {
        "first page, with the tab counts": "/",
        "filtered page (state=failed)": "/?state=failed",
        "deep page (cursor at a tenth of the ids)": f"/?cursor={cursor}",
        "deep filtered page (state=failed)": f"/?state=failed&cursor={filled.deep_failed_cursor}",
    }
    for name, query in SEARCHES.items():
        found[name] = "/?q=" + query.replace(" ", "+")
    found["search: upstream id prefix (8 chars)"] = f"/?q={filled.upstream_prefix}"
    found["search: word, filtered (state=failed)"] = f"/?q={WORDS[60]}&state=failed"
    return found


def measure(
    url: str, filled: Filled, runs: int, only: dict[str, str] | None = None
) -> dict[str, dict[str, float]]:
    from tracker.db import Database
    from tracker.settings import Settings
    from tracker.web.app import create_app

    settings = Settings(database_url=url, luma_api_base="http://127.0.0.1:9", media_dir="")
    database = Database(url)
    app = create_app(settings, db=database)
    client = app.test_client()
    results: dict[str, dict[str, float]] = {}
    for name, path in (only or pages(filled)).items():
        times = []
        rows = 0
        for attempt in range(WARMUP + runs):
            started = time.perf_counter()
            response = client.get(path)
            body = response.get_data()
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status_code == 200, (path, response.status_code)
            if attempt >= WARMUP:
                times.append(elapsed)
            rows = body.count(b"<tr data-task-id=")
        results[name] = {
            "median": statistics.median(times),
            "p95": statistics.quantiles(times, n=20, method="inclusive")[18],
            "rows": rows,
        }
    database.dispose()
    return results


# -- the run --------------------------------------------------------------------------------


@contextmanager
def postgres_database(base: str) -> Iterator[str]:
    url = make_url(base.replace("postgres://", "postgresql://", 1)).set(
        drivername="postgresql+psycopg"
    )
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {BENCH_DB}"))
    try:
        yield url.set(database=BENCH_DB).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
        admin.dispose()


def run_backend(name: str, sizes: list[int], runs: int, workdir: Path) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for size in sizes:
        if name == "SQLite":
            path = workdir / f"dashboard-{size}.db"
            filled = fill_sqlite(path, size)
            url = f"sqlite:///{path}"
            results = measure(url, filled, runs)
            for leftover in path.parent.glob(path.name + "*"):
                leftover.unlink()
        else:
            base = os.environ.get("TEST_DATABASE_URL", "").strip() or DEFAULT_PG
            with postgres_database(base) as url:
                filled = fill_postgres(url, size)
                results = measure(url, filled, runs)
                # the planner's default random_page_cost (4) is for spinning disks; with the
                # usual SSD setting it walks (state, id) for a word within a state
                tuned = f"{url}?options=-c%20random_page_cost%3D1.1"
                page = f"/?q={WORDS[60]}&state=failed"
                results |= measure(tuned, filled, runs, {SSD_PAGE: page})
                filled.extra["version"] = _pg_version(url)
        print(
            f"{name} {size:,} tasks: filled in {filled.seconds:.0f} s, {filled.size_mb:.0f} MB",
            flush=True,
        )
        for page, figures in results.items():
            print(
                f"  {page:<45} median {figures['median']:7.2f} ms"
                f"  p95 {figures['p95']:7.2f} ms  rows {figures['rows']:.0f}",
                flush=True,
            )
        out[size] = {"filled": filled, "results": results}
    return out


def _pg_version(url: str) -> str:
    engine = create_engine(url)
    with engine.connect() as conn:
        version = str(conn.execute(text("SHOW server_version")).scalar_one())
    engine.dispose()
    return version


def report(started: datetime, runs: int, small: int, large: int, data: dict[str, Any]) -> str:
    lines = [
        HEADING,
        "",
        f"Server time of the dashboard's list page (Flask test client: routing, queries and the "
        f"rendered template; median of {runs} runs after {WARMUP} warm-up runs, p95 in "
        f"brackets), with {small:,} and with {large:,} tasks in the database. Goals: pages "
        f"under {PAGE_GOAL_MS:.0f} ms, searches under {SEARCH_GOAL_MS:.0f} ms, and each page at "
        f"{large:,} within {RATIO_GOAL}x of the same page at {small:,}.",
        "",
        f"Measured {started:%Y-%m-%d} by `python -m bench dashboard` ({machine()}).",
        "",
    ]
    for backend, sizes in data.items():
        big, little = sizes[large], sizes[small]
        version = big["filled"].extra.get("version")
        title = f"{backend} {version}" if version else backend
        lines += [
            f"### {title}",
            "",
            f"{large:,} tasks written in {big['filled'].seconds:.0f} s "
            f"({big['filled'].size_mb:,.0f} MB on disk with indexes and the search index).",
            "",
            f"| page | {small:,} tasks | {large:,} tasks | ratio | rows shown | "
            f"matches at {large:,} |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for page, figures in big["results"].items():
            base = little["results"][page]
            ratio = figures["median"] / base["median"] if base["median"] else float("nan")
            goal = SEARCH_GOAL_MS if page.startswith("search") else PAGE_GOAL_MS
            flag = "" if figures["median"] < goal and ratio <= RATIO_GOAL else " (!)"
            matches = big["filled"].word_hits.get(page)
            shown = f"{matches:,}" if matches is not None else ""
            lines.append(
                f"| {page} | {base['median']:.1f} ({base['p95']:.1f}) ms | "
                f"{figures['median']:.1f} ({figures['p95']:.1f}) ms | {ratio:.2f}x{flag} | "
                f"{base['rows']:.0f} / {figures['rows']:.0f} | {shown} |"
            )
        lines.append("")
    lines += [
        "How: pages are keyset (`id < cursor ORDER BY id DESC LIMIT 51`) on the primary key or on "
        "(state, id); the tab counts read the 8 rows of `state_counts` the task store keeps; a "
        "search runs one indexed query per kind of match (local id, upstream and source id "
        "prefix, prompt words) each limited to a page, and merges them. Prompt words: SQLite "
        "FTS5 with external content and 2- to 5-character prefix indexes, read newest first "
        "(`ORDER BY rowid DESC`); PostgreSQL a GIN index on a stored generated column "
        "`to_tsvector('simple', user_prompt)`, so that testing a row costs no parsing. "
        "Tasks: a state mix of a service that has run for a while (72 % "
        "completed), prompts of 6 to 16 words drawn from a 6,000-word vocabulary with a "
        "Zipf-like spread; in the small database each searched word is planted in about 60 "
        "prompts (and the ~2 % word in every failed task), so that its result pages are as full "
        "as the large one's. Figures vary a few percent from run to run.",
        "",
        "A word within a state on PostgreSQL: with the default `random_page_cost` (4, a setting "
        "for spinning disks) the planner walks the primary key newest first and tests both "
        "conditions on each row (some 35,000 rows here for a word in 2 % of prompts and a "
        "state of 7 % of tasks): still far under the search goal, but it grows with the table. "
        "With `random_page_cost = 1.1`, the usual value on SSDs (`ALTER DATABASE ... SET "
        "random_page_cost = 1.1`), it walks the (state, id) index instead (some 2,300 rows; "
        "the last row of the table). The service does not change planner settings itself.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench dashboard")
    parser.add_argument("--rows", type=int, default=LARGE, help="the large database's size")
    parser.add_argument("--small", type=int, default=SMALL, help="the small database's size")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--only", choices=("sqlite", "postgresql"), default=None)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--workdir", default=None, help="where the SQLite files go (default /tmp)")
    args = parser.parse_args(argv or [])
    started = datetime.now(UTC)
    data: dict[str, Any] = {}
    sizes = [args.small, args.rows]
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-", dir=args.workdir) as tmp:
        if args.only in (None, "sqlite"):
            data["SQLite"] = run_backend("SQLite", sizes, args.runs, Path(tmp))
        if args.only in (None, "postgresql"):
            data["PostgreSQL"] = run_backend("PostgreSQL", sizes, args.runs, Path(tmp))
    body = report(started, args.runs, args.small, args.rows, data)
    print(body)
    if not args.no_write:
        replace_section(HEADING, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
