"""Issue 9, items 5-7: the API cannot be driven from other sites, guessing the token is
limited, and a session ends for good at logout or after its absolute lifetime.

Each test here failed before its fix."""

from __future__ import annotations

import base64
import logging
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import select, update

from tests.support.devrun import ROOT, dev_env, start_dev
from tests.support.scripted import Reply, ScriptedUpstream
from tests.support.servers import LiveServer
from tests.support.waiting import wait_for
from tracker import create_app
from tracker.db import Database
from tracker.settings import Settings, SettingsError, load
from tracker.tasks.models import SignIn, Task, TaskEvent, utcnow

TOKEN = "hardening-admin-token-0123456789"
EVIL = "https://evil.example"
JSON = {"Content-Type": "application/json"}


def events_of(db: Database, task_id: int) -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(TaskEvent.source).where(TaskEvent.task_id == task_id)))


def task_count(db: Database) -> int:
    with db.read() as session:
        return len(list(session.scalars(select(Task.id))))


# -- item 5: the API is driven by this site only ---------------------------------------------


@pytest.fixture
def app_url(live, upstream: ScriptedUpstream) -> str:  # type: ignore[no-untyped-def]
    return live(luma_api_base=upstream.url).url


def rejected_task(app_url: str, upstream: ScriptedUpstream) -> dict[str, Any]:
    upstream.then(Reply(400, {"detail": "no"}))
    task = requests.post(f"{app_url}/api/tasks", json={"user_prompt": "a kite"}, timeout=5).json()
    assert task["state"] == "rejected"
    return task


def test_a_body_less_action_must_be_sent_as_json(app_url: str, upstream: ScriptedUpstream) -> None:
    task = rejected_task(app_url, upstream)
    resend = f"{app_url}/api/tasks/{task['id']}/resend"
    # what a cross-site form sends (no Origin from old browsers), and no type at all
    for headers in ({}, {"Content-Type": "application/x-www-form-urlencoded"}):
        response = requests.post(resend, headers=headers, timeout=5)
        assert response.status_code == 415, headers
        assert "application/json" in response.json()["error"]
    assert len(upstream.posts()) == 1, "a refused request sent nothing"
    # the same action as JSON, with an empty body, works
    response = requests.post(resend, headers=JSON, timeout=5)
    assert response.status_code == 200 and response.json()["attempts"] == 2


def test_a_cross_site_form_post_to_poll_is_403_not_500(
    db: Database, app_url: str, upstream: ScriptedUpstream
) -> None:
    task = requests.post(f"{app_url}/api/tasks", json={"user_prompt": "a kite"}, timeout=5).json()
    before = events_of(db, task["id"])
    for content_type in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = requests.post(
            f"{app_url}/api/tasks/{task['id']}/poll",
            data="a=b" if "urlencoded" in content_type else "--x--\r\n",
            headers={"Origin": EVIL, "Content-Type": content_type},
            timeout=5,
        )
        assert response.status_code == 403, content_type
        assert response.json()["field"] == "Origin"
    assert events_of(db, task["id"]) == before, "nothing was polled"


def test_json_from_another_site_is_refused(db: Database, app_url: str) -> None:
    submit = f"{app_url}/api/tasks"
    body = {"user_prompt": "a forged submit"}
    for origin in (EVIL, "null", "http://127.0.0.1:1", app_url.replace("http:", "https:")):
        response = requests.post(submit, json=body, headers={"Origin": origin}, timeout=5)
        assert response.status_code == 403, origin
    assert task_count(db) == 0
    port = urlsplit(app_url).port
    # this site's own pages, and clients that are not browsers, keep working
    for headers in (
        {"Origin": app_url},
        {"Origin": app_url.replace("127.0.0.1", "localhost"), "Host": f"localhost:{port}"},
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},  # with Referrer-Policy no-referrer
        {},
    ):
        assert requests.post(submit, json=body, headers=headers, timeout=5).status_code == 201


