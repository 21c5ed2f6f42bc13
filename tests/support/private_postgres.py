"""A private PostgreSQL for a test or a benchmark: its own cluster in a temporary folder.

Debian's server binaries (`initdb`, `pg_ctl`, `postgres` from the `postgresql` package, in
/usr/lib/postgresql/<version>/bin; the newest version present is used) make a throwaway cluster
listening on 127.0.0.1 on a free port, with trust authentication and settings that trade
durability for speed (fsync off: a crash loses the cluster, which is thrown away anyway). The
machine's own server (`pg_lsclusters`, systemd) is never touched, so a test may stop and restart
this one as it likes while other tests run.

As root, the cluster belongs to the `postgres` user (initdb refuses to run as root): the commands
run through `runuser -u postgres --` and the temporary folder is handed to that user.

    with PrivatePostgres() as server:      # plain Python: raises PostgresNotInstalled
        upgrade(server.sqlalchemy_url)
        server.restart()

    with private_postgres_or_skip() as server:   # in a test or fixture: skips when not installed
        ...

    def test_x(private_postgres):          # the fixture below (import it, or `pytest_plugins`)
        ...

Stopped and its folder removed on leaving the block, whatever happened inside it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import pytest

POSTGRES_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
_COMMAND_TIMEOUT = 120.0

# Speed over durability: the cluster is thrown away after the run.
FAST_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "1GB",  # no checkpoint forced by WAL volume in a test
    "shared_buffers": "32MB",
    "max_connections": "100",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


class PostgresNotInstalled(RuntimeError):
    """The PostgreSQL server binaries are not on this machine (or cannot run as a user)."""


def server_binaries(root: Path | None = None) -> Path:
    """The bin folder of the newest PostgreSQL version under `root` (POSTGRES_ROOT) holding
    initdb and pg_ctl."""
    root = POSTGRES_ROOT if root is None else root
    versions = []
    if root.is_dir():
        for entry in root.iterdir():
            bin_dir = entry / "bin"
            if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
                versions.append((_version_key(entry.name), bin_dir))
    if not versions:
        raise PostgresNotInstalled(
            f"no PostgreSQL server binaries (initdb, pg_ctl) in {root}/<version>/bin: "
            "install Debian's `postgresql` package"
        )
    return max(versions)[1]


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in name.split("."))


def _postgres_user() -> tuple[int, int]:
    """The uid and gid of `postgres`, which runs the server when this process is root."""
    import pwd

    if shutil.which("runuser") is None:
        raise PostgresNotInstalled("running as root and no `runuser` to become postgres")
    try:
        user = pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PostgresNotInstalled(
            "running as root and no `postgres` user to own the cluster"
        ) from None
    return user.pw_uid, user.pw_gid


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """A throwaway PostgreSQL cluster; `start()`/`close()`, or use it as a context manager.

    `url` is libpq's spelling (psql, DATABASE_URL), `sqlalchemy_url` SQLAlchemy's (psycopg 3).
    """

    def __init__(
        self, *, settings: Mapping[str, str] | None = None, bin_dir: Path | None = None
    ) -> None:
        self.bin_dir = bin_dir if bin_dir is not None else server_binaries()
        self.settings = {**FAST_SETTINGS, **(settings or {})}
        self._as_postgres = os.geteuid() == 0  # initdb refuses root: run as `postgres` then
        self._owner = _postgres_user() if self._as_postgres else None
        self.folder: Path | None = None
        self.port = 0
        self._running = False

    # -- where it is ----------------------------------------------------------------------

    @property
    def data(self) -> Path:
        assert self.folder is not None, "the server was never started"
        return self.folder / "data"

    @property
    def log(self) -> Path:
        assert self.folder is not None, "the server was never started"
        return self.folder / "server.log"

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url("postgres", sqlalchemy=True)

    def database_url(self, name: str, *, sqlalchemy: bool = False) -> str:
        scheme = "postgresql+psycopg" if sqlalchemy else "postgresql"
        return f"{scheme}://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    @property
    def running(self) -> bool:
        return self._running

    # -- life -------------------------------------------------------------------------------

    def start(self) -> PrivatePostgres:
        """initdb in a new temporary folder, then start the server (the first time); start the
        stopped server again on its port (afterwards)."""
        if self.folder is None:
            self._create()
            for _attempt in range(4):  # the free port may be taken before the server binds it
                self._configure(free_port())
                try:
                    self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log))
                    break
                except RuntimeError:
                    if "already in use" not in self.log_tail():
                        raise
                    self.log.unlink(missing_ok=True)
            else:
                raise RuntimeError("the private PostgreSQL found no free port")
            self._running = True
        elif not self._running:
            self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log))
            self._running = True
        return self

    def stop(self) -> None:
        """A fast shutdown (open sessions are ended): `start()` brings it back on the same port."""
        if self._running:
            self._pg_ctl("stop", "-w", "-t", "60", "-m", "fast")
            self._running = False

    def restart(self) -> None:
        """Stop (fast: open sessions are ended) and start again on the same port."""
        self._pg_ctl("restart", "-w", "-t", "60", "-m", "fast", "-l", str(self.log))
        self._running = True

    def close(self) -> None:
        """Stop the server if it runs and remove its folder; safe to call more than once."""
        try:
            if self.folder is not None and (self.data / "postmaster.pid").exists():
                try:
                    self._pg_ctl("stop", "-w", "-t", "30", "-m", "fast")
                except (RuntimeError, subprocess.SubprocessError, OSError):
                    self._pg_ctl("stop", "-w", "-t", "30", "-m", "immediate", check=False)
        finally:
            self._running = False
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder = None

    def __enter__(self) -> PrivatePostgres:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def create_database(self, name: str, *, sqlalchemy: bool = False) -> str:
        """A new empty database on this server; returns its URL."""
        self._run([str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                   "-U", SUPERUSER, name])  # fmt: skip
        return self.database_url(name, sqlalchemy=sqlalchemy)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- the work -----------------------------------------------------------------------------

    def _create(self) -> None:
        # /tmp, not the caller's TMPDIR or pytest's tmp_path: those may be closed to `postgres`;
        # a short path also keeps the unix socket under its 107-byte limit
        base = "/tmp" if self._as_postgres and Path("/tmp").is_dir() else None
        self.folder = Path(tempfile.mkdtemp(prefix="tracker-pg-", dir=base))
        try:
            if self._owner is not None:
                os.chown(self.folder, *self._owner)
            self._run([
                str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
            ])  # fmt: skip
        except BaseException:
            self.close()
            raise

    def _configure(self, port: int) -> None:
        assert self.folder is not None
        self.port = port
        sockets = str(self.folder) if len(str(self.folder)) < 90 else ""  # socket path limit
        lines = {
            **self.settings,
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": sockets,
        }
        # postgresql.auto.conf is read last, and a restart keeps it (no options to repeat)
        conf = self.data / "postgresql.auto.conf"
        conf.write_text("".join(f"{key} = '{value}'\n" for key, value in lines.items()))
        owner = self.folder.stat()
        os.chown(conf, owner.st_uid, owner.st_gid)  # the server's user's, as initdb left it

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args], check=check)

    def _run(self, command: list[str], *, check: bool = True) -> None:
        if self._as_postgres:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        # the server's own output goes to its log (-l); stdin closed so it never holds a pipe
        done = subprocess.run(
            command,
            cwd=self.folder,  # `postgres` may not be allowed into the caller's folder
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=_COMMAND_TIMEOUT,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}"
                + (f"\nserver log:\n{self.log_tail()}" if self.folder else "")
            )


@contextmanager
def private_postgres_or_skip(
    *, settings: Mapping[str, str] | None = None
) -> Iterator[PrivatePostgres]:
    """A started `PrivatePostgres`, for a test: skipped, saying why, without the binaries."""
    try:
        server = PrivatePostgres(settings=settings)
    except PostgresNotInstalled as missing:
        pytest.skip(f"needs a private PostgreSQL: {missing}")
    with server:
        yield server


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private PostgreSQL for one test (register with `pytest_plugins` or import)."""
    with private_postgres_or_skip() as server:
        yield server
