"""The dashboard's session: its signing key, its cookie, and the CSRF check on its forms.

- The key is TRACKER_SECRET_KEY; else derived from TRACKER_API_TOKEN (every process and
  every machine that shares the token agrees, and changing the token signs everyone out);
  else a random key kept in `instance/secret_key` beside the database, created once
  atomically so that several gunicorn workers end up with the same one.
- Every form carries a `csrf_token` bound to the session (Flask-WTF's CSRFProtect); a POST
  without the right one gets 400 before the view runs, so it changes nothing. Three of its
  defaults do not fit this service and are set here: the API and the callbacks are exempt
  (they have their own rules, `sameorigin` and per-task tokens); a token lives as long as
  its session (whose sign-in has an absolute lifetime, `logins`) rather than one hour, so
  a form left open over lunch still works; and over https it asks for a same-origin
  `Referer`, which is why `security` sends `Referrer-Policy: same-origin`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

from flask import Blueprint, Flask
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.engine import make_url

from tracker import secretfile
from tracker.settings import Settings

log = logging.getLogger(__name__)


def key_file(settings: Settings) -> Path:
    """`secret_key` beside a SQLite database file, else in ./instance."""
    if settings.is_sqlite:
        database = make_url(settings.database_url).database
        if database and database != ":memory:":
            return Path(database).resolve().parent / "secret_key"
    return Path.cwd() / "instance" / "secret_key"


def secret_key(settings: Settings) -> str:
    if settings.secret_key:
        return settings.secret_key
    if settings.api_token:
        return hmac.new(
            settings.api_token.encode(), b"tracker dashboard session key", hashlib.sha256
        ).hexdigest()
    path = key_file(settings)
    try:
        return secretfile.read_or_create(path, lambda: secrets.token_hex(32))
    except OSError as exc:
        log.warning(
            "cannot keep a session key in %s (%s): using one for this process only; "
            "set TRACKER_SECRET_KEY when running several processes",
            path,
            exc.strerror or type(exc).__name__,
        )
        return secrets.token_hex(32)


def init_app(app: Flask, settings: Settings, *, exempt: Iterable[Blueprint]) -> None:
    """Set the key and the cookie, and check CSRF on every unsafe request but `exempt`'s.

    Call after `security.init_app`: a body too large (413) or a foreign Host (400) is
    refused before the form is read for its token.
    """
    if not app.secret_key:
        app.secret_key = secret_key(settings)
    # HttpOnly, SameSite=Lax and Secure (behind https) are set by web/security.py
    app.config["SESSION_COOKIE_NAME"] = "tracker_session"
    # the cookie lasts as long as a sign-in may (logins.py enforces it server-side); using it
    # does not extend it
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(seconds=settings.session_lifetime)
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    # the token lives as long as the session that holds it, not Flask-WTF's default hour
    app.config["WTF_CSRF_TIME_LIMIT"] = None
    app.config["WTF_CSRF_SSL_STRICT"] = True  # over https, a same-origin Referer as well
    csrf = CSRFProtect()
    for blueprint in exempt:
        csrf.exempt(blueprint)
    csrf.init_app(app)
