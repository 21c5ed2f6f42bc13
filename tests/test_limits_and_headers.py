"""Size limits, hardening headers, cookie flags and trusted proxies' headers, over real HTTP."""

from __future__ import annotations

import socket
from collections.abc import Callable
from urllib.parse import urlsplit

import requests

from tests.support.scripted import Reply, ScriptedUpstream, raw_task
from tests.support.servers import LiveServer
from tests.support.waiting import api_task
from tracker.db import Database
from tracker.settings import Settings
from tracker.web.app import create_app

TOKEN = "limits-admin-token-0123456789abcd"


def _submit_one(live, upstream: ScriptedUpstream, **overrides):  # type: ignore[no-untyped-def]
    app = live(luma_api_base=upstream.url, **overrides).url
    upstream.then(Reply(201, raw_task("up-big")))
    task = requests.post(f"{app}/api/tasks", json={"user_prompt": "a tall tree"}, timeout=5).json()
    return app, task, upstream.posts()[-1].body["notify_hook"]


def test_oversized_callback_is_413_and_changes_nothing(live, upstream) -> None:  # type: ignore[no-untyped-def]
    app, task, hook = _submit_one(live, upstream, max_callback_bytes=2000)
    body = raw_task("up-big", "failed", failure_reason="x" * 5000)
    response = requests.post(hook, json=body, timeout=5)
    assert response.status_code == 413
    after = api_task(app, task["id"])
    assert after["state"] == "pending"
    assert [e["source"] for e in after["events"]] == ["submit", "submit"]
    # a small one still works
    assert requests.post(hook, json=raw_task("up-big", "processing"), timeout=5).ok


def test_oversized_chunked_callback_is_refused(live, upstream) -> None:  # type: ignore[no-untyped-def]
    app, task, hook = _submit_one(live, upstream, max_callback_bytes=2000)

    def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: sent chunked
        yield b'{"id": "up-big", "state": "failed", "failure_reason": "'
        for _ in range(50):
            yield b"y" * 1000
        yield b'"}'

    response = requests.post(hook, data=chunks(), timeout=5)
    assert response.status_code == 413
    assert api_task(app, task["id"])["state"] == "pending"


def _announce_a_huge_body(app: str, headers: bytes) -> str:
    """The head of the answer to a POST that announces 500 MB and sends none of it."""
    host, port = urlsplit(app).hostname, urlsplit(app).port
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(
            b"POST /api/tasks HTTP/1.1\r\n" + headers + b"Content-Length: 500000000\r\n\r\n"
        )
        return conn.recv(4096).decode()


def test_oversized_api_body_is_413_without_being_read(live) -> None:  # type: ignore[no-untyped-def]
    app = live(max_body_bytes=10_000).url
    # announce a huge body and send none of it: the answer must come anyway
    head = _announce_a_huge_body(app, b"Host: x\r\nContent-Type: application/json\r\n")
    assert head.startswith("HTTP/1.1 413")
    assert requests.get(f"{app}/api/tasks", timeout=5).json()["tasks"] == []


def test_the_body_size_is_decided_first(live: Callable[..., LiveServer]) -> None:
    app = live(max_body_bytes=10_000).url
    head = _announce_a_huge_body(
        app,
        b"Host: evil.example\r\nOrigin: https://evil.example\r\nContent-Type: text/plain\r\n",
    )
    assert head.startswith("HTTP/1.1 413")


def test_big_base64_image_under_the_limit_is_accepted(live, upstream) -> None:  # type: ignore[no-untyped-def]
    app = live(luma_api_base=upstream.url).url
    image = "data:image/png;base64," + "QUJD" * 500_000  # 2 MB
    response = requests.post(
        f"{app}/api/tasks", json={"user_prompt": "a tall tree", "image_url": image}, timeout=10
    )
    assert response.status_code == 201
    assert upstream.posts()[-1].body["image_url"] == image


def test_hardening_headers(live) -> None:  # type: ignore[no-untyped-def]
    app = live().url
    page = requests.get(f"{app}/no-such-page", headers={"Accept": "text/html"}, timeout=5)
    assert page.status_code == 404
    csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    api = requests.get(f"{app}/api/tasks", timeout=5)
    assert api.headers["X-Content-Type-Options"] == "nosniff"


def test_session_cookie_flags(make_settings, db) -> None:  # type: ignore[no-untyped-def]
    secure = create_app(make_settings(public_base_url="https://tracker.example"), db=db)
    assert secure.config["SESSION_COOKIE_SECURE"] is True
    assert secure.config["SESSION_COOKIE_HTTPONLY"] is True
    assert secure.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    plain = create_app(make_settings(public_base_url="http://127.0.0.1:8000"), db=db)
    assert plain.config["SESSION_COOKIE_SECURE"] is False


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
