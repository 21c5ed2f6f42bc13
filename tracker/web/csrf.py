"""The dashboard's session: its signing key, its cookie, the CSRF token and the login mark.

- The key is TRACKER_SECRET_KEY; else derived from TRACKER_API_TOKEN (every process and
  every machine that shares the token agrees, and changing the token signs everyone out);
  else a random key kept in `instance/secret_key` beside the database, created once
  atomically so that several gunicorn workers end up with the same one.
- Every form carries a token bound to the session; a POST without the right one gets 400
  before the view runs, so it changes nothing. Tokens are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from datetime import timedelta
from pathlib import Path

from flask import Flask, abort, g, request, session
from sqlalchemy.engine import make_url

from ..settings import Settings
from . import logins
from .context import services

log = logging.getLogger(__name__)

FIELD = "csrf_token"
_SESSION_KEY = "csrf"
_AUTH_KEY = "auth"
_SIGN_IN_KEY = "sign_in"


# -- the signing key ------------------------------------------------------------------------


def key_file(settings: Settings) -> Path:
    """`secret_key` beside a SQLite database file, else in ./instance."""
    if settings.is_sqlite:
        database = make_url(settings.database_url).database
        if database and database != ":memory:":
            return Path(database).resolve().parent / "secret_key"
    return Path.cwd() / "instance" / "secret_key"


def _read_or_create(path: Path) -> str:
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    # write a private temporary file, then link it into place: of several processes starting
    # together exactly one link succeeds, and every one of them reads the winner's key
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_hex(32))
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_text().strip()


def secret_key(settings: Settings) -> str:
    if settings.secret_key:
        return settings.secret_key
    if settings.api_token:
        return hmac.new(
            settings.api_token.encode(), b"tracker dashboard session key", hashlib.sha256
        ).hexdigest()
    path = key_file(settings)
    try:
        return _read_or_create(path)
    except OSError as exc:
        log.warning(
            "cannot keep a session key in %s (%s): using one for this process only; "
            "set TRACKER_SECRET_KEY when running several processes",
            path,
            exc.strerror or type(exc).__name__,
        )
        return secrets.token_hex(32)


def init_app(app: Flask, settings: Settings) -> None:
    if not app.secret_key:
        app.secret_key = secret_key(settings)
    # HttpOnly, SameSite=Lax and Secure (behind https) are set by web/security.py
    app.config["SESSION_COOKIE_NAME"] = "tracker_session"
    # the cookie lasts as long as a sign-in may (logins.py enforces it server-side); using it
    # does not extend it
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(seconds=settings.session_lifetime)
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    app.jinja_env.globals["csrf_token"] = token
    app.jinja_env.globals["csrf_field"] = FIELD


# -- CSRF -----------------------------------------------------------------------------------


def token() -> str:
    """This session's token, made on first use (a page with a form)."""
    value = session.get(_SESSION_KEY)
    if not isinstance(value, str) or len(value) < 32:
        value = secrets.token_urlsafe(32)
        session[_SESSION_KEY] = value
    return value


def valid(given: str | None) -> bool:
    expected = session.get(_SESSION_KEY)
    if not isinstance(expected, str) or not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def protect() -> None:
    """Refuse (400) any unsafe request whose form lacks this session's token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    if not valid(request.form.get(FIELD)):
        abort(400, description="csrf")


# -- the login mark -------------------------------------------------------------------------
#
# Two things make a session signed in: a mark bound to the token (changing TRACKER_API_TOKEN
# signs everyone out) and a live server-side sign-in (`logins`: logout and the absolute
# lifetime end it for good, restarts do not revive it).


def _mark(api_token: str, key: str | bytes) -> str:
    key_bytes = key.encode() if isinstance(key, str) else key
    return hmac.new(key_bytes, b"signed in with " + api_token.encode(), hashlib.sha256).hexdigest()


def sign_in(app: Flask, api_token: str) -> None:
    session.clear()  # a fresh session (and CSRF token) after signing in
    g.pop("tracker_signed_in", None)
    settings = services().settings
    session[_SIGN_IN_KEY] = logins.start(services().db, settings.session_lifetime)
    session[_AUTH_KEY] = _mark(api_token, app.secret_key or "")
    session["authenticated"] = True  # what web/media.py looks for
    session.permanent = True


def signed_in(app: Flask, api_token: str) -> bool:
    if "tracker_signed_in" in g:  # asked by the guard and again by a view: one lookup
        return bool(g.tracker_signed_in)
    mark = session.get(_AUTH_KEY)
    sign_in_id = session.get(_SIGN_IN_KEY)
    result = (
        isinstance(mark, str)
        and isinstance(sign_in_id, str)
        and hmac.compare_digest(mark.encode(), _mark(api_token, app.secret_key or "").encode())
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
