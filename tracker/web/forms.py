"""The new-task form: form fields and uploads -> the API's JSON body -> validate.new_task.

The form is checked by the same models as the API (`tracker.schemas`, through
`validate.new_task`), which report every problem at once, so the rules and their messages
are the same and each problem is shown beside its field. What only a form has is checked
here: an uploaded image (sent on as a base64 data URI), and a URL and a file given for
one image.
"""

from __future__ import annotations

import base64
from typing import Any

from werkzeug.datastructures import FileStorage, ImmutableMultiDict

from tracker.flows import validate
from tracker.tasks.store import NewTask

MAX_IMAGE_BYTES = 10 * 1024 * 1024
IMAGE_FIELDS = ("image_url", "image_end_url")
TEXT_FIELDS = (
    "source_task_id",
    "user_prompt",
    "image_url",
    "image_end_url",
    "duration",
    "model_name",
    "notify_url",
)
CHOICE_FIELDS = ("expand_prompt", "loop", "aspect_ratio", "resolution")
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def _image_type(head: bytes) -> str | None:
    for signature, mime in _SIGNATURES:
        if head.startswith(signature):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def read_upload(upload: FileStorage | None) -> tuple[str | None, str | None]:
    """(data URI, None), (None, error) or (None, None) when no file was chosen."""
    if upload is None or not upload.filename:
        return None, None
    data = upload.stream.read(MAX_IMAGE_BYTES + 1)
    if not data:
        return None, "the file is empty"
    if len(data) > MAX_IMAGE_BYTES:
        return None, f"the file is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB"
    mime = _image_type(data[:16])
    if mime is None:
        return None, "choose a PNG, JPEG, GIF or WebP image"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}", None


def _tristate(raw: str) -> bool | None:
    return {"true": True, "false": False}.get(raw)


def read_new_task(
    form: ImmutableMultiDict[str, str],
    files: ImmutableMultiDict[str, FileStorage],
    flavor: str = "proxy",
    *,
    allow_private: bool = False,
) -> tuple[dict[str, str], dict[str, str], NewTask | None]:
    """(the values to show again, errors by field, the task when there are no errors)."""
    values = {name: form.get(name, "").strip() for name in TEXT_FIELDS + CHOICE_FIELDS}
    values["user_prompt"] = form.get("user_prompt", "")  # kept as typed
    errors: dict[str, str] = {}
    body: dict[str, Any] = {}
    for name in ("source_task_id", "user_prompt", "duration", "model_name", "notify_url"):
        if values[name].strip():
            body[name] = values[name]
    if "user_prompt" not in body:
        body["user_prompt"] = values["user_prompt"]  # empty: validate names the field
    for name in ("aspect_ratio", "resolution"):
        if values[name]:
            body[name] = values[name]
    for name in ("expand_prompt", "loop"):
        choice = _tristate(values[name])
        if choice is not None:
            body[name] = choice
    for name in IMAGE_FIELDS:
        data, problem = read_upload(files.get(name + "_file"))
        if problem:
            errors[name] = problem
        elif data and values[name]:
            errors[name] = "give a URL or a file, not both"
        elif data:
            body[name] = data
            values[name + "_file"] = "chosen"
        elif values[name]:
            body[name] = values[name]
    for name in errors:
        body.pop(name, None)
    if flavor == "luma":
        body.pop("expand_prompt", None)  # no Luma counterpart; the form hides it
    try:
        new: NewTask | None = validate.new_task(body, flavor, allow_private=allow_private)
    except validate.ValidationError as exc:
        new = None
        for found in exc.problems:
            errors.setdefault(found.field or "form", found.error)
    return values, errors, (new if not errors else None)