def test_a_foreign_host_is_400_except_for_probes(app_url: str) -> None:
    evil = {"Host": "evil.example"}
    for path in ("/api/tasks", "/", "/api/openapi.json", "/callbacks/luma/x", "/nothing"):
        response = requests.get(app_url + path, headers=evil, timeout=5)
        assert response.status_code == 400, path
    for host in ("evil.example:80", "127.0.0.1.evil.example", "x@127.0.0.1", "", "[::2]"):
        response = requests.get(f"{app_url}/api/tasks", headers={"Host": host}, timeout=5)
        assert response.status_code == 400, host
    # probes reach the service by address
    assert requests.get(f"{app_url}/healthz", headers=evil, timeout=5).status_code == 200
    for path in ("/readyz", "/metrics"):
        assert requests.get(app_url + path, headers=evil, timeout=5).status_code != 400
    # its own names, with or without the port
    port = urlsplit(app_url).port
    for host in (f"127.0.0.1:{port}", "localhost", f"LOCALHOST:{port}", f"[::1]:{port}"):
        response = requests.get(f"{app_url}/api/tasks", headers={"Host": host}, timeout=5)
        assert response.status_code == 200, host


def test_the_public_base_url_names_the_service(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    app = create_app(make_settings(public_base_url="https://tracker.example.com"), db=db)
    client = app.test_client()
    assert client.get("/api/tasks", headers={"Host": "tracker.example.com"}).status_code == 200
    assert client.get("/api/tasks", headers={"Host": "other.example.com"}).status_code == 400
    # a browser on the public site, served by a proxy that this process does not trust
    response = client.post(
        "/api/tasks/1/poll", headers={"Origin": "https://tracker.example.com", **JSON}
    )
    assert response.status_code == 404  # past the checks: there is no task 1


def test_the_body_size_is_decided_first(live) -> None:  # type: ignore[no-untyped-def]
    app = live(max_body_bytes=10_000).url
    host, port = urlsplit(app).hostname, urlsplit(app).port
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(
            b"POST /api/tasks HTTP/1.1\r\nHost: evil.example\r\nOrigin: https://evil.example\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 500000000\r\n\r\n"
        )
        head = conn.recv(4096).decode()
    assert head.startswith("HTTP/1.1 413")


def test_trusted_proxies_say_who_the_client_is(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    public = "https://tracker.example.com"
    behind = create_app(
        make_settings(public_base_url=public, api_token=TOKEN, trusted_proxies=1), db=db
    ).test_client()
    proxied = {"X-Forwarded-Host": "tracker.example.com", "X-Forwarded-Proto": "https"}
    # the proxy talks to us as 127.0.0.1; the name the client used is the one checked
    bad_host = {**proxied, "X-Forwarded-Host": "evil.example"}
    assert behind.get("/api/tasks", headers=bad_host).status_code == 400
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert behind.get("/api/tasks", headers={**proxied, **bearer}).status_code == 200
    # failed attempts count for the client's address, not the proxy's
    wrong = {**proxied, "Authorization": "Bearer wrong-token-wrong-token"}
    for _ in range(10):
        response = behind.get("/api/tasks", headers={**wrong, "X-Forwarded-For": "203.0.113.5"})
        assert response.status_code == 401
    attacker = behind.get("/api/tasks", headers={**wrong, "X-Forwarded-For": "203.0.113.5"})
    assert attacker.status_code == 429
    neighbour = {**proxied, **bearer, "X-Forwarded-For": "203.0.113.6"}
    assert behind.get("/api/tasks", headers=neighbour).status_code == 200
    # without trusted proxies, the headers are the client's word and change nothing
    direct = create_app(make_settings(public_base_url=public), db=db).test_client()
    assert direct.get("/api/tasks", headers=bad_host).status_code == 200


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _serves(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.slow
def test_make_run_listens_on_loopback_only(tmp_path: Path) -> None:
    env = dev_env(tmp_path, SIMULATOR_DEMO="0", TRACKER_MEDIA_DIR="")
    port = int(env["PORT"])
    log = tmp_path / "dev.log"
    dev = start_dev(env, log)
    try:
        # served, not only accepted: gunicorn's master listens before its worker is booted
        wait_for(lambda: _serves(f"http://127.0.0.1:{port}/healthz"), timeout=60, interval=0.3)
        # all of 127.0.0.0/8 is this machine: a socket bound to 0.0.0.0 answers on .2 too
        assert not _answers("127.0.0.2", port), "the web process listens beyond 127.0.0.1"
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=30)
    assert dev.returncode == 0, log.read_text()[-3000:]
    # the Procfile's web process keeps listening everywhere, as platforms need
    assert "0.0.0.0" in (ROOT / "gunicorn.conf.py").read_text()  # noqa: S104
    assert "--bind" not in (ROOT / "Procfile").read_text()


def test_host_overrides_the_dev_bind() -> None:
    from tracker.cli import dev as devrun

    assert devrun.web_command({"PORT": "8123"})[-2:] == ["--bind", "127.0.0.1:8123"]
    everywhere = devrun.web_command({"PORT": "8123", "HOST": "0.0.0.0"})  # noqa: S104
    assert everywhere[-1] == "0.0.0.0:8123"
    assert devrun.web_command({"PORT": "8123", "HOST": "::"})[-1] == "[::]:8123"


# -- item 6: guessing is limited ----------------------------------------------------------


def login_page(session: requests.Session, base: str) -> str:
    page = session.get(f"{base}/login", headers={"Accept": "text/html"}, timeout=5).text
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match
    return match.group(1)


def sign_in(session: requests.Session, base: str, token: str = TOKEN) -> requests.Response:
    csrf = login_page(session, base)
    return session.post(
        f"{base}/login",
        data={"csrf_token": csrf, "token": token},
        allow_redirects=False,
        timeout=5,
    )


def assert_refused_for_a_while(response: requests.Response) -> None:
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_wrong_bearer_tokens_get_429_after_a_burst(live) -> None:  # type: ignore[no-untyped-def]
    app = live(api_token=TOKEN).url
    right = {"Authorization": f"Bearer {TOKEN}"}
    # those who know the token are never slowed down
    for _ in range(30):
        assert requests.get(f"{app}/api/tasks", headers=right, timeout=5).status_code == 200
    wrong = {"Authorization": "Bearer a-guess-a-guess-a-guess"}
    for _ in range(10):
        assert requests.get(f"{app}/api/tasks", headers=wrong, timeout=5).status_code == 401
    assert_refused_for_a_while(requests.get(f"{app}/api/tasks", headers=wrong, timeout=5))
    # while refused, no token is even compared: the right one cannot be told from the others
    answer = requests.post(f"{app}/api/tasks", json={"user_prompt": "x"}, headers=right, timeout=5)
    assert_refused_for_a_while(answer)
    assert answer.json()["error"]
    # a request without a token is no attempt: it gets its 401 as before
    assert requests.get(f"{app}/api/tasks", timeout=5).status_code == 401


def test_login_form_and_basic_share_the_limit(live) -> None:  # type: ignore[no-untyped-def]
    server: LiveServer = live(api_token=TOKEN)
    app = server.url
    browser = requests.Session()
    signed_in = requests.Session()
    assert sign_in(signed_in, app).status_code == 303
    for _ in range(5):
        assert sign_in(browser, app, "not-the-token").status_code == 401
    basic = "Basic " + base64.b64encode(b"admin:not-the-token").decode()
    for _ in range(5):
        response = requests.get(
            f"{app}/", headers={"Authorization": basic}, allow_redirects=False, timeout=5
        )
        assert response.status_code == 302
    assert_refused_for_a_while(sign_in(browser, app, "not-the-token"))
    assert_refused_for_a_while(sign_in(browser, app))  # the right one too, for now
    refused = requests.get(f"{app}/", headers={"Authorization": basic}, timeout=5)
    assert_refused_for_a_while(refused)
    # a browser already signed in is not refused: it sends no token
    assert signed_in.get(f"{app}/", allow_redirects=False, timeout=5).status_code == 200


@pytest.mark.slow  # starts a process
def test_a_short_api_token_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="TRACKER_API_TOKEN"):
        load({"TRACKER_API_TOKEN": "fifteen-chars!!"}, instance=tmp_path)
    with pytest.raises(SettingsError, match="TRACKER_API_TOKEN"):
        Settings(api_token="short")  # no way round it, so no short token escapes masking
    assert load({"TRACKER_API_TOKEN": "sixteen-chars!!!"}, instance=tmp_path).api_token

    bin_dir = Path(sys.executable).parent
    env = {"PATH": "/usr/bin:/bin", "TRACKER_API_TOKEN": "abc123", "HOME": str(tmp_path)}
    root = Path(__file__).resolve().parent.parent
    for command in (
        [str(bin_dir / "tracker"), "db", "upgrade"],
        [str(bin_dir / "gunicorn"), "wsgi:app", "-c", "gunicorn.conf.py", "-b", "127.0.0.1:0"],
    ):
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, cwd=root, timeout=60
        )
        assert result.returncode != 0, command
        output = result.stdout + result.stderr
        assert "TRACKER_API_TOKEN must be at least 16 characters" in output, output
        assert "Traceback" not in output, output
        assert "abc123" not in output


