"""Check a submission (JSON API, dashboard form, CLI) before anything is stored or sent.

Each problem names its field, so a person can fix it; nothing half-valid is stored.
"""

from __future__ import annotations

import re
from typing import Any

from .lifecycle import NewTask

MAX_PROMPT = 5000
MAX_ID = 128
ASPECT_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "21:9", "9:21")
RESOLUTIONS = ("540p", "720p", "1080p", "4k")
_DURATION = re.compile(r"^\d{1,3}s$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/_\-]+={0,2}$")
_SPACE = re.compile(r"\s+")
_DATA_URI = re.compile(r"^data:[\w/+.\-]+;base64,", re.IGNORECASE)
_ID = re.compile(r"^[A-Za-z0-9._:\-]+$")

COMMON_FIELDS = ("source_task_id", "user_prompt", "expand_prompt", "image_url", "image_end_url")
GENERATE_FIELDS = ("aspect_ratio", "loop", "resolution", "duration", "model_name")


class ValidationError(ValueError):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _string(body: dict[str, Any], field: str, *, limit: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(field, f"{field} must be a string")
    value = value.strip()
    if not value:
        return None
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
    if value is None:
        return None
    lowered = value[:16].lower()
    if lowered.startswith(("http://", "https://")):
        if len(value) > 4000 or any(c.isspace() for c in value):
            raise ValidationError(field, f"{field} is not a valid URL")
        return value
    if _DATA_URI.match(value):
        return value
    compact = _SPACE.sub("", value)
    if len(compact) >= 32 and len(compact) % 4 == 0 and _BASE64.match(compact):
        return value
    raise ValidationError(field, f"{field} must be an http(s) URL or base64 image data")


def _choice(body: dict[str, Any], field: str, choices: tuple[str, ...]) -> str | None:
    value = _string(body, field, limit=32)
    if value is not None and value not in choices:
        raise ValidationError(field, f"{field} must be one of {', '.join(choices)}")
    return value


def new_task(body: Any) -> NewTask:
    """A JSON body (already decoded) -> NewTask, or ValidationError naming the field."""
    if not isinstance(body, dict):
        raise ValidationError(None, "the body must be a JSON object")
    for key in body:
        if key not in COMMON_FIELDS and key not in GENERATE_FIELDS:
            hint = " (the tracker sets it)" if key == "notify_hook" else ""
            raise ValidationError(str(key)[:64], f"{str(key)[:64]} is not a known field{hint}")

    if "user_prompt" not in body or body["user_prompt"] is None:
        raise ValidationError("user_prompt", "user_prompt is required")
    prompt = body["user_prompt"]
    if not isinstance(prompt, str):
        raise ValidationError("user_prompt", "user_prompt must be a string")
    if not prompt.strip():
        raise ValidationError("user_prompt", "user_prompt must not be empty")
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
            if body.get(field) is not None:
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

    return NewTask(
        kind="extend" if source else "generate",
        user_prompt=prompt.strip(),
        source_task_id=source,
        expand_prompt=expand,
        image_url=image_url,
        image_end_url=image_end_url,
        options=options,
    )
