"""What a client may send: a submission (one model per kind of task) and an import.

The models are strict (a string is not a boolean, "5" is not a number) and refuse unknown
fields; each field's rule (check and JSON schema) is in `fields` (notify_url's here,
below). The body's `kind` picks the model (`submit_model`); without one, a given
`source_task_id` makes it an `Extend`, else a `Generate`. The upstream dialect
(LUMA_API_FLAVOR, passed as validation context `{"flavor": ...}`) has its say through its
own `unsupported` rule: about each image as it is checked, then about the whole task.

To add a field: write its rule in `fields`, add it to the models that take it and to
`fields.FIELD_ORDER` (and, for an option, to `operations.KIND_OPTIONS`); the OpenAPI
document and the form's errors follow.
"""

from __future__ import annotations

import re
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
    AnAspectRatio,
    AspectRatio,
    Duration,
    Empty,
    ExtendImage,
    GenerateImage,
    ImageModel,
    KindName,
    Mode,
    ModelName,
    NotTaken,
    NullableBool,
    OptionalPrompt,
    OptionalSourceId,
    Prompt,
    Resolution,
    SourceId,
    Url,
    flavor_of,
    problem,
)
from tracker.tasks.store import NewTask
from tracker.upstream import dialects
from tracker.upstream.operations import KIND_OPTIONS, operation_for

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


def _own_kind(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """A body's schema names its own kind only (the rule takes no other: `submit_model`)."""
    schema["properties"]["kind"] = {"enum": [model.model_config.get("title"), "", None]}


def _account(value: Any, info: ValidationInfo) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9]{1,32}", value.strip()):
        raise problem(f"{info.field_name} must be an account's name (letters and digits)")
    return value.strip().lower()


# the upstream account to use (LUMA_ACCOUNT_<NAME>_KEY); whether it exists is the submit's check
AccountName = Annotated[
    str | None,
    BeforeValidator(_account),
    WithJsonSchema({"type": ["string", "null"], "pattern": r"^(\s*[A-Za-z0-9]{1,32}\s*)?$"}),
]


class _Body(BaseModel):
    """What every submission carries; strict, and no field it does not name."""

    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, title="generate", json_schema_extra=_own_kind
    )
    KIND: ClassVar[str] = "generate"  # the model's title: `class Upscale(_Body, title=...)`

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        cls.KIND = str(cls.model_config.get("title"))

    notify_url: NotifyUrl = None
    account: AccountName = None
    # a new field every submission may carry goes here (its rule in `fields`, its place in
    # fields.FIELD_ORDER, and its way into NewTask in `task` below)

    def options(self) -> dict[str, Any]:
        """The options of its kind the user gave (operations.KIND_OPTIONS), by their names."""
        given = {name: getattr(self, name, None) for name in KIND_OPTIONS[self.KIND]}
        return {name: value for name, value in given.items() if value is not None}

    def task(self, flavor: str) -> NewTask:
        """The task this body asks for, on this dialect; a prompt a kind takes none of is ""."""
        return NewTask(
            self.KIND,
            getattr(self, "user_prompt", None) or "",
            source_task_id=getattr(self, "source_task_id", None),
            expand_prompt=getattr(self, "expand_prompt", None),
            image_url=getattr(self, "image_url", None),
            image_end_url=getattr(self, "image_end_url", None),
            options=self.options(),
            upstream=flavor,
            notify_url=self.notify_url,
            account=self.account,
        )

    @model_validator(mode="after")
    def _dialect_takes_it(self, info: ValidationInfo) -> Any:
        """The dialect's rule on the whole task, for a rule that spans fields."""
        flavor = flavor_of(info)
        refused = dialects.get(flavor).unsupported(operation_for(self.task(flavor)))
        if refused is not None:
            raise problem(refused[1], refused[0])
        return self


class Extend(_Body, title="extend"):
    """Extend the video with this upstream id (the generation options are not taken)."""

    kind: KindName = "extend"
    source_task_id: SourceId
    user_prompt: Prompt
    expand_prompt: NullableBool = None
    image_url: ExtendImage = None
    image_end_url: ExtendImage = None
    model_name: ModelName = None
    aspect_ratio: Empty = None
    loop: Empty = None
    resolution: Empty = None
    duration: Empty = None


class Generate(_Body):
    """A new generation."""

    kind: KindName = "generate"
    user_prompt: Prompt
    expand_prompt: NullableBool = None
    source_task_id: Empty = None
    image_url: GenerateImage = None
    image_end_url: GenerateImage = None
    aspect_ratio: AspectRatio = None
    loop: NullableBool = None
    resolution: Resolution = None
    duration: Duration = None
    model_name: ModelName = None
    # a new generation option goes here, and as `Empty` in Extend


class Upscale(_Body, title="upscale"):
    """A completed video of the account at a higher resolution (Luma's own API)."""

    kind: KindName = "upscale"
    source_task_id: SourceId
    resolution: Resolution = None
    user_prompt: NotTaken = None


class Audio(_Body, title="audio"):
    """A completed video of the account with sound made for it (Luma's own API)."""

    kind: KindName = "audio"
    source_task_id: SourceId
    user_prompt: OptionalPrompt = None
    negative_prompt: OptionalPrompt = None


class _FromVideo(_Body):
    """An operation on a video: a completed one of the account, or any video by its URL."""

    source_task_id: OptionalSourceId = None
    source_video_url: Url = None
    user_prompt: OptionalPrompt = None
    model_name: ModelName = None

    @model_validator(mode="after")
    def _one_source(self) -> Any:
        if self.source_task_id and self.source_video_url:
            raise problem("give source_task_id or source_video_url, not both", "source_video_url")
        if not (self.source_task_id or self.source_video_url):
            raise problem("source_task_id or source_video_url is required", "source_task_id")
        return self


class Modify(_FromVideo, title="modify"):
    """A video restyled from a prompt, `mode` saying how far from its source (Luma's own API)."""

    kind: KindName = "modify"
    mode: Mode
    first_frame_url: Url = None


class Reframe(_FromVideo, title="reframe"):
    """A video to another aspect ratio, the new space filled in (Luma's own API)."""

    kind: KindName = "reframe"
    aspect_ratio: AnAspectRatio


class Image(_Body, title="image"):
    """A still image from a prompt, after a reference image and a style (Luma's own API)."""

    kind: KindName = "image"
    user_prompt: Prompt
    model_name: ImageModel = None
    aspect_ratio: AspectRatio = None
    image_url: Url = None
    style_url: Url = None


SUBMITS: dict[str, type[_Body]] = {
    model.KIND: model for model in (Generate, Extend, Upscale, Audio, Modify, Reframe, Image)
}


def submit_model(body: Any) -> type[_Body]:
    """Which model a submit body is checked by: its `kind`; without one, a given
    source_task_id makes it an extend, else a generation (an unknown kind: a generation's,
    whose `kind` rule names the kinds)."""
    if not isinstance(body, dict):
        return Generate
    kind = body.get("kind")
    if isinstance(kind, str) and kind in SUBMITS:
        return SUBMITS[kind]
    if kind in (None, "") and body.get("source_task_id") not in (None, ""):
        return Extend
    return Generate
