"""What a client may send: a submission (an extend or a generation) and an import.

The models are strict (a string is not a boolean, "5" is not a number) and refuse unknown
fields; each field's rule (check and JSON schema) is in `fields` (notify_url's here,
below). Which model applies is decided by `source_task_id` (`submit_model`): given,
the body is an `Extend`; missing, null or "", a `Generate`.

The upstream dialect (LUMA_API_FLAVOR, passed as validation context `{"flavor": ...}`)
has its say through its own `unsupported` rule: asked about each image as it is checked
(so a base64 image on Luma's own API is refused beside every other problem), then about
the whole task.

To add a field: write its rule in `fields`, add it to `_Body` (or, for a generation option,
to `Generate` and as `Empty` to `Extend`) and to `fields.FIELD_ORDER`, and carry it into
NewTask in `validate.new_task`; the OpenAPI document and the form's errors follow.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from tracker.flows.fields import (
    COMMON_FIELDS,
    GENERATE_FIELDS,
    ID_PATTERN,
    AspectRatio,
    Duration,
    Empty,
    ExtendImage,
    GenerateImage,
    ModelName,
    NullableBool,
    Prompt,
    Resolution,
    SourceId,
    check_task_id,
    flavor_of,
    problem,
)
from tracker.tasks.store import NewTask
from tracker.upstream import dialects
from tracker.upstream.operations import operation_for

# -- notify_url: a task's own webhook target, an http(s) URL that resolves to public addresses
# only. Its check reaches the network (the address guard resolves the host), which no other
# field's does, so it is not one of `fields`.

MAX_NOTIFY_URL = 2000


def check_notify_url(field: str, value: Any, allow_private: bool) -> str:
    """An http(s) URL whose host resolves to public addresses only (the address guard).

    Any API caller may set one, so a URL aimed inside (loopback, private, link-local, ...) is
    refused here, and checked again at every attempt (`flows.notify`). `allow_private` is
    TRACKER_NOTIFY_ALLOW_PRIVATE (development). Messages name the host, never the URL.
    """
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


class _Body(BaseModel):
    """What every submission carries; strict, and no field it does not name."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    kind: ClassVar[str] = "generate"

    user_prompt: Prompt
    expand_prompt: NullableBool = None
    notify_url: NotifyUrl = None
    # a new field every submission may carry goes here (its rule in `fields`, its place in
    # fields.FIELD_ORDER, and its way into NewTask in validate.new_task)

    def options(self) -> dict[str, Any]:
        """The generation's options the user gave, in the upstream's own words."""
        given = {name: getattr(self, name) for name in GENERATE_FIELDS}
        return {name: value for name, value in given.items() if value is not None}

    @model_validator(mode="after")
    def _dialect_takes_it(self, info: ValidationInfo) -> Any:
        """The dialect's rule on the whole task, for a rule that spans fields."""
        fields = {name: getattr(self, name) for name in COMMON_FIELDS}
        task = NewTask(self.kind, options=self.options(), **fields)
        refused = dialects.get(flavor_of(info)).unsupported(operation_for(task))
        if refused is not None:
            raise problem(refused[1], refused[0])
        return self


class Extend(_Body):
    """Extend the video with this upstream id (the generation options are not taken)."""

    kind: ClassVar[str] = "extend"

    source_task_id: SourceId
    image_url: ExtendImage = None
    image_end_url: ExtendImage = None
    aspect_ratio: Empty = None
    loop: Empty = None
    resolution: Empty = None
    duration: Empty = None
    model_name: Empty = None


class Generate(_Body):
    """A new generation."""

    source_task_id: Empty = None
    image_url: GenerateImage = None
    image_end_url: GenerateImage = None
    aspect_ratio: AspectRatio = None
    loop: NullableBool = None
    resolution: Resolution = None
    duration: Duration = None
    model_name: ModelName = None
    # a new generation option goes here, and as `Empty` in Extend


def submit_model(body: Any) -> type[Extend] | type[Generate]:
    """Which model a submit body is checked by: a given source_task_id makes it an extend."""
    if isinstance(body, dict) and body.get("source_task_id") not in (None, ""):
        return Extend
    return Generate


def _upstream_id(value: Any, info: ValidationInfo) -> str:
    if value is None:
        raise problem(f"{info.field_name} is required")
    return check_task_id(str(info.field_name), value)


class Import(BaseModel):
    """Track a task made elsewhere by its upstream id."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    upstream_id: Annotated[
        str,
        BeforeValidator(_upstream_id),
        WithJsonSchema(
            {
                "type": "string",
                "pattern": ID_PATTERN,
                "description": "the upstream's id of a task made elsewhere",
            }
        ),
    ]
    notify_url: NotifyUrl = None
