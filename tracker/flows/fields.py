"""One rule per field of a submission: its check (worded for a person) and its JSON schema.

Each rule is an annotated type that holds both, side by side, so they cannot drift: the
pattern a schema names is the pattern the check runs, and `/api/openapi.json` (which
schemathesis fuzzes) says what the check accepts, no more, no less. Optional fields take
null or "" for "not given"; text is stored stripped.

A check refuses with `problem(message)`; `tracker.flows.validate` hands the message on as is.
notify_url's rule, which asks the address guard, is in `bodies.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from tracker.tasks.models import KINDS
from tracker.upstream import dialects
from tracker.upstream.luma import IMAGE_MODELS, MODES
from tracker.upstream.operations import Extend, Generate

MAX_PROMPT = 5000
MAX_ID = 128
MAX_IMAGE = 15_000_000
ASPECT_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "21:9", "9:21")
RESOLUTIONS = ("540p", "720p", "1080p", "4k")
DURATION_PATTERN = r"^[0-9]{1,3}s$"
# some text, no NUL character (user_prompt, model_name)
# (every character Python's strip() drops counts as space: regex engines differ on \s)
_SPACE = r"\s\u001c-\u001f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TEXT_PATTERN = rf"^[^\u0000]*[^{_SPACE}\u0000][^\u0000]*$"
# a task id, never only dots ("." and ".." collapse the URL path they go in); spaces around it
# are dropped (a paste's), so the pattern allows them and holds the length (not maxLength)
ID_PATTERN = rf"^\s*(?!\.+\s*$)[A-Za-z0-9._:-]{{1,{MAX_ID}}}\s*$"
# empty (not given), an http(s) URL, a data: URI, or bare base64 (32+ characters, may wrap)
IMAGE_PATTERN = (
    r"^(|https?://[!-~]{1,4000}|data:[A-Za-z0-9/+.-]+;base64,[A-Za-z0-9+/= \t\r\n]*"
    r"|[A-Za-z0-9+/_-][A-Za-z0-9+/_ \t\r\n-]{31,}={0,2})$"
)
_DURATION = re.compile(DURATION_PATTERN)
_ID = re.compile(r"[A-Za-z0-9._:-]+")
IMAGE = re.compile(IMAGE_PATTERN)

COMMON_FIELDS = ("source_task_id", "user_prompt", "expand_prompt", "image_url", "image_end_url")
GENERATE_FIELDS = ("aspect_ratio", "loop", "resolution", "duration", "model_name")
# the other operations' own (kept in `options`, as the generation's are)
KIND_FIELDS = ("mode", "source_video_url", "first_frame_url", "negative_prompt", "style_url")
# the order problems are reported in (the first is the answer's `field`); unknown fields first
FIELD_ORDER = (
    *("kind", "user_prompt", "source_task_id", "source_video_url", "mode", "expand_prompt"),
    *("image_url", "image_end_url", "first_frame_url", "style_url", "negative_prompt"),
    *GENERATE_FIELDS,
    "notify_url",
    "account",
)
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


def problem(message: str, field: str | None = None) -> PydanticCustomError:
    """A rule's refusal, worded for a person; `validate` hands it on as is.

    `field` names the field when the rule is not a field's own (a whole-body rule).
    """
    return PydanticCustomError("tracker", "{message}", {"message": message, "field": field})


def _storable(field: str, value: str) -> None:
    # no upstream wants a NUL in a prompt, and PostgreSQL text cannot hold one
    if "\x00" in value:
        raise problem(f"{field} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON)
        raise problem(f"{field} is not valid Unicode text") from None


def _text(field: str, value: Any, *, limit: int, blank: str = "blank") -> str:
    """A string that is not blank, stored stripped; the limit counts the stripped text."""
    if not isinstance(value, str):
        raise problem(f"{field} must be a string")
    _storable(field, value)
    text = value.strip()
    if not text:
        raise problem(f"{field} must not be {blank}")
    if len(text) > limit:
        raise problem(f"{field} is longer than {limit} characters")
    return text


def _optional(check: Callable[[str, str], str | None]) -> Callable[[Any, ValidationInfo], Any]:
    """A rule for an optional text field: null and "" mean not given, else `check`."""

    def rule(value: Any, info: ValidationInfo) -> Any:
        if value is None or value == "":
            return None
        return check(str(info.field_name), value)

    return rule


def _required(check: Callable[[str, str], str]) -> Callable[[Any, ValidationInfo], Any]:
    """A rule for a required field: null and "" are "is required", else `check`."""

    def rule(value: Any, info: ValidationInfo) -> Any:
        if value is None or value == "":
            raise problem(f"{info.field_name} is required")
        return check(str(info.field_name), value)

    return rule


def _prompt(value: Any, info: ValidationInfo) -> str:
    field = str(info.field_name)
    if value is None:
        raise problem(f"{field} is required")
    if not isinstance(value, str):
        raise problem(f"{field} must be a string")
    if not value.strip():
        raise problem(f"{field} must not be empty")
    _storable(field, value)
    if len(value) > MAX_PROMPT:  # as typed, spaces included (the schema's maxLength)
        raise problem(f"{field} is longer than {MAX_PROMPT} characters")
    return value.strip()


def check_task_id(field: str, value: Any) -> str:
    """An upstream task id as a user gives it (JSON, form or CLI)."""
    text = _text(field, value, limit=MAX_ID, blank="empty")
    if not _ID.fullmatch(text) or not text.strip("."):
        raise problem(f"{field} is not a valid task id")
    return text


def _choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def check(field: str, value: Any) -> str:
        text = _text(field, value, limit=32)
        if text != value or text not in choices:  # as the schema's enum: no spaces around it
            raise problem(f"{field} must be one of {', '.join(choices)}")
        return text

    return check


def _model_name(field: str, value: Any) -> str:
    if isinstance(value, str) and len(value) > 64:  # as typed (the schema's maxLength)
        raise problem(f"{field} is longer than 64 characters")
    return _text(field, value, limit=64)


def _duration(field: str, value: Any) -> str:
    text = _text(field, value, limit=8)
    if not _DURATION.fullmatch(text):
        raise problem(f'{field} must look like "5s"')
    return text


def flavor_of(info: ValidationInfo) -> str:
    context = info.context if isinstance(info.context, dict) else {}
    return str(context.get("flavor") or "proxy")


def _image(kind: str) -> Callable[[Any, ValidationInfo], str | None]:
    """An image field of an extend or a generation: its pattern, then the dialect's say."""

    def rule(value: Any, info: ValidationInfo) -> str | None:
        if value is None or value == "":
            return None
        field = str(info.field_name)
        text = _text(field, value, limit=MAX_IMAGE)
        if not IMAGE.fullmatch(text):
            raise problem(f"{field} must be an http(s) URL or base64 image data")
        image: dict[str, Any] = {field: text}  # image_url or image_end_url
        probe = Extend("given", "", **image) if kind == "extend" else Generate("", **image)
        refused = dialects.get(flavor_of(info)).unsupported(probe)
        if refused is not None and refused[0] == field:
            raise problem(refused[1])
        return text

    return rule


