"""Slow clients and a locked database (issue 9 items 3 and 4): `python -m bench slow`.

(a) Slow clients: 160 connections to the Procfile's web line, half sending their headers a
    byte a second (slowloris), half sending a callback body to /callbacks/luma/<random> a byte
    a second after complete headers. Meanwhile /healthz and real callbacks are timed.
(b) Locked database: a SQLite connection holds the write lock (BEGIN EXCLUSIVE) for 40 s;
    meanwhile bursts of 32 concurrent real callbacks and /healthz are timed.

`-- --worker-class gthread` also runs both against `-k gthread` (the server before issue 9).
Results are printed and written to docs/benchmarks.md under "## Slow clients and a locked
database".
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sqlite3
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench import machine
from bench.report import add_run
from bench.serve import Web, fill_tasks

HEADING = "## Slow clients and a locked database"
PORT = 9652
SLOW, SLOW_SECONDS, LOCK_SECONDS, BURST = 160, 20, 40, 32
PROBE_TIMEOUT = 10.0


class SlowClients:
    """`count` connections that trickle one byte a second until close()."""

    def __init__(self, port: int, count: int) -> None:
        self.socks: list[socket.socket] = []
        self.stopping = threading.Event()
        for n in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if n % 2:  # a slow body to a callback route, after complete headers
                sock.sendall(
                    f"POST /callbacks/luma/slow{n} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode()
                )
            else:  # slow headers
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            self.socks.append(sock)
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        while not self.stopping.wait(1.0):
            for n, sock in enumerate(self.socks):
                with contextlib.suppress(OSError):
                    sock.sendall(b" " if n % 2 else b"X-Slow: 1\r\n"[:1])

    def open(self) -> int:
        """How many are still open (a server may close them)."""
        alive = 0
        for sock in self.socks:
            try:
                sock.setblocking(False)
                alive += sock.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
            finally:
                sock.setblocking(True)
        return alive

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        for sock in self.socks:
            sock.close()


def timed(method: str, url: str, **kwargs: Any) -> tuple[float, int]:
    """Seconds and status; a timeout or a refused connection counts as status 0."""
    started = time.monotonic()
    try:
        status = requests.request(method, url, timeout=PROBE_TIMEOUT, **kwargs).status_code
    except requests.RequestException:
        status = 0
    return time.monotonic() - started, status


def slow_clients(web: Web, tokens: list[tuple[str, str]]) -> dict[str, Any]:
    clients = SlowClients(PORT, SLOW)
    health: list[tuple[float, int]] = []
    hooks: list[tuple[float, int]] = []
    try:
        time.sleep(2)
        deadline = time.monotonic() + SLOW_SECONDS
        n = 0
        while time.monotonic() < deadline:
            health.append(timed("GET", f"{web.url}/healthz"))
            token, upstream_id = tokens[n % len(tokens)]
            body = {"id": upstream_id, "state": "processing", "progress": n}
            hooks.append(timed("POST", f"{web.url}/callbacks/luma/{token}", json=body))
            n += 1
            time.sleep(0.5)
        still_open = clients.open()
    finally:
        clients.close()
    return {"healthz": health, "callbacks": hooks, "open": still_open}


def locked(web: Web, database: Path, tokens: list[tuple[str, str]]) -> dict[str, Any]:
    lock = sqlite3.connect(database, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    health: list[tuple[float, int]] = []
    hooks: list[tuple[float, int]] = []
    stop = time.monotonic() + LOCK_SECONDS

    def probe_health() -> None:
        while time.monotonic() < stop:
            health.append(timed("GET", f"{web.url}/healthz"))
            time.sleep(0.5)

    prober = threading.Thread(target=probe_health)
    prober.start()
    try:
        with ThreadPoolExecutor(BURST) as pool:
            n = 0
            while time.monotonic() < stop - PROBE_TIMEOUT:

                def call(i: int) -> tuple[float, int]:
                    token, upstream_id = tokens[i % len(tokens)]
                    body = {"id": upstream_id, "state": "processing", "progress": i}
                    return timed("POST", f"{web.url}/callbacks/luma/{token}", json=body)

                hooks += pool.map(call, range(n, n + BURST))
                n += BURST
                time.sleep(1)
    finally:
        prober.join()
        lock.rollback()
        lock.close()
    after = timed("POST", f"{web.url}/callbacks/luma/{tokens[0][0]}", json={"state": "processing"})
    return {"healthz": health, "callbacks": hooks, "after": after}


def summary(samples: list[tuple[float, int]]) -> str:
    seconds = [s for s, _ in samples]
    statuses: dict[int, int] = {}
    for _, status in samples:
        statuses[status] = statuses.get(status, 0) + 1
    answers = ", ".join(f"{n} x {s or 'timeout'}" for s, n in sorted(statuses.items()))
    return (
        f"{statistics.median(seconds) * 1000:,.0f} ms / {max(seconds) * 1000:,.0f} ms | {answers}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench slow")
    parser.add_argument("--worker-class", help="also run against gunicorn -k this")
    args = parser.parse_args(argv)
    variants = {"Procfile web line": []} | (
        {f"-k {args.worker_class}": ["-k", args.worker_class]} if args.worker_class else {}
    )
    started = datetime.now(UTC)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
        database = Path(tmp) / "slow.db"
        tokens = fill_tasks(f"sqlite:///{database}", 100)
        for name, extra in variants.items():
            web = Web("wsgi:app", f"sqlite:///{database}", PORT, extra)
            try:
                results[name] = {
                    "slow": slow_clients(web, tokens),
                    "locked": locked(web, database, tokens),
                }
            finally:
                web.stop()
            print(name, results[name], flush=True)
    body = report(started, results)
    print(body)
    add_run(HEADING, body)
    return 0


def report(started: datetime, results: dict[str, dict[str, Any]]) -> str:
    lines = [
        HEADING,
        "",
        f"### {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"`python -m bench slow` (issue 9 items 3 and 4), run {started:%Y-%m-%d %H:%M} UTC on "
        f"{machine()}; SQLite. Probes give up after {PROBE_TIMEOUT:.0f} s (shown as "
        "timeout). Figures are median / worst, then the answers counted.",
        "",
        f"Slow clients: {SLOW} connections, half sending headers a byte a second, half a "
        "callback body to /callbacks/luma/<random> a byte a second; /healthz and a real "
        f"callback every 0.5 s for {SLOW_SECONDS} s. Goal: both answer within 1 s.",
        "",
        "| server | /healthz, median / worst | answers | real callbacks, median / worst | answers "
        "| slow connections still open at the end |",
        "|---|---:|---|---:|---|---:|",
    ]
    for name, r in results.items():
        s = r["slow"]
        lines.append(
            f"| {name} | {summary(s['healthz'])} | {summary(s['callbacks'])} | {s['open']} |"
        )
    lines += [
        "",
        f"Locked database: another connection holds SQLite's write lock for {LOCK_SECONDS} s; "
        f"bursts of {BURST} concurrent real callbacks, /healthz every 0.5 s. Goal: /healthz "
        "always answers, a callback that cannot be stored gets a 503 within a few seconds.",
        "",
        "| server | /healthz, median / worst | answers | callbacks during the lock, median / "
        "worst | answers | a callback after it |",
        "|---|---:|---|---:|---|---|",
    ]
    for name, r in results.items():
        lk = r["locked"]
        after = f"{lk['after'][1]} in {lk['after'][0] * 1000:,.0f} ms"
        lines.append(
            f"| {name} | {summary(lk['healthz'])} | {summary(lk['callbacks'])} | {after} |"
        )
    return "\n".join(lines) + "\n"
