"""What the dashboard's pages take in and put out: the new-task form, the filters its
templates call (named for Jinja by `init_app`), and which outside URLs may become a link.

The new-task form: the chosen kind's fields and uploads -> the API's JSON body ->
validate.new_task, whose models (one per kind, `bodies.SUBMITS`) report every problem at once,
each shown beside its field in the form's words (`labelled`). The form offers the kinds the
dialect offers, each with the fields its model takes (`kind_fields`). What only a form has is
checked here: an uploaded image (sent on as a base64 data URI), a URL and a file for one image.

Links are decided on the parsed URL. A check on the raw string is not enough. Browsers (and
`urlsplit`, which werkzeug runs on a `Location`) drop tabs and newlines anywhere in a URL
and read a backslash as a slash, so `/\\t/evil.example` passes "starts with one slash"
and then leaves the site as `//evil.example`. Here a URL holding a control character,
whitespace or a backslash is refused outright, and what remains is judged on its parsed parts:
`local_path` (a path on this site, for the login's `next`) and `web_link` (an absolute http(s)
URL with a host, for URLs that users or the upstream gave: only those become an href or a src).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

from flask import Flask
from werkzeug.datastructures import FileStorage, ImmutableMultiDict

from tracker import jsontext
from tracker.flows import bodies, validate
from tracker.flows.fields import ASPECT_RATIOS, FIELD_ORDER, RESOLUTIONS
from tracker.tasks import store
from tracker.tasks.schema import short_image
from tracker.tasks.states import FINAL_STATES, STATES
from tracker.tasks.store import NewTask
from tracker.upstream import dialects
from tracker.upstream.luma import IMAGE_MODELS, MODES

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
    parts = _parsed(value)
    if parts is None or parts.scheme or parts.netloc:
        return None
    if not parts.path.startswith("/") or parts.path.startswith("//"):
        return None
    return str(value)  # a str: _parsed is None for anything else


def web_link(value: object) -> str | None:
    """`value` when it is an absolute http(s) URL naming a host, else None."""
    parts = _parsed(value)
    if parts is None or parts.scheme.lower() not in WEB_SCHEMES:
        return None
    try:
        host = parts.hostname
    except ValueError:
        return None
    return str(value) if host else None


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
    return f"{'-' if cents < 0 else ''}${abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def wait(seconds: int | None) -> str:
    """The upstream's wait estimate as a person reads it: "about 3 min"."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"about {seconds} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def when(value: datetime | str | None) -> str:
    """A time as every page shows it; also a stored ISO text (a webhook attempt's `at`)."""
    if isinstance(value, str):
        try:
            return when(datetime.fromisoformat(value))
        except ValueError:
            return value
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def safe_url(value: str | None) -> str | None:
    """Only http(s) and this site's own paths go into href/src: never `javascript:`. URLs
    that users or the upstream gave go through `web_link` (a path there may be another site)."""
    return local_path(value) or web_link(value)


def pretty(payload: str | None) -> str:
    """A stored payload, indented; text as it is. Never fails, whatever the row holds."""
    if payload is None:
        return ""
    value = jsontext.loads_stored(payload)
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)


def short(value: str | None, limit: int = 120) -> str:
    if not value:
        return ""
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(
        ago=ago, when=when, wait=wait, safe_url=safe_url, web_link=web_link, pretty=pretty,
        short=short, image=short_image, dollars=dollars,
    )  # fmt: skip
    app.jinja_env.globals.update(STATES=STATES, FINAL_STATES=FINAL_STATES, LABELS=LABELS)


# -- the new-task form ----------------------------------------------------------------------


MAX_IMAGE_BYTES = 10 * 1024 * 1024
IMAGE_FIELDS = ("image_url", "image_end_url")
UPLOADS = ("generate", "extend")  # the kinds whose images may be a file (others: a URL)
FORM_FIELDS = tuple(name for name in FIELD_ORDER if name != "kind")
MAX_ASKED = 5000  # a value a link prefills (?kind=generate&image_url=...)
# what a dialect's API takes of a kind beyond its body model: Luma's has no expand_prompt, and
# its extend starts from the extended video (no start image)
_NOT_ON = {"luma": {(k, "expand_prompt") for k in UPLOADS} | {("extend", "image_url")}}
CHOICES = {"aspect_ratio": ASPECT_RATIOS, "resolution": RESOLUTIONS, "mode": MODES}
CHOICES |= {"image_model": IMAGE_MODELS}
# each field's label on the forms (new.html; list.html's import), which name it in their errors
LABELS = {n: n.replace("_", " ").capitalize() for n in (*FIELD_ORDER, "upstream_id")}
LABELS |= {"kind": "Operation", "user_prompt": "Prompt", "source_video_url": "Source video URL"}
LABELS |= {"image_url": "Start image", "image_end_url": "End image", "model_name": "Model"}
LABELS |= {"first_frame_url": "First frame image URL", "style_url": "Style image URL"}
LABELS |= {"notify_url": "Webhook URL"}
IMAGE_LABELS = LABELS | {"image_url": "Reference image"}  # an image's image_url (Luma's image_ref)
_NAMES = re.compile(r"^[a-z]+\b|\b(?:" + "|".join(n for n in LABELS if "_" in n) + r")\b")
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}
_SIGNATURES |= {b"GIF87a": "image/gif", b"GIF89a": "image/gif"}


