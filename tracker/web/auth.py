"""Who may in: the admin token, the dashboard's sign-in that stands for it, and the limit on
wrong guesses.

When TRACKER_API_TOKEN is set, the API and the dashboard ask for it. The API takes it as a
Bearer header; pages take it as HTTP Basic too, or from a session signed in at /login.

Two things make a session signed in: a mark bound to the token (changing TRACKER_API_TOKEN
signs everyone out, even with a fixed TRACKER_SECRET_KEY) and a live server-side sign-in.
A signed cookie alone cannot be taken back: one captured before logout would work after
it, and after restarts. So a sign-in is a row (table `sign_ins`), named in the cookie by a
random id whose SHA-256 is the row's key; logging out deletes the row, and a row past its
absolute lifetime (TRACKER_SESSION_LIFETIME, 12 hours by default) counts for nothing,
however often the cookie is used. Expired rows are swept at each sign-in.

Failed attempts are limited per client address: guessing the token is not free. The three
ways in (the login form, a Bearer token, HTTP Basic) share one budget per address: after
FAILURES wrong tokens within WINDOW_SECONDS, every attempt that carries a token gets 429
with Retry-After, without the token being compared, until the oldest failure leaves the
window. Only failures count, so a client that knows the token is never slowed down, and a
browser already signed in (its session cookie) is never refused. The counters are limits'
moving window in this process's memory: with several gunicorn processes an address gets the
budget once per process, still a few dozen guesses a minute rather than hundreds a second.
The address is the one ProxyFix settled on (TRACKER_TRUSTED_PROXIES), so behind a proxy it
is the client's, not the proxy's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import time
from datetime import timedelta

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import delete
from werkzeug.exceptions import TooManyRequests
from werkzeug.wrappers import Response

from tracker.db import Database
from tracker.tasks.models import SignIn, utcnow
from tracker.web import error, services
from tracker.web.pages import safe_next

FAILURES = 10
WINDOW_SECONDS = 60
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
    before_attempt()
    if given is not None and _matches(given, expected):
        return True
    attempt_failed()
    return False


def require_bearer() -> ResponseReturnValue | None:
    """None when the request carries the token as Bearer (or none is set), else the 401."""
    if request_has_token(basic=False):
        return None
    response, status = error(401, "missing or wrong token (Authorization: Bearer <token>)")
    response.headers["WWW-Authenticate"] = 'Bearer realm="tracker"'
    return response, status


def _basic_password(value: str) -> str | None:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]


# -- failed attempts ------------------------------------------------------------------------


class FailedAttempts:
    """One app's counters of wrong tokens, by client address."""

    def __init__(self, failures: int = FAILURES, window_seconds: int = WINDOW_SECONDS) -> None:
        self.item = RateLimitItemPerSecond(failures, window_seconds)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None if it may try now."""
        if self.limiter.test(self.item, address):
            return None
        reset = self.limiter.get_window_stats(self.item, address).reset_time
        return max(1, math.ceil(reset - time.time()))

    def failed(self, address: str) -> None:
        self.limiter.hit(self.item, address)


def init_app(app: Flask) -> None:
    app.extensions["tracker_failed_attempts"] = FailedAttempts()


def _counters() -> FailedAttempts:
    counters = current_app.extensions["tracker_failed_attempts"]
    if not isinstance(counters, FailedAttempts):
        raise RuntimeError("the failed-attempt counters are set up by auth.init_app")
    return counters


def _address() -> str:
    return request.remote_addr or "unknown"


def before_attempt() -> None:
    """Raise 429 (with Retry-After) if this client used up its failures; call before comparing."""
    wait = _counters().retry_after(_address())
    if wait is not None:
        raise TooManyRequests(
            description="too many wrong tokens from this address; try again later",
            retry_after=wait,
        )


def attempt_failed() -> None:
    """Count one wrong token for this client (once per request, however many checks ran)."""
    if g.get("tracker_attempt_failed"):
        return
    g.tracker_attempt_failed = True
    _counters().failed(_address())


# -- the sign-in ----------------------------------------------------------------------------


def _hash(sign_in_id: str) -> str:
    return hashlib.sha256(sign_in_id.encode()).hexdigest()


def _start_sign_in(db: Database, lifetime_seconds: float) -> str:
    """Record a new sign-in; return its id, for the session cookie."""
    sign_in_id = secrets.token_urlsafe(32)
    now = utcnow()
    with db.write() as db_session:
        db_session.execute(delete(SignIn).where(SignIn.expires_at <= now))
        db_session.add(
            SignIn(
                id_hash=_hash(sign_in_id),
                created_at=now,
                expires_at=now + timedelta(seconds=lifetime_seconds),
            )
        )
    return sign_in_id


def _sign_in_alive(db: Database, sign_in_id: str) -> bool:
    with db.read() as db_session:
        row = db_session.get(SignIn, _hash(sign_in_id))
        return row is not None and row.expires_at > utcnow()


def _mark(api_token: str) -> str:
    key = current_app.secret_key or ""
    key_bytes = key.encode() if isinstance(key, str) else key
    return hmac.new(key_bytes, b"signed in with " + api_token.encode(), hashlib.sha256).hexdigest()


def sign_in(api_token: str) -> None:
    session.clear()  # a fresh session (and CSRF token) after signing in
    g.pop("tracker_signed_in", None)
    settings = services().settings
    session[_SIGN_IN_KEY] = _start_sign_in(services().db, settings.session_lifetime)
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
        and _sign_in_alive(services().db, sign_in_id)
    )
    g.tracker_signed_in = result
    return result


def sign_out() -> None:
    sign_in_id = session.get(_SIGN_IN_KEY)
    if isinstance(sign_in_id, str):
        with services().db.write() as db_session:
            db_session.execute(delete(SignIn).where(SignIn.id_hash == _hash(sign_in_id)))
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
    target = safe_next(request.values.get("next"), url_for("dashboard.index"))
    if not token or allowed():
        return redirect(target)
    problem = None
    if request.method == "POST":
        before_attempt()  # 429 once this address guessed wrong too often
        given = request.form.get("token", "")
        if given and _matches(given, token):
            sign_in(token)
            return redirect(target, code=303)
        attempt_failed()
        problem = "That is not the token. It is the value of TRACKER_API_TOKEN."
    status = 401 if problem else 200
    return render_template("login.html", error=problem, next=target), status


def logout() -> Response:
    sign_out()
    return redirect(url_for("dashboard.login"), code=303)


def add_views(bp: Blueprint) -> None:
    """/login and /logout, on the dashboard's blueprint: its pages, its errors, its guard."""
    bp.add_url_rule("/login", "login", login, methods=["GET", "POST"])
    bp.add_url_rule("/logout", "logout", logout, methods=["POST"])
