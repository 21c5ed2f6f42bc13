"""The admin token: when TRACKER_API_TOKEN is set, the API and the dashboard ask for it.

A request that carries a token from an address that guessed wrong too often gets 429
before its token is looked at; a wrong one counts against its address (`throttle`).
"""

from __future__ import annotations

import base64
import hmac

from flask import request

from . import throttle
from .context import services


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
