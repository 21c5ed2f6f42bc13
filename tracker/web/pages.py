"""What the dashboard's pages take in and put out: the new-task form, the filters its
templates call, and which outside URLs may become a link.

The new-task form: form fields and uploads -> the API's JSON body -> validate.new_task. The
form is checked by the same models as the API (through `validate.new_task`), which report
every problem at once, so the rules and their messages are the same and each problem is
shown beside its field. What only a form has is checked here: an uploaded image (sent on as
a base64 data URI), and a URL and a file given for one image.

The filters turn stored values into what a person reads. Each is a plain function (tested
as one); `init_app` names them for Jinja, with the state lists the templates draw their
tabs from.

Links are decided on the parsed URL. A check on the raw string is not enough. Browsers (and
`urlsplit`, which werkzeug runs on a `Location`) drop tabs and newlines anywhere in a URL
and read a backslash as a slash, so `/\\t/evil.example` passes "starts with one slash"
and then leaves the site as `//evil.example`. Here a URL holding a control character,
whitespace or a backslash is refused outright, and what remains is judged on its parsed
parts:

- `local_path`: a path on this site (no scheme, no host), for the login's `next`;
- `web_link`: an absolute http(s) URL with a host, for URLs that users or the upstream
  gave (image_url, video_url, ...): only those become an href or a src.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

from flask import Flask
from werkzeug.datastructures import FileStorage, ImmutableMultiDict

from tracker import jsontext
from tracker.flows import validate
from tracker.tasks import store
from tracker.tasks.schema import short_image
from tracker.tasks.states import FINAL_STATES, STATES
from tracker.tasks.store import NewTask

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


# -- the filters ----------------------------------------------------------------------------


def ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "—"
    seconds = int(((now or store.utcnow()) - value).total_seconds())
    if seconds < 5:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def dollars(cents: int | None) -> str:
    """A balance in US cents, as a person reads it."""
    if cents is None:
        return "—"
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def wait(seconds: int | None) -> str:
    """The upstream's wait estimate as a person reads it: "about 3 min"."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"about {seconds} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def safe_url(value: str | None) -> str | None:
    """Only http(s) and this site's own paths go into href/src: never `javascript:`.

    URLs that users or the upstream gave go through `web_link` instead (absolute
    http(s) only): a path there could still be read by a browser as another site.
    """
    return local_path(value) or web_link(value)


def pretty(payload: str | None) -> str:
    """A stored payload, indented; text as it is. Never fails, whatever the row holds."""
    if payload is None:
        return ""
    value = jsontext.loads_stored(payload)
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False)


def short(value: str | None, limit: int = 120) -> str:
    if not value:
        return ""
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(
        ago=ago,
        when=when,
        wait=wait,
        safe_url=safe_url,
        web_link=web_link,
        pretty=pretty,
        short=short,
        image=short_image,
        dollars=dollars,
    )
    app.jinja_env.globals.update(STATES=STATES, FINAL_STATES=FINAL_STATES)


# -- the new-task form ----------------------------------------------------------------------


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
