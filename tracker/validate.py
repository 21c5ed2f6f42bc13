"""Check a submission (JSON API, dashboard form, CLI) before anything is stored or sent.

Each problem names its field, so a person can fix it; nothing half-valid is stored.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from . import dialects, netguard
from .lifecycle import NewTask

MAX_PROMPT = 5000
MAX_ID = 128
ASPECT_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "21:9", "9:21")
RESOLUTIONS = ("540p", "720p", "1080p", "4k")
# These patterns are also the OpenAPI document's (web/openapi.py): one rule, two readers.
DURATION_PATTERN = r"^[0-9]{1,3}s$"
# some text, no NUL character (user_prompt, model_name)
TEXT_PATTERN = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
# empty (not given), an http(s) URL, a data: URI, or bare base64 (32+ characters, may wrap)
IMAGE_PATTERN = (
    r"^(|https?://[!-~]{1,4000}|data:[A-Za-z0-9/+.-]+;base64,[A-Za-z0-9+/= \t\r\n]*"
    r"|[A-Za-z0-9+/_-][A-Za-z0-9+/_ \t\r\n-]{31,}={0,2})$"
)
_DURATION = re.compile(DURATION_PATTERN)
_ID = re.compile(ID_PATTERN)
IMAGE = re.compile(IMAGE_PATTERN)

COMMON_FIELDS = (
    "source_task_id",
    "user_prompt",
    "expand_prompt",
    "image_url",
    "image_end_url",
    "notify_url",
)
MAX_NOTIFY_URL = 2000
GENERATE_FIELDS = ("aspect_ratio", "loop", "resolution", "duration", "model_name")
# fields a submission may not carry because the tracker fills them (from the upstream's answers)
TRACKER_SETS = frozenset(
    {
        "notify_hook",
        "callback_url",
        "upstream",
        "state",
        "upstream_id",
        "progress",
        "estimate_wait_seconds",
        "video_url",
    }
)


class ValidationError(ValueError):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _storable(field: str, value: str) -> None:
    # no upstream wants a NUL in a prompt, and PostgreSQL text cannot hold one
    if "\x00" in value:
        raise ValidationError(field, f"{field} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON)
        raise ValidationError(field, f"{field} is not valid Unicode text") from None


def _string(body: dict[str, Any], field: str, *, limit: int) -> str | None:
    """An optional string: missing, null and "" mean not given; blank is an error."""
    value = body.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValidationError(field, f"{field} must be a string")
    _storable(field, value)
    value = value.strip()
    if not value:
        raise ValidationError(field, f"{field} must not be blank")
    if len(value) > limit:
        raise ValidationError(field, f"{field} is longer than {limit} characters")
    return value


def _boolean(body: dict[str, Any], field: str) -> bool | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ValidationError(field, f"{field} must be true or false")
    return value


def _image(body: dict[str, Any], field: str) -> str | None:
    value = _string(body, field, limit=15_000_000)
    if value is not None and not IMAGE.fullmatch(value):
        raise ValidationError(field, f"{field} must be an http(s) URL or base64 image data")
    return value


def _choice(body: dict[str, Any], field: str, choices: tuple[str, ...]) -> str | None:
    value = _string(body, field, limit=32)
    if value is not None and value not in choices:
        raise ValidationError(field, f"{field} must be one of {', '.join(choices)}")
    return value


def notify_url(value: Any, *, allow_private: bool = False, field: str = "notify_url") -> str | None:
    """A task's webhook target: an http(s) URL whose host resolves to public addresses only.

    Any API caller may set one, so a URL aimed inside (loopback, private, link-local, ...) is
    refused here, and checked again at every attempt (`webhooks.sender`).
    `allow_private` is TRACKER_NOTIFY_ALLOW_PRIVATE (development).
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValidationError(field, f"{field} must be a string")
    value = value.strip()
    if len(value) > MAX_NOTIFY_URL:
        raise ValidationError(field, f"{field} is longer than {MAX_NOTIFY_URL} characters")
    if not value.isascii() or any(ch <= " " or ch == "\x7f" for ch in value):
        raise ValidationError(field, f"{field} must be a URL without spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise ValidationError(field, f"{field} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(field, f"{field} must be an http:// or https:// URL")
    try:
        netguard.pinned_session_for(value, netguard.Guard(allow_private=allow_private)).close()
    except netguard.FetchError as exc:  # FetchRefused too: its words name the host, not the URL
        raise ValidationError(field, f"{field}: {exc}") from None
    return value


def new_task(body: Any, flavor: str = "proxy", *, allow_private: bool = False) -> NewTask:
    """A JSON body (already decoded) -> NewTask for this dialect, or ValidationError.

    The error names the field; a field the dialect cannot take (a base64 image for Luma's
    own API) is refused here, before anything is stored or sent. `allow_private` is
    TRACKER_NOTIFY_ALLOW_PRIVATE, for `notify_url`.
    """
    if not isinstance(body, dict):
        raise ValidationError(None, "the body must be a JSON object")
    for key in body:
        if key not in COMMON_FIELDS and key not in GENERATE_FIELDS:
            hint = " (the tracker sets it)" if key in TRACKER_SETS else ""
            raise ValidationError(str(key)[:64], f"{str(key)[:64]} is not a known field{hint}")

    if "user_prompt" not in body or body["user_prompt"] is None:
        raise ValidationError("user_prompt", "user_prompt is required")
    prompt = body["user_prompt"]
    if not isinstance(prompt, str):
        raise ValidationError("user_prompt", "user_prompt must be a string")
    if not prompt.strip():
        raise ValidationError("user_prompt", "user_prompt must not be empty")
    _storable("user_prompt", prompt)
    if len(prompt) > MAX_PROMPT:
        raise ValidationError("user_prompt", f"user_prompt is longer than {MAX_PROMPT} characters")

    source = _string(body, "source_task_id", limit=MAX_ID)
    if source is not None and not _ID.match(source):
        raise ValidationError("source_task_id", "source_task_id is not a valid task id")
    expand = _boolean(body, "expand_prompt")
    image_url = _image(body, "image_url")
    image_end_url = _image(body, "image_end_url")

    options: dict[str, Any] = {}
    if source is not None:
        for field in GENERATE_FIELDS:
            if body.get(field) not in (None, ""):
                raise ValidationError(field, f"{field} is not supported when extending a video")
    else:
        options = {
            "aspect_ratio": _choice(body, "aspect_ratio", ASPECT_RATIOS),
            "loop": _boolean(body, "loop"),
            "resolution": _choice(body, "resolution", RESOLUTIONS),
            "duration": _string(body, "duration", limit=8),
            "model_name": _string(body, "model_name", limit=64),
        }
        if options["duration"] is not None and not _DURATION.match(options["duration"]):
            raise ValidationError("duration", 'duration must look like "5s"')
        options = {k: v for k, v in options.items() if v is not None}

    target = notify_url(body.get("notify_url"), allow_private=allow_private)
    new = NewTask(
        kind="extend" if source else "generate",
        user_prompt=prompt.strip(),
        source_task_id=source,
        expand_prompt=expand,
        image_url=image_url,
        image_end_url=image_end_url,
        options=options,
        upstream=flavor,
        notify_url=target,
    )
    problem = dialects.get(flavor).unsupported(new)
    if problem is not None:
        raise ValidationError(*problem)
    return new


def upstream_id(body: Any) -> str:
    """The body of an import, `{"upstream_id": "..."}` -> the id, or ValidationError."""
    if not isinstance(body, dict):
        raise ValidationError(None, "the body must be a JSON object")
    for key in body:
        if key not in ("upstream_id", "notify_url"):
            raise ValidationError(str(key)[:64], f"{str(key)[:64]} is not a known field")
    if body.get("upstream_id") is None:
        raise ValidationError("upstream_id", "upstream_id is required")
    return check_upstream_id(body["upstream_id"])


def check_upstream_id(value: Any, field: str = "upstream_id") -> str:
    """An upstream task id as a user gives it (JSON, form or CLI)."""
    if not isinstance(value, str):
        raise ValidationError(field, f"{field} must be a string")
    _storable(field, value)
    value = value.strip()
    if not value:
        raise ValidationError(field, f"{field} must not be empty")
    if len(value) > MAX_ID:
        raise ValidationError(field, f"{field} is longer than {MAX_ID} characters")
    if not _ID.fullmatch(value):
        raise ValidationError(field, f"{field} is not a valid task id")
    return value