def test_the_shortest_token_allowed_is_masked_in_logs(
    make_settings: Callable[..., Settings], db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    token = "0123456789abcdef"  # 16 characters
    create_app(make_settings(api_token=token), db=db)
    with caplog.at_level(logging.INFO):
        logging.getLogger("tracker.test").info("someone sent %s", token)
    assert token not in caplog.text and "[redacted]" in caplog.text


# -- item 7: sessions end ------------------------------------------------------------------


def fixed_app(live, **overrides: Any) -> LiveServer:  # type: ignore[no-untyped-def]
    """A dashboard whose signing key outlives it, as a restarted process's does."""
    return live(api_token=TOKEN, secret_key="a-fixed-key-a-fixed-key-a-fixed-key", **overrides)


def replay(base: str, cookie: str, path: str = "/") -> int:
    response = requests.get(
        base + path,
        cookies={"tracker_session": cookie},
        headers={"Accept": "text/html"},
        allow_redirects=False,
        timeout=5,
    )
    return response.status_code


def test_logout_ends_the_session_for_good(live, db: Database) -> None:  # type: ignore[no-untyped-def]
    app = fixed_app(live).url
    browser, other = requests.Session(), requests.Session()
    assert sign_in(browser, app).status_code == 303
    assert sign_in(other, app).status_code == 303
    captured = browser.cookies["tracker_session"]
    kept = other.cookies["tracker_session"]
    assert replay(app, captured) == 200

    page = browser.get(f"{app}/", timeout=5).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf
    out = browser.post(
        f"{app}/logout", data={"csrf_token": csrf.group(1)}, allow_redirects=False, timeout=5
    )
    assert out.status_code == 303
    # the cookie captured before logout is worth nothing now: pages, live refresh, media
    assert replay(app, captured) == 302
    assert replay(app, captured, "/media/1/video") == 401
    # nor after a restart (a new process, same key and token, same database)
    restarted = fixed_app(live).url
    assert replay(restarted, captured) == 302
    # while a session that did not log out lives on across the restart
    assert replay(restarted, kept) == 200


def test_a_session_has_an_absolute_lifetime(live, db: Database) -> None:  # type: ignore[no-untyped-def]
    app = fixed_app(live).url
    browser = requests.Session()
    signed_in = sign_in(browser, app)
    assert (
        "Max-Age=43200" in signed_in.headers["Set-Cookie"]
        or "Expires=" in (signed_in.headers["Set-Cookie"])
    )
    with db.read() as session:
        (row,) = session.scalars(select(SignIn)).all()[-1:]
    lifetime = row.expires_at - row.created_at
    assert lifetime == timedelta(hours=12)
    # using it does not extend it
    for _ in range(3):
        assert browser.get(f"{app}/", allow_redirects=False, timeout=5).status_code == 200
    with db.read() as session:
        assert session.get(SignIn, row.id_hash).expires_at == row.expires_at  # type: ignore[union-attr]
    # once its time is up it is over, however fresh its cookie looks
    with db.write() as session:
        session.execute(
            update(SignIn)
            .where(SignIn.id_hash == row.id_hash)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert browser.get(f"{app}/", allow_redirects=False, timeout=5).status_code == 302


def test_session_lifetime_setting(tmp_path: Path) -> None:
    assert load({}, instance=tmp_path).session_lifetime == 12 * 3600
    assert load({"TRACKER_SESSION_LIFETIME": "3600"}, instance=tmp_path).session_lifetime == 3600
    with pytest.raises(SettingsError, match="TRACKER_SESSION_LIFETIME"):
        load({"TRACKER_SESSION_LIFETIME": "soon"}, instance=tmp_path)
    with pytest.raises(SettingsError, match="TRACKER_TRUSTED_PROXIES"):
        load({"TRACKER_TRUSTED_PROXIES": "-1"}, instance=tmp_path)