def _not_taken(value: Any, info: ValidationInfo) -> None:
    """A field of other kinds, here only "not given" (the model's title is its kind)."""
    if value is None or value == "":
        return None
    kind = info.config and info.config.get("title")
    if kind == "extend":
        raise problem(f"{info.field_name} is not supported when extending a video")
    raise problem(f"{info.field_name} is not taken by a {kind} task")


def _url(field: str, value: Any) -> str:
    text = _text(field, value, limit=4000)
    if not re.fullmatch(r"https?://[!-~]+", text):
        raise problem(f"{field} must be an http(s) URL")
    return text


def _kind(value: Any, info: ValidationInfo) -> str:
    """The body's `kind`: the kind of the model checking it (its title), or not given."""
    own = str(info.config and info.config.get("title"))
    if value is None or value == "" or value == own:
        return own
    raise problem(f"kind must be one of {', '.join(KINDS)}")


_image_schema = {
    "type": ["string", "null"],
    "pattern": IMAGE_PATTERN,
    "description": "an http(s) URL or base64 image data (LUMA_API_FLAVOR=luma: a URL only)",
}
Prompt = Annotated[
    str,
    BeforeValidator(_prompt),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": MAX_PROMPT, "pattern": TEXT_PATTERN}
    ),
]
SourceId = Annotated[
    str,
    BeforeValidator(_optional(check_task_id)),
    WithJsonSchema({"type": "string", "pattern": ID_PATTERN}),
]
OptionalSourceId = Annotated[
    str | None,
    BeforeValidator(_optional(check_task_id)),
    WithJsonSchema({"type": ["string", "null"], "pattern": f"^$|{ID_PATTERN}"}),
]
ExtendImage = Annotated[
    str | None, BeforeValidator(_image("extend")), WithJsonSchema(_image_schema)
]
GenerateImage = Annotated[
    str | None, BeforeValidator(_image("generate")), WithJsonSchema(_image_schema)
]
# a generation's option in an extend: only "not given"
Empty = Annotated[None, BeforeValidator(_not_taken), WithJsonSchema({"enum": ["", None]})]
AspectRatio = Annotated[
    str | None,
    BeforeValidator(_optional(_choice(ASPECT_RATIOS))),
    WithJsonSchema({"enum": [*ASPECT_RATIOS, "", None]}),
]
Resolution = Annotated[
    str | None,
    BeforeValidator(_optional(_choice(RESOLUTIONS))),
    WithJsonSchema({"enum": [*RESOLUTIONS, "", None]}),
]
Duration = Annotated[
    str | None,
    BeforeValidator(_optional(_duration)),
    # spaces around it are dropped, as around every text field
    WithJsonSchema({"type": ["string", "null"], "pattern": r"(^\s*[0-9]{1,3}s\s*$)|(^$)"}),
]
ModelName = Annotated[
    str | None,
    BeforeValidator(_optional(_model_name)),
    WithJsonSchema({"type": ["string", "null"], "maxLength": 64, "pattern": f"^$|{TEXT_PATTERN}"}),
]
KindName = Annotated[str, BeforeValidator(_kind), WithJsonSchema({"enum": [*KINDS, "", None]})]
NotTaken = Annotated[None, BeforeValidator(_not_taken), WithJsonSchema({"enum": ["", None]})]
OptionalPrompt = Annotated[
    str | None,
    BeforeValidator(_optional(lambda field, value: _text(field, value, limit=MAX_PROMPT))),
    WithJsonSchema({"type": ["string", "null"], "maxLength": MAX_PROMPT}),
]
_url_schema = {"type": ["string", "null"], "pattern": r"^(|\s*https?://[!-~]{1,4000}\s*)$"}
Url = Annotated[str | None, BeforeValidator(_optional(_url)), WithJsonSchema(_url_schema)]
Mode = Annotated[
    str, BeforeValidator(_required(_choice(MODES))), WithJsonSchema({"enum": list(MODES)})
]
AnAspectRatio = Annotated[
    str,
    BeforeValidator(_required(_choice(ASPECT_RATIOS))),
    WithJsonSchema({"enum": list(ASPECT_RATIOS)}),
]
ImageModel = Annotated[
    str | None,
    BeforeValidator(_optional(_choice(IMAGE_MODELS))),
    WithJsonSchema({"enum": [*IMAGE_MODELS, "", None]}),
]
NullableBool = Annotated[bool | None, WithJsonSchema({"type": ["boolean", "null"]})]
