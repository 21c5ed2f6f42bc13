"""The second attack review's findings against the web process (issue 23, item 3): a body
dripped in chunks must hold no admission slot, callbacks keep slots of their own beside
`?wait=` waiters and API traffic, a callback token never shows in a log line however its
path is mangled, and X-Forwarded-Host cannot carry a request past the Host check.

The process tests start the Procfile's web line (gunicorn's gevent worker) on 127.0.0.1, on
the `db` fixture's database, as tests/test_web_processes.py does (its helpers copied here:
test files import from tests/support only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from tests.support.factory import make_task, set_fields
from tests.support.servers import CLOSE, free_port, serve
from tests.support.waiting import wait_for
from tracker import redact
from tracker.db import Database
from tracker.tasks import store
from tracker.web import admission

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).parent / "gunicorn")


def _procfile_web() -> list[str]:
    line = next(
        line.split(":", 1)[1].split()
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith("web:")
    )
    return [GUNICORN if part == "gunicorn" else part for part in line]


def _task_with_token(db: Database) -> tuple[int, str]:
    """A processing task and the callback token the upstream would call back with."""
    token = secrets.token_urlsafe(32)
    task = make_task(db, "processing", user_prompt="a slow river")
    set_fields(
        db, task.id, upstream_id=f"slow-{task.id}", callback_token_hash=store.hash_token(token)
    )
    return task.id, token


@contextlib.contextmanager
def gunicorn(db: Database, tmp_path: Path, **env: str) -> Iterator[tuple[str, Path]]:
    """The Procfile's web line on the test's database, with `env` on top of the defaults of
    tests/test_web_processes.py's `web`; yields (base URL, its log)."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "LUMA_"))}
    environ.update(
        PORT=str(port),
        DATABASE_URL=db.url,
        LUMA_API_BASE="http://127.0.0.1:9",
        PUBLIC_BASE_URL="http://127.0.0.1:9",
        TRACKER_MEDIA_DIR="",
    )
    environ.update(env)
    log = tmp_path / f"web-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(_procfile_web(), cwd=ROOT, env=environ, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{base}/healthz", timeout=2, headers=CLOSE).status_code == 200
        return False

    try:
        wait_for(up, timeout=90, interval=0.2)
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _callback(base: str, token: str, task_id: int, n: int) -> requests.Response:
    body = {"id": f"slow-{task_id}", "state": "processing", "progress": n}
    return requests.post(f"{base}/callbacks/luma/{token}", json=body, timeout=30, headers=CLOSE)


# -- 1. a body dripped a byte a second holds no slot ----------------------------------------


class Drips:
    """Connections that send a request's head at once, then its body a byte a second for as
    long as they are left open: `chunked` ones in HTTP chunks, the others against a declared
    Content-Length."""

    def __init__(self, base: str, path: str, count: int, *, chunked: bool) -> None:
        host, port = base.removeprefix("http://").split(":")
        framing = "Transfer-Encoding: chunked" if chunked else "Content-Length: 100000"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"{framing}\r\n\r\n"
        )
        self.chunked = chunked
        self.socks = [socket.create_connection((host, int(port)), timeout=30) for _ in range(count)]
        for sock in self.socks:
            sock.sendall(head.encode() + self._byte(b"{"))
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _byte(self, byte: bytes) -> bytes:
        return b"1\r\n" + byte + b"\r\n" if self.chunked else byte

    def _drip(self) -> None:
        while not self.stopping.wait(1.0):
            for sock in self.socks:
                with contextlib.suppress(OSError):
                    sock.sendall(self._byte(b" "))

    def answers(self) -> list[str]:
        """The status line each connection got (read while the drip goes on)."""
        lines = []
        for sock in self.socks:
            sock.settimeout(10)
            with contextlib.suppress(OSError):
                lines.append(sock.recv(4096).split(b"\r\n", 1)[0].decode())
        return lines

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        for sock in self.socks:
            sock.close()


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_bodies_dripped_a_byte_a_second_hold_no_slot(
    db: Database, tmp_path: Path, chunked: bool
) -> None:
    task_id, token = _task_with_token(db)
    with gunicorn(db, tmp_path) as (base, log):
        # more drips than the process has slots (8 on SQLite), on the callback route and on
        # the API's; they keep dripping until the end of the test
        drips = [
            Drips(base, f"/callbacks/luma/{token}", 12, chunked=chunked),
            Drips(base, "/api/tasks", 12, chunked=chunked),
        ]
        try:
            time.sleep(1.5)  # every drip accepted and started
            for n in range(3):
                answer = _callback(base, token, task_id, n)
                assert answer.status_code == 200, answer.text
                listing = requests.get(f"{base}/api/tasks", timeout=30, headers=CLOSE)
                assert listing.status_code == 200, listing.text
            created = requests.post(
                f"{base}/api/tasks", json={"user_prompt": "a calm lake"}, timeout=30
            )
            assert created.status_code in (201, 202), created.text
            # the drips are refused once their whole body is late, though a byte comes
            # every second (the deadline is for the body, not for each read)
            for drip in drips:
                assert set(drip.answers()) == {"HTTP/1.1 408 Request Timeout"}
        finally:
            for drip in drips:
                drip.close()
    assert "Traceback" not in log.read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_chunked_callback_sent_at_once_is_stored(db: Database, tmp_path: Path) -> None:
    task_id, token = _task_with_token(db)
    body = b'{"id": "slow-%d", "state": "processing", "progress": 7}' % task_id

    def chunks() -> Iterator[bytes]:  # no Content-Length: requests sends it chunked
        yield body[:10]
        yield body[10:]

    with gunicorn(db, tmp_path) as (base, _):
        answer = requests.post(
            f"{base}/callbacks/luma/{token}", data=chunks(), timeout=10, headers=CLOSE
        )
        assert answer.status_code == 200, answer.text
        too_big = requests.post(
            f"{base}/callbacks/luma/{token}",
            data=iter([b'{"x": "', b"y" * 1_000_001, b'"}']),
            timeout=10,
            headers=CLOSE,
        )
        assert too_big.status_code == 413


