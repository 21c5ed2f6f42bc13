"""HTTP hardening: what every request is checked for, and what every answer carries.

- Headers on every answer. Pages carry a Content-Security-Policy without inline script, so
  markup that a user or the upstream slipped into a prompt cannot run even if escaping failed.
- Body-size limits, decided before anything reads the body.
- Only this site may drive the API (`check_host`, `check_api_request`, below).
- The dashboard's session: its signing key, its cookie, and the CSRF check on its forms
  (`init_app`, `secret_key`).

Behind TRACKER_TRUSTED_PROXIES reverse proxies, the client's address, scheme and host are
the ones the nearest proxy saw (werkzeug's ProxyFix, put in place by app.py); with 0 (the
default) the X-Forwarded-* headers are ignored, since any client can send them.

Only this site may drive the API. Without TRACKER_API_TOKEN the API trusts whoever reaches
it, and a browser reaches it on behalf of any page it shows. Three rules close that:

- `Host` must be one of this service's names (PUBLIC_BASE_URL's, localhost, 127.0.0.1):
  a DNS-rebinding page talks to us under its own name, so it gets 400 and reads nothing.
  Probes (/healthz, /readyz, /metrics) reach the service by address and are exempt. The
  port is not part of a name: a rebinding page uses its own host name whatever the port.
  Behind trusted proxies both names are checked (`addressed_to_us`): the one the app uses
  (X-Forwarded-Host, as ProxyFix put it in place) and the Host the proxy passed on, so a
  rebinding page cannot forge an X-Forwarded-Host of ours past a proxy that passes the
  client's Host and leaves that header as it came (issue 23; docs/operations.md's proxy sets it).
- An unsafe API request must say `Content-Type: application/json`, even with no body:
  a cross-site form (or `fetch` with mode "no-cors") cannot send that type without a
  CORS preflight, which this service never grants. Anything else is 415.
- An unsafe API request that carries an `Origin` of another site is 403. Clients that are
  not browsers send no Origin and are not affected.

The session's key is TRACKER_SECRET_KEY; else derived from TRACKER_API_TOKEN (every process
and every machine that shares the token agrees, and changing the token signs everyone out);
else a random key kept in `instance/secret_key` beside the database, created once atomically
so that several gunicorn workers end up with the same one. Every form carries a `csrf_token`
bound to the session (Flask-WTF's CSRFProtect, set up in app.py); a POST without the right
one gets 400 before the view runs, so it changes nothing. Three of its defaults do not fit
this service and are set here: the API and the callbacks are exempt (they have their own
rules: the ones above, and per-task tokens); a token lives as long as its session (whose
sign-in has an absolute lifetime, auth.py) rather than one hour, so a form left open over
lunch still works; and over https it asks for a same-origin `Referer`, which is why every
answer carries `Referrer-Policy: same-origin`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, request
from sqlalchemy.engine import make_url
from werkzeug.exceptions import RequestEntityTooLarge

from tracker import signing
from tracker.settings import Settings
from tracker.web import error, services

log = logging.getLogger(__name__)

# every answer's headers (the callback route's fast path sends these itself, callbacks.py).
# Referrer-Policy same-origin: our own forms carry a Referer (Flask-WTF asks for one over
# https) and their real Origin; no other site learns our URLs, which hold task ids and
# search terms
HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
)
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HOST = re.compile(r"(?P<name>[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}

Refusal = Response | tuple[Response, int] | None


def content_security_policy(*, allow_http_media: bool) -> str:
    # thumbnails and videos come from the upstream's CDN until archived; the simulator
    # that `make run` starts serves them over plain http on 127.0.0.1
    remote = "https: http:" if allow_http_media else "https:"
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' data: {remote}",
            f"media-src 'self' {remote}",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def harden(settings: Settings) -> Callable[[Response], Response]:
    """The after-request hook that adds the headers every answer carries."""
    csp = content_security_policy(allow_http_media=settings.media_allow_private)

    def add_headers(response: Response) -> Response:
        for name, value in HEADERS:
            response.headers.setdefault(name, value)
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", csp)
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    return add_headers


def limit_body() -> None:
    """A declared length past the limit is refused (413) before any other check, unread."""
    # callbacks are small; the API takes base64 images (TRACKER_MAX_BODY_BYTES)
    # (one byte more than allowed, so that the route can tell "too long" from "exactly
    # at the limit" on a chunked body, which werkzeug cuts silently at the maximum)
    if request.path.startswith("/callbacks/"):
        request.max_content_length = services().settings.max_callback_bytes + 1
    limit = request.max_content_length
    if limit is not None and (request.content_length or 0) > limit:
        raise RequestEntityTooLarge()


# -- only this site drives the API ----------------------------------------------------------


def host_name(host: str) -> str | None:
    """The name in a `Host` value (lower case, no port, no brackets), or None if malformed."""
    match = _HOST.match(host.strip().lower())
    if match is None:
        return None
    return match["name"].strip("[]").rstrip(".")


def addressed_to_us(host: str, environ: Mapping[str, Any], names: frozenset[str]) -> bool:
    """Whether `host`, the one the app uses, is one of `names`, and so is the Host a trusted
    proxy passed on (ProxyFix keeps it), unless that is an address or a single label: a proxy
    that names us its own way (`proxy_pass http://127.0.0.1:8000`, `http://web:8000`) and
    forwards the client's host in X-Forwarded-Host. A rebinding page's name has dots."""
    if host_name(host) not in names:
        return False
    passed = (environ.get("werkzeug.proxy_fix.orig") or {}).get("HTTP_HOST")
    if not passed:
        return True  # no proxy in front (or none that sent a Host): `host` is the Host
    name = host_name(passed)
    if name is None:
        return False
    if name in names or "." not in name:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False  # another site's name: the client's own Host, passed on
    return True


def own_names(settings: Settings) -> frozenset[str]:
    names = set(LOCAL_NAMES)
    if settings.public_base_url:
        public = urlsplit(settings.public_base_url).hostname
        if public:
            names.add(public.rstrip("."))
    return frozenset(names)


def _origin(url: str) -> str | None:
    """scheme://host[:port] with the default port left out, or None if it is not http(s)."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def own_origins(settings: Settings) -> frozenset[str]:
    """This request's own origin (as the client addressed it) and PUBLIC_BASE_URL's."""
    origins = {_origin(f"{request.scheme}://{request.host}")}
    if settings.public_base_url:
        origins.add(_origin(settings.public_base_url))
    return frozenset(origin for origin in origins if origin)


