"""Who may in: the admin token, and the dashboard's sign-in that stands for it.

When TRACKER_API_TOKEN is set, the API and the dashboard ask for it. The API takes it as a
Bearer header; pages take it as HTTP Basic too, or from a session signed in at /login.

A request that carries a token from an address that guessed wrong too often gets 429
before its token is looked at; a wrong one counts against its address (`throttle`).

Two things make a session signed in: a mark bound to the token (changing TRACKER_API_TOKEN
signs everyone out, even with a fixed TRACKER_SECRET_KEY) and a live server-side sign-in
(`logins`: logout and the absolute lifetime end it for good, restarts do not revive it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from tracker.web import links, logins, throttle
from tracker.web.context import services

_AUTH_KEY = "auth"  # base.html shows "Sign out" when it is there
_SIGN_IN_KEY = "sign_in"


def _matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def request_has_token(*, basic: bool = True) -> bool:
    """Bearer token, or (for pages) HTTP Basic with the token as the password.

    The API takes Bearer only: a browser replays cached Basic credentials on cross-site
    requests, a Bearer header it never adds by itself.
    """
    expected = services().settings.api_token
    if not expected:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        given: str | None = value.strip()
    elif scheme.lower() == "basic" and basic:
        given = _basic_password(value)
    else:
        return False  # no token offered: not an attempt
    throttle.before_attempt()
    if given is not None and _matches(given, expected):
        return True
    throttle.attempt_failed()
    return False


def _basic_password(value: str) -> str | None:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]


# -- the sign-in ----------------------------------------------------------------------------


def _mark(api_token: str) -> str:
    key = current_app.secret_key or ""
    key_bytes = key.encode() if isinstance(key, str) else key
    return hmac.new(key_bytes, b"signed in with " + api_token.encode(), hashlib.sha256).hexdigest()


def sign_in(api_token: str) -> None:
    session.clear()  # a fresh session (and CSRF token) after signing in
    g.pop("tracker_signed_in", None)
    settings = services().settings
    session[_SIGN_IN_KEY] = logins.start(services().db, settings.session_lifetime)
    session[_AUTH_KEY] = _mark(api_token)
    session["authenticated"] = True  # what web/media.py looks for
    session.permanent = True


def signed_in(api_token: str) -> bool:
    """This session signed in with this very token, and its sign-in is still alive."""
    if "tracker_signed_in" in g:  # asked by the guard and again by a view: one lookup
        return bool(g.tracker_signed_in)
    mark = session.get(_AUTH_KEY)
    sign_in_id = session.get(_SIGN_IN_KEY)
    result = (
        isinstance(mark, str)
        and isinstance(sign_in_id, str)
        and _matches(mark, _mark(api_token))
        and logins.alive(services().db, sign_in_id)
    )
    g.tracker_signed_in = result
    return result


def sign_out() -> None:
    sign_in_id = session.get(_SIGN_IN_KEY)
    if isinstance(sign_in_id, str):
        logins.end(services().db, sign_in_id)
    session.clear()
    g.pop("tracker_signed_in", None)


def allowed() -> bool:
    """May this request see the dashboard: no token set, signed in, or the token sent."""
    token = services().settings.api_token
    if not token:
        return True
    return signed_in(token) or request_has_token()


# -- the views ------------------------------------------------------------------------------


def login() -> Response | tuple[str, int]:
    token = services().settings.api_token
    target = links.safe_next(request.values.get("next"), url_for("dashboard.index"))
    if not token or allowed():
        return redirect(target)
    error = None
    if request.method == "POST":
        throttle.before_attempt()  # 429 once this address guessed wrong too often
        given = request.form.get("token", "")
        if given and _matches(given, token):
            sign_in(token)
            return redirect(target, code=303)
        throttle.attempt_failed()
        error = "That is not the token. It is the value of TRACKER_API_TOKEN."
    status = 401 if error else 200
    return render_template("login.html", error=error, next=target), status


def logout() -> Response:
    sign_out()
    return redirect(url_for("dashboard.login"), code=303)


def add_views(bp: Blueprint) -> None:
    """/login and /logout, on the dashboard's blueprint: its pages, its errors, its guard."""
    bp.add_url_rule("/login", "login", login, methods=["GET", "POST"])
    bp.add_url_rule("/logout", "logout", logout, methods=["POST"])