# -- 2. callbacks keep slots of their own ---------------------------------------------------


@pytest.mark.slow  # the waiters' answers take seconds, on purpose
def test_waiters_waking_together_leave_callbacks_a_slot(
    db: Database, make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate itself, in a real server on 127.0.0.1 (a thread a request, where the test can
    make each waiter's answer slow): 40 waiters parked on one task, woken together by the
    callback that ends it, each holding a slot for a quarter of a second as it answers."""
    from tracker.web.app import create_app

    monkeypatch.setattr(admission, "MAX_THREAD_WAITERS", 100)  # as many as gevent would park
    monkeypatch.setattr(admission, "POLL_EVERY", 0.05)  # they wake together
    task_id, token = _task_with_token(db)
    watched = make_task(db, "processing", user_prompt="watched by many")
    watched_token = secrets.token_urlsafe(32)
    set_fields(
        db, watched.id, upstream_id="watched", callback_token_hash=store.hash_token(watched_token)
    )

    def slow_answers(app: Any) -> Any:  # a waiter's answer holds its slot a while
        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            answer = app(environ, start_response)
            if "wait=" in environ.get("QUERY_STRING", ""):
                time.sleep(0.25)
            return answer

        return wsgi

    server = serve(lambda url: admission.limit(slow_answers(create_app(make_settings(), db=db)), 2))
    try:
        with ThreadPoolExecutor(40) as pool:
            waiters = [
                pool.submit(
                    requests.get, f"{server.url}/api/tasks/{watched.id}?wait=60", timeout=60
                )
                for _ in range(40)
            ]
            wait_for(lambda: admission._waiters == 40, timeout=20)  # parked: no slot held
            finish = {"id": "watched", "state": "failed", "failure_reason": "stopped"}
            done = requests.post(
                f"{server.url}/callbacks/luma/{watched_token}", json=finish, timeout=10
            )
            assert done.status_code == 200, done.text
            wait_for(lambda: admission._waiters == 0, timeout=20)  # all awake, wanting a slot
            for n in range(3):
                answer = _callback(server.url, token, task_id, n)
                assert answer.status_code == 200, answer.text
            assert all(waiter.result().status_code == 200 for waiter in waiters)
    finally:
        server.stop()


class Hang:
    """An upstream that accepts connections and never answers: a submit sent upstream in its
    request holds its slot until the read timeout."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.server.accept()[0])

    def close(self) -> None:
        self.server.close()
        for sock in self.held:
            sock.close()


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_api_requests_holding_every_slot_leave_callbacks_theirs(
    db: Database, tmp_path: Path
) -> None:
    task_id, token = _task_with_token(db)
    hang = Hang()
    try:
        env = {"LUMA_API_BASE": hang.url, "LUMA_READ_TIMEOUT": "10", "LUMA_API_KEY": "sk-x" * 4}
        with gunicorn(db, tmp_path, **env) as (base, _), ThreadPoolExecutor(16) as pool:
            submits = [
                pool.submit(
                    requests.post,
                    f"{base}/api/tasks",
                    json={"user_prompt": f"a slow upstream {n}"},
                    timeout=60,
                )
                for n in range(16)
            ]
            # every slot the API may hold is taken by a submit waiting on the upstream
            wait_for(lambda: len(hang.held) >= 6, timeout=30)
            time.sleep(0.5)
            for n in range(3):
                answer = _callback(base, token, task_id, n)
                assert answer.status_code == 200, answer.text
            for submit in submits:
                submit.result()
    finally:
        hang.close()


# -- 3. a callback token never shows in a log line ------------------------------------------


def _near_misses(token: str) -> list[str]:
    return [
        f"/callbacks/luma//{token}",
        f"/callbacks/LUMA/{token}",
        f"/Callbacks/luma/{token}",
        f"/callbacks//luma/{token}",
        f"/callbacks/luma/{token}/",
        f"/callbacks/luma/{token}/x",
        f"/callbacks/luma/%20{token}",
        f"/callbacks/luma/x{token}",
        f"/callbacks/{token}",
        f"/callback/luma/{token}",
        f"/api/tasks/{token}",
        f"/{token}",
        f"/{token}.json",
    ]


def test_a_token_in_a_near_miss_path_is_masked_in_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redact.install_logging_filter()
    token = secrets.token_urlsafe(32)
    with caplog.at_level(logging.INFO):
        for path in _near_misses(token):
            logging.getLogger("tracker.test").info('"POST %s" 404', path)
    assert token not in caplog.text
    assert caplog.text.count("[redacted]") == len(_near_misses(token))


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_token_in_a_near_miss_path_is_masked_in_the_access_log(
    db: Database, tmp_path: Path, log_format: str
) -> None:
    _, token = _task_with_token(db)
    with gunicorn(db, tmp_path, TRACKER_LOG_FORMAT=log_format) as (base, log):
        for path in _near_misses(token):
            requests.post(f"{base}{path}", json={"state": "processing"}, timeout=10)
            requests.get(f"{base}{path}", timeout=10)
        access = re.compile(r'127\.0\.0\.1 \\?"(GET|POST) ')  # a line (text or JSON) a request
        wait_for(lambda: len(access.findall(log.read_text())) >= 2 * len(_near_misses(token)))
    text = log.read_text(errors="replace")
    assert token not in text
    assert token[:20] not in text


# -- 4. X-Forwarded-Host is checked as Host is ----------------------------------------------

PUBLIC = "https://tracker.example.com"


@pytest.fixture
def behind_a_proxy(make_settings: Callable[..., Any], db: Database) -> Flask:
    from tracker.web.app import create_app

    return create_app(make_settings(public_base_url=PUBLIC, trusted_proxies=1), db=db)


@pytest.mark.parametrize(
    ("host", "forwarded", "status"),
    [
        ("tracker.example.com", "tracker.example.com", 200),  # a proxy that sets it
        ("127.0.0.1:8000", "tracker.example.com", 200),  # reached by address, host forwarded
        ("tracker.example.com", None, 200),  # a proxy that clears it
        ("tracker.example.com", "evil.example", 400),  # a forwarded name not ours
        ("127.0.0.1:8000", "evil.example", 400),
        # a rebinding page's own name, with a name of ours forged in X-Forwarded-Host that
        # a proxy passing Host on (and not setting X-Forwarded-Host) let through
        ("evil.example", "tracker.example.com", 400),
        ("evil.example:8000", "localhost", 400),
        ("evil.example", None, 400),
    ],
)
def test_the_forwarded_host_and_the_host_are_both_ours(
    behind_a_proxy: Flask, db: Database, host: str, forwarded: str | None, status: int
) -> None:
    client = behind_a_proxy.test_client()
    headers = {"Host": host, "X-Forwarded-Proto": "https"}
    if forwarded is not None:
        headers["X-Forwarded-Host"] = forwarded
    assert client.get("/api/tasks", headers=headers).status_code == status
    # the callback's fast path answers by the same rule (404: a token no task has)
    callback = client.post(f"/callbacks/luma/{'a' * 43}", headers=headers, json={})
    assert callback.status_code == (404 if status == 200 else 400)


def test_the_proxy_example_sets_x_forwarded_host() -> None:
    """docs/operations.md (the README's proxy example moved there, issue 22)."""
    page = (ROOT / "docs" / "operations.md").read_text()
    example = page.split("```nginx", 1)[1].split("```", 1)[0]
    assert re.search(r"proxy_set_header X-Forwarded-Host (\$host|\"\");", example), example
