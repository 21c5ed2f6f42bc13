"""The notify_url rule: a task's own webhook target, an http(s) URL that resolves to public
addresses only. Its check reaches the network (the address guard resolves the host), which
no other field's does, so it stands apart from `fields`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationInfo, WithJsonSchema

from tracker.flows.fields import problem

MAX_NOTIFY_URL = 2000


def check_notify_url(field: str, value: Any, allow_private: bool) -> str:
    """An http(s) URL whose host resolves to public addresses only (the address guard).

    Any API caller may set one, so a URL aimed inside (loopback, private, link-local, ...) is
    refused here, and checked again at every attempt (`webhooks.sender`). `allow_private` is
    TRACKER_NOTIFY_ALLOW_PRIVATE (development). Messages name the host, never the URL.
    """
    from urllib.parse import urlsplit

    from tracker.storage import netguard

    if not isinstance(value, str):
        raise problem(f"{field} must be a string")
    url = value.strip()
    if len(url) > MAX_NOTIFY_URL:
        raise problem(f"{field} is longer than {MAX_NOTIFY_URL} characters")
    if not url.isascii() or any(ch <= " " or ch == "\x7f" for ch in url):
        raise problem(f"{field} must be a URL without spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise problem(f"{field} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise problem(f"{field} must be an http:// or https:// URL")
    try:
        netguard.pinned_session_for(url, netguard.Guard(allow_private=allow_private)).close()
    except netguard.FetchError as exc:  # FetchRefused too
        raise problem(f"{field}: {exc}") from None
    return url


def _notify_url(value: Any, info: ValidationInfo) -> Any:
    if value is None or value == "":
        return None
    allow = bool((info.context or {}).get("notify_allow_private"))
    return check_notify_url(str(info.field_name), value, allow)


NotifyUrl = Annotated[
    str | None,
    BeforeValidator(_notify_url),
    WithJsonSchema(
        {
            # what every server accepts; a URL is taken when its host resolves to public
            # addresses only, which no schema can say (the fuzzer would call its names valid)
            "enum": ["", None],
            "description": "this task's own webhook target: an http(s) URL (at most "
            f"{MAX_NOTIFY_URL} characters) whose host resolves to public addresses only, "
            "else a 400 naming notify_url; null or empty: none",
        }
    ),
]
