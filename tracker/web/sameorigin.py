"""Only this site may drive the API: its own names in `Host`, its own origin on unsafe calls.

Without TRACKER_API_TOKEN the API trusts whoever reaches it, and a browser reaches it on
behalf of any page it shows. Three rules close that:

- `Host` must be one of this service's names (PUBLIC_BASE_URL's, localhost, 127.0.0.1):
  a DNS-rebinding page talks to us under its own name, so it gets 400 and reads nothing.
  Probes (/healthz, /readyz, /metrics) reach the service by address and are exempt.
- An unsafe API request must say `Content-Type: application/json`, even with no body:
  a cross-site form (or `fetch` with mode "no-cors") cannot send that type without a
  CORS preflight, which this service never grants. Anything else is 415.
- An unsafe API request that carries an `Origin` of another site is 403. Clients that are
  not browsers send no Origin and are not affected.

The port is not part of a name: a rebinding page uses its own host name whatever the port.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Flask, Response, request

from tracker.settings import Settings
from tracker.web.context import services
from tracker.web.errors import error

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HOST = re.compile(r"(?P<name>[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_name(host: str) -> str | None:
    """The name in a `Host` value (lower case, no port, no brackets), or None if malformed."""
    match = _HOST.match(host.strip().lower())
    if match is None:
        return None
    return match["name"].strip("[]").rstrip(".")


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


def check_host(names: frozenset[str]) -> Response | tuple[Response, int] | None:
    if request.path in EXEMPT_PATHS:
        return None
    name = host_name(request.host)
    if name is None or name not in names:
        return error(400, "unknown Host: this service answers to its own names only", "Host")
    return None


def check_api_request() -> Response | tuple[Response, int] | None:
    if request.method in SAFE_METHODS or not request.path.startswith("/api/"):
        return None
    if request.routing_exception is not None:
        return None  # no such route or method: its 404 or 405 says more, and runs nothing
    if foreign_origin():
        return error(403, "requests from other sites are refused", "Origin")
    if not request.is_json:
        return error(415, "send Content-Type: application/json (the body may be empty)")
    return None


def init_app(app: Flask) -> None:
    """Register the checks; call after the body-size check (413 is decided first)."""
    names = own_names(app.extensions["tracker"].settings)
    app.before_request(lambda: check_host(names))
    app.before_request(check_api_request)
