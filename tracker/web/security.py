"""HTTP hardening: headers on every answer, cookie flags, body-size limits, proxy headers.

Pages carry a Content-Security-Policy without inline script, so markup that a
user or the upstream slipped into a prompt cannot run even if escaping failed.
Behind TRACKER_TRUSTED_PROXIES reverse proxies, the client's address, scheme and host
are the ones the nearest proxy saw (werkzeug's ProxyFix); with 0 (the default) the
X-Forwarded-* headers are ignored, since any client can send them.
"""

from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from tracker.web import sameorigin, throttle
from tracker.web.context import services

# every answer's headers (the callback route's fast path sends these itself, web/hooks.py).
# Referrer-Policy same-origin: our own forms carry a Referer (Flask-WTF asks for one over
# https, see sessions.py) and their real Origin; no other site learns our URLs, which hold
# task ids and search terms
HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
)


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


def init_app(app: Flask) -> None:
    settings = app.extensions["tracker"].settings
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_base_url.startswith("https://"),
    )
    csp = content_security_policy(allow_http_media=settings.media_allow_private)
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        proxied = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
        # Flask documents this assignment as the way to add WSGI middleware, but types wsgi_app
        # as a method, which mypy will not let be assigned
        app.wsgi_app = proxied  # type: ignore[method-assign]  # Flask's documented hook

    @app.before_request
    def limit_body() -> None:
        # callbacks are small; the API takes base64 images (TRACKER_MAX_BODY_BYTES)
        # (one byte more than allowed, so that the route can tell "too long" from "exactly
        # at the limit" on a chunked body, which werkzeug cuts silently at the maximum)
        if request.path.startswith("/callbacks/"):
            request.max_content_length = services().settings.max_callback_bytes + 1
        # a declared length past the limit is refused before any other check (and unread)
        limit = request.max_content_length
        if limit is not None and (request.content_length or 0) > limit:
            raise RequestEntityTooLarge()

    sameorigin.init_app(app)
    throttle.init_app(app)

    @app.after_request
    def harden(response: Response) -> Response:
        for name, value in HEADERS:
            response.headers.setdefault(name, value)
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", csp)
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response
