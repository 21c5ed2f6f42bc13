"""The admin token: when TRACKER_API_TOKEN is set, the API and the dashboard ask for it."""

from __future__ import annotations

import base64
import hmac

from flask import request

from .. import services


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
        return _matches(value.strip(), expected)
    if scheme.lower() == "basic" and basic:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        return _matches(decoded.partition(":")[2], expected)
    return False
