"""Requests that other sites make a browser send. The dashboard's forms have the CSRF check
(Flask-WTF) as it runs in production: behind an https proxy, with forms left open for hours.
The API and callbacks have their own rules (web/sameorigin.py; issue 9, item 5): only this
service's names in `Host`, no `Origin` of another site, and unsafe API calls sent as JSON.

Over https Flask-WTF also wants a `Referer` from this very site. The pages must therefore
let the browser send one (`Referrer-Policy: same-origin`): with `no-referrer` every form
would fail in production only, since tests and `make run` speak plain http.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from tests.support.factory import make_task
from tests.support.scripted import Reply, ScriptedUpstream
from tests.support.servers import LiveServer
from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks.models import Task, TaskEvent
from tracker.web.app import create_app

PUBLIC = "https://tracker.example"
PROXIED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "tracker.example"}
TOKEN = "csrf-admin-token-0123456789abcdef"
EVIL = "https://evil.example"
JSON = {"Content-Type": "application/json"}


def _token_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has a form with a CSRF token"
    return match.group(1)


def _rejected_task(db: Database) -> int:
    failure = "upstream refused: busy"
    return make_task(db, "rejected", user_prompt="refused once", failure_reason=failure).id


def _state(db: Database, task_id: int) -> str:
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task.state


@pytest.fixture
def behind_https(make_app: Callable[..., Flask]) -> FlaskClient:
    """The app behind one https proxy (TRACKER_TRUSTED_PROXIES=1), as deployed."""
    app = make_app(trusted_proxies=1, public_base_url=PUBLIC)
    return app.test_client()


def test_over_https_a_form_from_our_own_page_is_taken(
    behind_https: FlaskClient, db: Database
) -> None:
    task_id = _rejected_task(db)
    page = behind_https.get(f"/tasks/{task_id}", headers=PROXIED)
    assert page.status_code == 200
    # the page lets the browser tell us where the form came from (same site only)
    assert page.headers["Referrer-Policy"] == "same-origin"
    response = behind_https.post(
        f"/tasks/{task_id}/resend",
        data={"csrf_token": _token_of(page.get_data(as_text=True))},
        headers={**PROXIED, "Referer": f"{PUBLIC}/tasks/{task_id}"},
    )
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/tasks/{task_id}")
    assert _state(db, task_id) == "queued"


@pytest.mark.parametrize(
    "referer",
    [None, "https://evil.example/tasks/1", "http://tracker.example/tasks/1", "not a url"],
)
def test_over_https_a_form_without_our_referer_is_refused(
    behind_https: FlaskClient, db: Database, referer: str | None
) -> None:
    task_id = _rejected_task(db)
    page = behind_https.get(f"/tasks/{task_id}", headers=PROXIED).get_data(as_text=True)
    headers = {**PROXIED, "Accept": "text/html"} | ({"Referer": referer} if referer else {})
    response = behind_https.post(
        f"/tasks/{task_id}/resend", data={"csrf_token": _token_of(page)}, headers=headers
    )
    assert response.status_code == 400
    assert "Nothing was changed" in response.get_data(as_text=True)
    assert _state(db, task_id) == "rejected"


def test_signing_in_over_https_works_from_the_login_page(make_app: Callable[..., Flask]) -> None:
    client = make_app(api_token=TOKEN, trusted_proxies=1, public_base_url=PUBLIC).test_client()
    login = client.get("/login", headers=PROXIED)
    assert login.headers["Referrer-Policy"] == "same-origin"
    response = client.post(
        "/login",
        data={"csrf_token": _token_of(login.get_data(as_text=True)), "token": TOKEN},
        headers={**PROXIED, "Referer": f"{PUBLIC}/login"},
    )
    assert response.status_code == 303
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie
    assert client.get("/", headers=PROXIED).status_code == 200


def test_a_form_left_open_for_hours_still_works(
    client: FlaskClient, db: Database, monkeypatch: Any
) -> None:
    """The token lives as long as its session, not Flask-WTF's default of one hour."""
    import itsdangerous.timed

    task_id = _rejected_task(db)
    page = client.get(f"/tasks/{task_id}").get_data(as_text=True)
    later = itsdangerous.timed.TimestampSigner.get_timestamp(None) + 6 * 3600  # type: ignore[arg-type]
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda _: later)
    response = client.post(f"/tasks/{task_id}/resend", data={"csrf_token": _token_of(page)})
    assert response.status_code == 303
    assert _state(db, task_id) == "queued"


def test_the_api_and_callbacks_need_no_form_token(client: FlaskClient, db: Database) -> None:
    """They have their own rules (web/sameorigin.py, per-task callback tokens)."""
    task_id = _rejected_task(db)
    response = client.post(f"/api/tasks/{task_id}/resend", json={})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json is not None and response.json["state"] == "queued"
    # an unknown callback token is the callback route's own 404, not a CSRF 400
    assert client.post("/callbacks/luma/not-a-token", json={"id": "x"}).status_code == 404


# -- the API is driven by this site only (issue 9, item 5) ------------------------------------


def events_of(db: Database, task_id: int) -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(TaskEvent.source).where(TaskEvent.task_id == task_id)))


def task_count(db: Database) -> int:
    with db.read() as session:
        return len(list(session.scalars(select(Task.id))))


@pytest.fixture
def app_url(live: Callable[..., LiveServer], upstream: ScriptedUpstream) -> str:
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
