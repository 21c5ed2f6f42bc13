"""Which outside URLs may become a link or a redirect: decided on the parsed URL.

A check on the raw string is not enough. Browsers (and `urlsplit`, which werkzeug runs on
a `Location`) drop tabs and newlines anywhere in a URL and read a backslash as a slash, so
`/\\t/evil.example` passes "starts with one slash" and then leaves the site as
`//evil.example`. Here a URL holding a control character, whitespace or a backslash is
refused outright, and what remains is judged on its parsed parts:

- `local_path`: a path on this site (no scheme, no host), for the login's `next`;
- `web_link`: an absolute http(s) URL with a host, for URLs that users or the upstream
  gave (image_url, video_url, ...): only those become an href or a src.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

WEB_SCHEMES = ("http", "https")


def _parsed(value: object) -> SplitResult | None:
    """The parts of a URL with nothing a browser would rewrite before reading it, else None."""
    if not isinstance(value, str) or not value:
        return None
    # isprintable() is False for control and format characters and for every space but
    # " ", which isspace() catches (as it does the Unicode spaces)
    if not value.isprintable() or "\\" in value or any(c.isspace() for c in value):
        return None
    try:
        return urlsplit(value)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None


def local_path(value: object) -> str | None:
    """`value` when it is a path on this site (`/tasks/3?x=1`), else None."""
    if not isinstance(value, str):
        return None
    parts = _parsed(value)
    if parts is None or parts.scheme or parts.netloc:
        return None
    if not parts.path.startswith("/") or parts.path.startswith("//"):
        return None
    return value


def web_link(value: object) -> str | None:
    """`value` when it is an absolute http(s) URL naming a host, else None."""
    if not isinstance(value, str):
        return None
    parts = _parsed(value)
    if parts is None or parts.scheme.lower() not in WEB_SCHEMES:
        return None
    try:
        host = parts.hostname
    except ValueError:
        return None
    return value if host else None


def safe_next(target: object, fallback: str) -> str:
    """Where to go after signing in: `target` if it stays on this site, else `fallback`."""
    return local_path(target) or fallback
