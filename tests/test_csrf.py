"""The dashboard's CSRF check (Flask-WTF) as it runs in production: behind an https proxy,
with forms left open for hours, beside an API and callbacks that have their own rules.

Over https Flask-WTF also wants a `Referer` from this very site. The pages must therefore
let the browser send one (`Referrer-Policy: same-origin`): with `no-referrer` every form
would fail in production only, since tests and `make run` speak plain http.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tracker import create_app
from tracker.db import Database
from tracker.flows import validate
from tracker.settings import Settings
from tracker.tasks import store
from tracker.tasks.models import Task

PUBLIC = "https://tracker.example"
PROXIED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "tracker.example"}
TOKEN = "csrf-admin-token-0123456789abcdef"


def _token_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has a form with a CSRF token"
    return match.group(1)


def _rejected_task(db: Database) -> int:
    task = store.create(db, validate.new_task({"user_prompt": "refused once"}))
    with db.write() as session:
        row = session.get(Task, task.id)
        assert row is not None
        store.set_state(session, row, "rejected")
        row.failure_reason = "upstream refused: busy"
    return task.id


def _state(db: Database, task_id: int) -> str:
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task.state


@pytest.fixture
def make_app(make_settings: Callable[..., Settings], db: Database) -> Callable[..., Flask]:
    return lambda **overrides: create_app(make_settings(**overrides), db=db)


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app().test_client()


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
