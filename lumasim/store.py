"""The simulator's memory across restarts: its tasks (and each account's balance) in a SQLite
file, kept only when it is given one (`Simulator(store=...)`, `--store PATH`).

Why: `make run` is restarted often, and the tracker's database still holds the demo videos
the simulator made; a simulator that forgot them answered "Task not found" to every Extend,
Poll and import of them. Everywhere else (tests, benchmarks) it stays in memory, as before.

What is kept is what GET, extend, upscale and the callbacks need: each task's request (as
echoed), hook, source, output, revision, forced state, and its times as wall-clock seconds
(a task's state follows the clock: `time.monotonic()` means nothing to another process, so
times are converted at each write and read, and a task done before a restart is done after
it, one unfinished goes on). The owner is kept as a SHA-256 tag of the key, never the key:
a restart with the same keys gives every task back to its own account, and a key not given
this time leaves its tasks nobody's (unknown to every caller) until it is given again.
The secret that signs media links is kept too, so links handed out before a restart still
work; the media themselves are the shared samples (media.py): nothing else is written.

Writes are one upsert and a commit per create, rerun, forced state or charge (WAL, no fsync
per commit: cheap), made by callers that hold the lock ordering that write (the simulator's,
or the accounts'); this store's own lock only serialises the one connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lumasim.tasks import SimTask

log = logging.getLogger(__name__)

APPLICATION_ID = 0x4C53494D  # "LSIM": a file of ours, not some other SQLite database
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    n INTEGER PRIMARY KEY,  -- the order of creation (lists show newest first)
    id TEXT NOT NULL UNIQUE,
    dialect TEXT NOT NULL,
    owner TEXT NOT NULL,  -- sha256: of the key that made it
    saved_at REAL NOT NULL,  -- wall clock
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS balances (
    dialect TEXT NOT NULL, owner TEXT NOT NULL, cents INTEGER NOT NULL,
    PRIMARY KEY (dialect, owner)
);
"""


class StoreError(Exception):
    """The store file cannot be used: one line, said at start instead of a traceback."""