def foreign_origin() -> bool:
    given = request.headers.get("Origin")
    if given is None:
        return False  # not a browser, or a browser that says it is same-origin (old ones)
    if given.strip() == "null":
        # an opaque origin: a sandboxed frame, a file:// or data: page, a redirect across
        # sites. Our pages send `Referrer-Policy: same-origin`, so their own requests carry
        # their real Origin; but a page cached under the former `no-referrer` (or a browser
        # set to strip it) sends "null" on same-origin requests too. Sec-Fetch-Site tells
        # them apart, and no page's script can set it
        return request.headers.get("Sec-Fetch-Site") != "same-origin"
    origin = _origin(given)
    return origin is None or origin not in own_origins(services().settings)


def check_host(settings: Settings) -> Callable[[], Refusal]:
    """The before-request hook that answers 400 to a `Host` that is not one of our names."""
    names = own_names(settings)

    def host_is_ours() -> Refusal:
        if request.path in EXEMPT_PATHS:
            return None
        if not addressed_to_us(request.host, request.environ, names):
            return error(400, "unknown Host: this service answers to its own names only", "Host")
        return None

    return host_is_ours


def check_api_request() -> Refusal:
    if request.method in SAFE_METHODS or not request.path.startswith("/api/"):
        return None
    if request.routing_exception is not None:
        return None  # no such route or method: its 404 or 405 says more, and runs nothing
    if foreign_origin():
        return error(403, "requests from other sites are refused", "Origin")
    if not request.is_json:
        return error(415, "send Content-Type: application/json (the body may be empty)")
    return None


# -- the session's key and cookie -----------------------------------------------------------


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
        return signing.read_or_create(path, lambda: secrets.token_hex(32))
    except OSError as exc:
        log.warning(
            "cannot keep a session key in %s (%s): using one for this process only; "
            "set TRACKER_SECRET_KEY when running several processes",
            path,
            exc.strerror or type(exc).__name__,
        )
        return secrets.token_hex(32)


def init_app(app: Flask, settings: Settings) -> None:
    """The session's key and cookie, and Flask-WTF's CSRF settings."""
    if not app.secret_key:
        app.secret_key = secret_key(settings)
    app.config.update(
        SESSION_COOKIE_NAME="tracker_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_base_url.startswith("https://"),
        # the cookie lasts as long as a sign-in may (auth.py enforces it server-side); using
        # it does not extend it
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.session_lifetime),
        SESSION_REFRESH_EACH_REQUEST=False,
        # the token lives as long as the session that holds it, not Flask-WTF's default hour
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SSL_STRICT=True,  # over https, a same-origin Referer as well
    )
