"""Log lines. TRACKER_LOG_FORMAT=json (issue 12, item 3): one JSON object a line, ids on
request and task lines, secrets masked as in text; the default stays text. In either format
a value cannot forge a line (issue 9, item 10): newlines, escapes and bidi marks are escaped,
in the app's lines and in gunicorn's access log."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.servers import CLOSE, free_port
from tests.support.waiting import wait_for
from tracker import logs, redact, settings
from tracker.db import Database
from tracker.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET = "sk-json-logs-upstream-key-0123456789"


def record(message: str, *args: Any, **attrs: Any) -> logging.LogRecord:
    made = logging.getLogRecordFactory()(
        "tracker.x", logging.WARNING, __file__, 1, message, args, None
    )
    made.__dict__.update(attrs)
    return made


def test_a_line_has_time_level_logger_message_and_the_task_it_is_about() -> None:
    line = json.loads(logs.JsonFormatter().format(record("task %d: archival given up", 42)))
    assert set(line) >= {"time", "level", "logger", "message"}
    assert line["level"] == "WARNING" and line["logger"] == "tracker.x"
    assert line["message"] == "task 42: archival given up"
    assert line["task_id"] == 42
    assert line["time"].endswith("+00:00")


def test_request_and_task_ids_come_from_the_context() -> None:
    logs.install_context()
    token = logs.request_id.set("req-1")
    try:
        with logs.about_task(7):
            line = json.loads(logs.JsonFormatter().format(record("sent")))
    finally:
        logs.request_id.reset(token)
    assert line["request_id"] == "req-1" and line["task_id"] == 7


def test_secrets_are_masked_and_a_traceback_stays_inside_the_line() -> None:
    redact.register(SECRET)
    redact.install_logging_filter()
    try:
        raise ValueError(f"boom {SECRET}")
    except ValueError:
        made = logging.getLogRecordFactory()(
            "tracker.x", logging.ERROR, __file__, 1, "key %s", (SECRET,), sys.exc_info()
        )
    text = logs.JsonFormatter().format(made)
    assert SECRET not in text and "\n" not in text
    line = json.loads(text)
    assert "[redacted]" in line["message"] and "ValueError" in line["exception"]


def test_an_incoming_request_id_is_kept_only_when_sane() -> None:
    assert logs.new_request_id("abc-123") == "abc-123"
    made = logs.new_request_id("bad\nid")
    assert made != "bad\nid" and len(made) == 32
    assert logs.new_request_id(SECRET, lambda given: SECRET not in given) != SECRET


def test_the_web_replaces_a_request_id_that_holds_a_secret(live: Any) -> None:
    redact.register(SECRET)
    server = live()
    answer = requests.get(f"{server.url}/healthz", headers={"X-Request-ID": SECRET}, timeout=10)
    assert answer.headers["X-Request-ID"] != SECRET
    # shaped like a callback token (43+ url-safe characters): the log masks such words, and
    # the request_id field would have shown it whole; ordinary trace ids are kept
    token = secrets.token_urlsafe(32)
    answer = requests.get(f"{server.url}/healthz", headers={"X-Request-ID": token}, timeout=10)
    assert answer.headers["X-Request-ID"] != token
    for ordinary in (str(uuid.uuid4()), secrets.token_hex(16), "Root=1-5759e988-bd862e3fe1be46a9"):
        answer = requests.get(
            f"{server.url}/healthz", headers={"X-Request-ID": ordinary}, timeout=10
        )
        assert answer.headers["X-Request-ID"] == ordinary


def test_the_format_is_checked_at_start() -> None:
    assert settings.load({}).log_format == "text"
    assert settings.load({"TRACKER_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(settings.SettingsError, match="TRACKER_LOG_FORMAT"):
        settings.load({"TRACKER_LOG_FORMAT": "xml"})


def _env(db: Database, tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "LUMA_"))}
    env.pop("PUBLIC_BASE_URL", None)
    env.update(
        DATABASE_URL=db.url,
        PORT=str(port),
        LUMA_API_BASE="http://127.0.0.1:9",
        LUMA_API_KEY=SECRET,
        TRACKER_MEDIA_DIR="",
        TRACKER_LOG_FORMAT="json",
        TRACKER_WORKER_INTERVAL="0.2",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        WEB_CONCURRENCY="1",
    )
    return env


def _lines(path: Path) -> list[dict[str, Any]]:
    found = []
    for raw in path.read_text().splitlines():
        line = json.loads(raw)  # every line: one JSON object
        assert {"time", "level", "logger", "message"} <= set(line), raw
        found.append(line)
    return found


@pytest.mark.slow
def test_every_line_of_the_web_process_and_the_worker_is_json(db: Database, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env(db, tmp_path, port)
    web_out, web_err = tmp_path / "web.out", tmp_path / "web.err"
    with web_out.open("wb") as out, web_err.open("wb") as err:
        web = subprocess.Popen(
            [str(BIN / "gunicorn"), "wsgi:app", "--config", "gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
        )
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as out:
        worker = subprocess.Popen(
            [str(BIN / "tracker"), "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:

        def up() -> bool:
            try:
                return requests.get(f"{url}/healthz", timeout=1, headers=CLOSE).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout=30)
        given = requests.get(
            f"{url}/api/tasks/5", headers={"X-Request-ID": "trace-77", **CLOSE}, timeout=5
        )
        assert given.headers["X-Request-ID"] == "trace-77"
        made = requests.get(f"{url}/callbacks/luma/{SECRET}", timeout=5, headers=CLOSE)
        assert len(made.headers["X-Request-ID"]) == 32
    finally:
        worker.send_signal(signal.SIGTERM)
        web.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        web.wait(timeout=60)
    web_lines = _lines(web_out) + _lines(web_err)
    access = [line for line in web_lines if line["logger"] == "gunicorn.access"]
    traced = [line for line in access if "/api/tasks/5" in line["message"]]
    assert traced and traced[0]["request_id"] == "trace-77" and traced[0]["task_id"] == 5
    assert any(line["request_id"] == made.headers["X-Request-ID"] for line in access)
    assert any(line["logger"] == "gunicorn.error" for line in web_lines), "the master's lines"
    assert any(line["logger"].startswith("tracker") for line in web_lines), "the app's lines"
    worker_lines = _lines(worker_log)
    assert any("stopped" in line["message"] for line in worker_lines)
    everything = web_out.read_text() + web_err.read_text() + worker_log.read_text()
    assert SECRET not in everything


def test_apps_made_one_after_another_wrap_the_log_record_factory_once_each(
    make_settings: Any, db: Database
) -> None:
    """Each create_app installs the masking and the id factories: checking only the top one,
    each wrapped the other again, and a long test run overflowed the stack making a record."""

    def chain() -> int:
        length, factory = 0, logging.getLogRecordFactory()
        while factory is not None:
            length, factory = length + 1, getattr(factory, "current", None)
        return length

    create_app(make_settings(), db=db)
    once = chain()
    for _ in range(5):
        create_app(make_settings(), db=db)
    assert chain() == once
    logging.getLogger("tracker.test").warning("still one record")


# -- log lines cannot be forged: text lines and gunicorn's access log (issue 9, item 10) -------

FORGED = b"/x%0a127.0.0.1%20%22GET%20/forged%22%20200%1b[31m%e2%80%ae"


def test_app_log_values_are_escaped(caplog: pytest.LogCaptureFixture) -> None:
    redact.install_logging_filter()
    caplog.set_level(logging.INFO)
    value = '/x\n127.0.0.1 "GET /forged" 200\x1b[31m\u202eé'
    logging.getLogger("tracker.test").warning("query of %s failed: %s", 7, value)
    (record,) = [r for r in caplog.records if r.name == "tracker.test"]
    line = record.getMessage()
    assert "\n" not in line and "\x1b" not in line and "\u202e" not in line
    assert line == 'query of 7 failed: /x\\n127.0.0.1 "GET /forged" 200\\x1b[31m\\u202eé'


@pytest.mark.slow
def test_the_access_log_cannot_be_forged(db: Database, tmp_path: Path) -> None:
    """gunicorn with the Procfile's config, as in production: one request, one escaped line,
    and no callback token in it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "LUMA_"))}
    env.pop("PUBLIC_BASE_URL", None)
    env.update(DATABASE_URL=db.url, PORT=str(port), WEB_CONCURRENCY="1", TRACKER_MEDIA_DIR="")
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app", "--config", "gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return requests.get(f"{base}/healthz", timeout=2).ok
            except (requests.ConnectionError, requests.Timeout):  # a slow boot times out
                return proc.poll() is not None  # died: fail below with its log

        wait_for(up, timeout=60)
        assert proc.poll() is None, log.read_text(errors="replace")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(
                b"GET " + FORGED + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            assert conn.recv(64).startswith(b"HTTP/1.1 404")
        wait_for(lambda: b"/forged" in log.read_bytes(), timeout=20)
        token = "a-callback-token-the-access-log-must-mask-0123456789"
        assert requests.post(f"{base}/callbacks/luma/{token}", json={}, timeout=10).status_code
        wait_for(lambda: b"/callbacks/luma/" in log.read_bytes(), timeout=20)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_bytes()
    assert b"\x1b" not in text and "\u202e".encode() not in text
    lines = text.decode().splitlines()
    assert not [line for line in lines if line.startswith("127.0.0.1 ") and "/forged" in line[:30]]
    (logged,) = [line for line in lines if "/forged" in line]
    assert logged.startswith('127.0.0.1 "GET /x\\n127.0.0.1 ')
    assert "\\x1b[31m\\u202e" in logged
    assert token not in text.decode()  # masked once, where the line's record is made
