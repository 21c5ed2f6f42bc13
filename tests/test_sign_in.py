"""Signing in to the dashboard: the admin token (the login form, HTTP Basic or Bearer), where
signing in leads, how guessing the token is limited, and how a session ends (logout, its
absolute lifetime, a changed token or signing key).

Flask's test client for the pages; the app in a real server thread where a cookie is replayed
or the process restarts (issue 9, items 1, 6 and 7: each of those tests failed before its fix).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from tests.support.dashboard import add_task, csrf_of, get
from tests.support.servers import LiveServer
from tracker.db import Database
from tracker.settings import Settings
from tracker.tasks.models import SignIn, utcnow
from tracker.web.app import create_app

TOKEN = "dashboard-admin-token-0123456789"
EVIL = "evil.example"

# targets that start with one slash but that a browser (or urlsplit, run by werkzeug on a
# Location) reads as another site, or that cannot be put in a header at all
OFF_SITE_TARGETS = [
    f"/\t/{EVIL}",
    f"/\n/{EVIL}",
    f"/\r\n/{EVIL}",
    f"\t//{EVIL}",
    f"/\\/{EVIL}",
    f"\\\\{EVIL}",
    f"/\x00/{EVIL}",
    f"https:/\t/{EVIL}",
    "/\n/x",
]
LOCAL_TARGETS = ["/tasks/new?source=up-1", "/?state=failed&q=harbour", "/tasks/7"]


# -- the token --------------------------------------------------------------------------------


def test_without_a_token_the_dashboard_is_open(client: FlaskClient) -> None:
    assert get(client, "/")[0] == 200
    response = client.get("/login")
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_with_a_token_the_dashboard_asks_for_it(
    make_app: Callable[..., Flask], db: Database
) -> None:
    task_id = add_task(db, state="completed")
    app = make_app(api_token=TOKEN)
    client = app.test_client()
    for path in ("/", f"/tasks/{task_id}", "/tasks/new", "/?state=failed&q=x"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next=")
    assert client.get("/", headers={"X-Live": "1"}).status_code == 401
    # never asked: health, callbacks, static files; the API answers 401 on its own
    assert client.get("/healthz").status_code == 200
    assert client.post("/callbacks/luma/not-a-token", json={"id": "x"}).status_code == 404
    assert client.get("/assets/dashboard.css").status_code == 200
    assert client.get("/api/tasks").status_code == 401

    _, page = get(client, "/login?next=/tasks/new")
    response = client.post(
        "/login", data={"csrf_token": csrf_of(page), "token": "wrong", "next": "/tasks/new"}
    )
    assert response.status_code == 401 and "That is not the token" in response.get_data(True)
    assert client.get("/").status_code == 302
    response = client.post(
        "/login", data={"csrf_token": csrf_of(page), "token": TOKEN, "next": "/tasks/new"}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/tasks/new"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and TOKEN not in cookie
    status, page = get(client, "/")
    assert status == 200 and "Sign out" in page and TOKEN not in page
    # signing out ends it
    response = client.post("/logout", data={"csrf_token": csrf_of(page)})
    assert response.status_code == 303
    assert client.get("/").status_code == 302


def test_http_basic_or_bearer_with_the_token_opens_the_dashboard(
    make_app: Callable[..., Flask],
) -> None:
    client = make_app(api_token=TOKEN).test_client()
    basic = base64.b64encode(f"admin:{TOKEN}".encode()).decode()
    assert client.get("/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    wrong = base64.b64encode(b"admin:nope").decode()
    assert client.get("/", headers={"Authorization": f"Basic {wrong}"}).status_code == 302


def test_a_changed_token_signs_everyone_out(make_app: Callable[..., Flask]) -> None:
    app = make_app(api_token=TOKEN, secret_key="a-fixed-secret-key-for-this-test")
    client = app.test_client()
    _, page = get(client, "/login")
    client.post("/login", data={"csrf_token": csrf_of(page), "token": TOKEN})
    assert client.get("/").status_code == 200
    other = make_app(api_token=TOKEN + "-new", secret_key="a-fixed-secret-key-for-this-test")
    cookie = client.get_cookie("tracker_session")
    assert cookie is not None
    fresh = other.test_client()
    fresh.set_cookie("tracker_session", cookie.value)
    assert fresh.get("/").status_code == 302


# -- where signing in leads: never off site (issue 9, item 1) ---------------------------------


def test_login_never_redirects_off_site(make_app: Callable[..., Flask]) -> None:
    client = make_app(api_token=TOKEN).test_client()
    _, page = get(client, "/login")
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        response = client.post(
            "/login", data={"csrf_token": csrf_of(page), "token": TOKEN, "next": target}
        )
        assert response.headers["Location"] == "/", target
        client.post("/logout", data={"csrf_token": csrf_of(get(client, "/")[1])})
        _, page = get(client, "/login")


@pytest.mark.parametrize("target", OFF_SITE_TARGETS)
def test_signing_in_never_sends_the_browser_off_site(
    make_app: Callable[..., Flask], target: str
) -> None:
    client = make_app(api_token=TOKEN).test_client()
    response = client.get("/login", query_string={"next": target})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    hidden = re.search(r'name="next" value="([^"]*)"', page)
    assert hidden and hidden.group(1) == "/"
    response = client.post(
        "/login", data={"csrf_token": csrf_of(page), "token": TOKEN, "next": target}
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    # signed in already: /login sends the browser on at once, to the same safe place
    response = client.get("/login", query_string={"next": target})
    assert response.status_code == 302 and response.headers["Location"] == "/"


@pytest.mark.parametrize("target", OFF_SITE_TARGETS)
def test_without_a_token_login_sends_on_only_to_this_site(client: FlaskClient, target: str) -> None:
    response = client.get("/login", query_string={"next": target})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_the_raw_query_strings_of_the_report_redirect_home(client: FlaskClient) -> None:
    for path in (f"/login?next=/%09/{EVIL}", "/login?next=/%0a/x"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"] == "/", path


@pytest.mark.parametrize("target", LOCAL_TARGETS)
def test_a_path_on_this_site_is_still_where_signing_in_leads(
    make_app: Callable[..., Flask], target: str
) -> None:
    client = make_app(api_token=TOKEN).test_client()
    _, page = get(client, "/login", query_string={"next": target})
    response = client.post(
        "/login", data={"csrf_token": csrf_of(page), "token": TOKEN, "next": target}
    )
    assert response.status_code == 303 and response.headers["Location"] == target


# -- guessing is limited (issue 9, item 6) ----------------------------------------------------


def login_page(session: requests.Session, base: str) -> str:
    return csrf_of(session.get(f"{base}/login", headers={"Accept": "text/html"}, timeout=5).text)


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


def test_wrong_bearer_tokens_get_429_after_a_burst(live: Callable[..., LiveServer]) -> None:
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


def test_login_form_and_basic_share_the_limit(live: Callable[..., LiveServer]) -> None:
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


# -- sessions end (issue 9, item 7) -----------------------------------------------------------


def fixed_app(live: Callable[..., LiveServer], **overrides: Any) -> LiveServer:
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


def test_logout_ends_the_session_for_good(live: Callable[..., LiveServer], db: Database) -> None:
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


def test_a_session_has_an_absolute_lifetime(live: Callable[..., LiveServer], db: Database) -> None:
    app = fixed_app(live).url
    browser = requests.Session()
    signed_in = sign_in(browser, app)
    assert (
        "Max-Age=43200" in signed_in.headers["Set-Cookie"]
        or "Expires=" in (signed_in.headers["Set-Cookie"])
    )
    with db.read() as session:
        (row,) = session.scalars(select(SignIn)).all()
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


# -- the session key --------------------------------------------------------------------------


def test_without_a_secret_key_every_process_gets_the_same_one(
    make_settings: Callable[..., Settings], db: Database, tmp_path: Any, monkeypatch: Any
) -> None:
    from tracker.web import security as sessions

    monkeypatch.chdir(tmp_path)  # PostgreSQL keeps it in ./instance
    settings = make_settings()
    first = create_app(settings, db=db)
    second = create_app(settings, db=db)
    assert first.secret_key and first.secret_key == second.secret_key
    path = sessions.key_file(settings)
    assert path.read_text().strip() == first.secret_key
    assert path.stat().st_mode & 0o077 == 0
    # with the admin token set, it is derived from it: no file needed
    with_token = make_settings(api_token=TOKEN)
    assert create_app(with_token, db=db).secret_key == create_app(with_token, db=db).secret_key
    assert create_app(with_token, db=db).secret_key != first.secret_key


def test_a_cookie_signed_with_another_key_is_not_trusted(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(api_token=TOKEN, secret_key="key-one-key-one-key-one-key-one")
    client = app.test_client()
    _, page = get(client, "/login")
    client.post("/login", data={"csrf_token": csrf_of(page), "token": TOKEN})
    cookie = client.get_cookie("tracker_session")
    assert cookie is not None
    stranger = make_app(api_token=TOKEN, secret_key="key-two-key-two-key-two-key-two").test_client()
    stranger.set_cookie("tracker_session", cookie.value)
    assert stranger.get("/").status_code == 302