def labelled(message: str, kind: str = "") -> str:
    """An error in the form's words: each field named by its label (`user_prompt must not be
    empty`: `Prompt must not be empty`); the API's JSON keeps the names."""
    labels = IMAGE_LABELS if kind == "image" else LABELS
    return _NAMES.sub(lambda found: labels.get(found[0], found[0]), message)


def kind_fields(kind: str | None, flavor: str) -> tuple[str, ...]:
    """The fields a kind takes on this dialect (its body model's, notify_url aside); of no
    kind: every field of the form, but one the dialect has for no kind (expand_prompt, Luma)."""
    model = bodies.SUBMITS.get(kind or "")
    fields = model.model_fields if model else dict.fromkeys(FORM_FIELDS)
    taken = {name for name, f in fields.items() if f is None or f.annotation is not type(None)}
    dropped = _NOT_ON.get(flavor, set())
    return tuple(
        n
        for n in FORM_FIELDS
        if n in taken and n != "notify_url" and (kind or "generate", n) not in dropped
    )


def takers(flavor: str) -> dict[str, list[str]]:
    """Each field of the form: the kinds (of those the dialect offers) that take it."""
    offered = dialects.get(flavor).kinds
    found: dict[str, list[str]] = {"notify_url": list(offered)}
    for kind in offered:
        for name in kind_fields(kind, flavor):
            found.setdefault(name, []).append(kind)
    return found


def kind_problem(kind: str, flavor: str) -> str | None:
    """Why the dialect does not take this kind, in the API's words; None when it does."""
    if kind in dialects.get(flavor).kinds:
        return None
    try:
        validate.new_task({"kind": kind}, flavor)
    except validate.ValidationError as exc:
        return exc.message
    return None  # pragma: no cover (every kind not offered is refused above)


def form_values(form: Mapping[str, str]) -> dict[str, str]:
    """The form's values as shown again (text stripped, the prompt as typed), and its kind:
    as chosen, else extend when a source id is given and a generation when not (as the API)."""
    values = {name: form.get(name, "").strip() for name in FORM_FIELDS}
    values["user_prompt"] = form.get("user_prompt", "")
    extend = "extend" if values["source_task_id"] else "generate"
    values["kind"] = form.get("kind", "").strip() or extend
    return values


def _image_type(head: bytes) -> str | None:
    for signature, mime in _SIGNATURES.items():
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


def read_new_task(
    form: ImmutableMultiDict[str, str],
    files: ImmutableMultiDict[str, FileStorage],
    flavor: str = "proxy",
    *,
    allow_private: bool = False,
) -> tuple[dict[str, str], dict[str, str], NewTask | None]:
    """(the values to show again, errors by field, the task when there are no errors).

    The body carries the chosen kind's fields only, those left empty dropped (a required
    prompt is sent as typed, so that its rule names it). A post that names no kind (a script's)
    is read as the API reads a body without one: every field it gives, for its model to judge.
    """
    values = form_values(form)
    kind = values["kind"]
    refused = kind_problem(kind, flavor)
    if refused:
        return values, {"kind": refused}, None
    errors: dict[str, str] = {}
    body: dict[str, Any] = {"kind": kind}
    named = kind if form.get("kind", "").strip() else None
    for name in (*kind_fields(named, flavor), "notify_url"):
        data, problem = read_upload(files.get(name + "_file"))
        if name in ("expand_prompt", "loop"):
            body[name] = {"true": True, "false": False}.get(values[name])
        elif name in IMAGE_FIELDS and kind in UPLOADS and (data or problem):
            if problem or values[name]:
                errors[name] = problem or "give a URL or a file, not both"
            body[name], values[name + "_file"] = data, "chosen"
        else:
            body[name] = values[name] if values[name].strip() else None
    prompt = bodies.SUBMITS[kind].model_fields.get("user_prompt")
    if prompt is not None and prompt.is_required() and body["user_prompt"] is None:
        body["user_prompt"] = values["user_prompt"]  # empty: its rule names the field
    body = {name: value for name, value in body.items() if value is not None and name not in errors}
    try:
        new: NewTask | None = validate.new_task(body, flavor, allow_private=allow_private)
    except validate.ValidationError as exc:
        new = None
        for found in exc.problems:
            errors.setdefault(found.field or "form", found.error)
    return values, errors, (new if not errors else None)