def owner_tag(key: str) -> str:
    """What is written for a key: enough to recognise it again, useless to call the API with."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass
class Restored:
    """What a store held for this dialect and these keys."""

    tasks: list[SimTask]  # oldest first; owner: the key, or the tag of a key not given now
    balances: dict[str, int]  # by key, for the keys given now
    media_secret: bytes
    seen_at: float  # monotonic: callbacks due later than this had not been sent yet
    other_dialect: int  # tasks kept for the other flavor, not served by this one


class TaskStore:
    """One SQLite file; `keys` are this run's API keys ("" when it takes none)."""

    def __init__(self, path: Path | str, dialect: str, keys: Iterable[str]) -> None:
        self.path = Path(path)
        self.dialect = dialect
        self._tags = {key: owner_tag(key) for key in keys}
        self._offset = time.time() - time.monotonic()  # wall = monotonic + offset
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(exist_ok=True)  # instance/ itself, not a missing tree above
            if not self.path.exists():
                self.path.touch(mode=0o600)  # it holds callback URLs with their tokens
            self._conn = sqlite3.connect(self.path, check_same_thread=False)
            self._prepare(self._conn)
        except (OSError, sqlite3.Error) as exc:
            self._drop()
            raise self._error(exc) from None

    def _error(self, exc: BaseException | str) -> StoreError:
        reason = exc if isinstance(exc, str) else (getattr(exc, "strerror", None) or exc)
        return StoreError(
            f"cannot use {self.path} as the simulator's store: {reason} "
            "(delete it, or run `make clean-demo`, to start over)"
        )

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check the file is ours (or empty) and of a schema we read, then create the tables."""
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id != APPLICATION_ID and (app_id or tables):
            raise sqlite3.DatabaseError("it is another SQLite database, not a simulator store")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"it was written by a newer simulator (v{version})")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        with conn:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- reading, once at start ---------------------------------------------------------------

    def load(self) -> Restored:
        """Everything kept for this dialect; a row that cannot be read is a StoreError."""
        keys = {tag: key for key, tag in self._tags.items()}
        try:
            with self._lock:
                conn = self._connection()
                rows = conn.execute(
                    "SELECT id, owner, saved_at, data FROM tasks WHERE dialect = ? ORDER BY n",
                    (self.dialect,),
                ).fetchall()
                others = conn.execute(
                    "SELECT count(*) FROM tasks WHERE dialect != ?", (self.dialect,)
                ).fetchone()[0]
                cents = conn.execute(
                    "SELECT owner, cents FROM balances WHERE dialect = ?", (self.dialect,)
                ).fetchall()
                meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
                secret = meta.get("media_secret")
                if secret is None:
                    secret = secrets.token_hex(32)
                    with conn:
                        conn.execute("INSERT INTO meta VALUES ('media_secret', ?)", (secret,))
            tasks = [self._task(i, keys.get(o, o), json.loads(d)) for i, o, _, d in rows]
            seen = max([float(meta.get("closed_at", 0)), *(float(r[2]) for r in rows)])
            return Restored(
                tasks=tasks,
                balances={keys[tag]: int(value) for tag, value in cents if tag in keys},
                media_secret=bytes.fromhex(secret),
                seen_at=seen - self._offset,
                other_dialect=int(others),
            )
        except (sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            self._drop()
            raise self._error(
                f"what it holds cannot be read ({type(exc).__name__}: {exc})"
            ) from None

    def _task(self, task_id: str, owner: str, data: dict[str, Any]) -> SimTask:
        mono = self._offset
        forced_at = data["forced_at"]
        return SimTask(
            id=task_id,
            request_body=data["request_body"],
            notify_hook=data["notify_hook"],
            created_at=datetime.fromisoformat(data["created_at"]),
            created_mono=float(data["created"]) - mono,
            processing_at=float(data["processing_at"]) - mono,
            done_at=float(data["done_at"]) - mono,
            fails=bool(data["fails"]),
            source_id=data["source_id"],
            owner=owner,
            output=data["output"],
            revision=int(data["revision"]),
            model=data["model"],
            forced_state=data["forced_state"],
            forced_reason=data["forced_reason"],
            forced_at=0.0 if forced_at is None else float(forced_at) - mono,
        )

    # -- writing, as tasks change -------------------------------------------------------------

    def save(self, task: SimTask) -> None:
        """Write the task as it is now; the caller holds the simulator's lock (its order)."""
        wall = self._offset
        data = {
            "request_body": task.request_body,
            "notify_hook": task.notify_hook,
            "created_at": task.created_at.isoformat(),
            "created": task.created_mono + wall,
            "processing_at": task.processing_at + wall,
            "done_at": task.done_at + wall,
            "fails": task.fails,
            "source_id": task.source_id,
            "output": task.output,
            "revision": task.revision,
            "model": task.model,
            "forced_state": task.forced_state,
            "forced_reason": task.forced_reason,
            "forced_at": task.forced_at + wall if task.forced_state is not None else None,
        }
        owner = self._tags.get(task.owner, task.owner)  # not a key given now: already a tag
        self._write(
            "INSERT INTO tasks (id, dialect, owner, saved_at, data) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET saved_at = excluded.saved_at, data = excluded.data",
            (task.id, self.dialect, owner, time.time(), json.dumps(data)),
            f"task {task.id}",
        )

    def save_balance(self, key: str, cents: int) -> None:
        """Write a key's balance; the caller holds the accounts' lock (its order)."""
        self._write(
            "INSERT INTO balances VALUES (?, ?, ?) "
            "ON CONFLICT (dialect, owner) DO UPDATE SET cents = excluded.cents",
            (self.dialect, self._tags.get(key, owner_tag(key)), cents),
            "a balance",
        )

    def _write(self, sql: str, params: tuple[Any, ...], what: str) -> None:
        """One statement, committed. A failed write is logged and the simulator goes on:
        its answers stay right for this run, only the next run will not have this change."""
        with self._lock:
            if self._conn is None:  # stopped: nothing more is kept
                return
            try:
                with self._conn:
                    self._conn.execute(sql, params)
            except sqlite3.Error as exc:
                log.error("could not keep %s in %s: %s", what, self.path, exc)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the store is closed")
        return self._conn

    def _drop(self) -> None:
        """Close as found, writing nothing: the file is not ours, or not one we can read."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Note when it stopped (callbacks due after it are sent on the next start) and close."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            with contextlib.suppress(sqlite3.Error), conn:
                stopped = str(time.time())
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('closed_at', ?)", (stopped,))
            conn.close()
