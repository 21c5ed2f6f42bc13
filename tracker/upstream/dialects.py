"""The dialects: each upstream API the tracker can speak, its paths and its words.

The reseller proxy (`proxy`, the default) and Luma's own API (`luma`) take the same work in
different words (`user_prompt` vs `prompt`, an extend path vs keyframes, a batch query or
none). Everything that differs between them lives here, so the rest of the tracker asks a
`Dialect` instead of spelling paths: `request` turns an operation (`upstream.operations`)
and the callback URL into the wire request. Reading the answers is `tracker.upstream.parse`'s,
which understands both. LUMA_API_FLAVOR picks the dialect (its names and default base URLs are
`tracker.settings.DIALECTS` and `DEFAULT_BASES`); each task stores the one it was sent with
in `tasks.upstream`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, assert_never
from urllib.parse import quote

from tracker.settings import DEFAULT_BASES, LUMA_MODELS
from tracker.upstream.operations import GENERATE_OPTIONS, Extend, Generate, Operation


@dataclass(frozen=True)
class Request:
    """One operation as the upstream wants it: the path to POST to and the JSON body."""

    path: str
    body: dict[str, Any]


class Dialect(Protocol):
    name: str
    default_base: str
    has_batch: bool
    has_download_url: bool
    credits_path: str | None

    def request(
        self, operation: Operation, callback_url: str | None, model: str = LUMA_MODELS[0]
    ) -> Request:
        """The wire request; `model`: the video model when the task names none (LUMA_MODEL)."""
        ...

    def query_path(self, upstream_id: str) -> str: ...

    def batch_path(self) -> str | None: ...

    def list_path(self, offset: int, limit: int) -> str | None:
        """A page of the account's generations, newest first (None: the API lists none)."""
        ...

    def download_url_path(self, upstream_id: str) -> str | None: ...

    def unsupported(self, operation: Operation) -> tuple[str, str] | None:
        """(field, reason) when this API cannot take the operation as given, else None."""
        ...


def _segment(value: str) -> str:
    return quote(value, safe="")


def _options(operation: Generate) -> dict[str, Any]:
    """A generation's options by their names in the tracker's API (the proxy's words)."""
    return {name: getattr(operation, name) for name in GENERATE_OPTIONS}


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    """Only what was given: a field left out is not sent, not even empty."""
    return {name: value for name, value in fields.items() if value is not None}


# -- the reseller proxy ------------------------------------------------------------------------


class ProxyDialect:
    """The reseller proxy (upstream.md, "Endpoints"): today's API, the default.

    `POST /luma/generations` creates, `POST /luma/generations/{id}/extend` extends, `GET
    /luma/generations/{id}` queries one, `POST /luma/tasks` queries many, and some resellers
    hand out a fresh download link. The callback URL travels as `notify_hook`.
    """

    name = "proxy"
    default_base = DEFAULT_BASES["proxy"]
    has_batch = True
    has_download_url = True
    credits_path: str | None = None

    def request(
        self, operation: Operation, callback_url: str | None, model: str = LUMA_MODELS[0]
    ) -> Request:  # the proxy picks its own model when none is named: `model` is not sent
        """Optional fields the user did not give are left out, not sent empty."""
        body: dict[str, Any] = {"user_prompt": operation.prompt}
        if operation.expand_prompt is not None:
            body["expand_prompt"] = operation.expand_prompt
        if operation.image_url:
            body["image_url"] = operation.image_url
        if operation.image_end_url:
            body["image_end_url"] = operation.image_end_url
        match operation:
            case Generate():
                path = "/luma/generations"
                body.update(_given(_options(operation)))  # the options in the proxy's words
            case Extend():
                path = f"/luma/generations/{_segment(operation.source_id)}/extend"
            case _:
                assert_never(operation)
        if callback_url:
            body["notify_hook"] = callback_url
        return Request(path, body)

    def query_path(self, upstream_id: str) -> str:
        return f"/luma/generations/{_segment(upstream_id)}"

    def batch_path(self) -> str | None:
        return "/luma/tasks"

    def list_path(self, offset: int, limit: int) -> str | None:
        return None

    def download_url_path(self, upstream_id: str) -> str | None:
        return f"/luma/generations/{_segment(upstream_id)}/download_video_url"

    def unsupported(self, operation: Operation) -> tuple[str, str] | None:
        return None  # the proxy takes URLs and base64 images alike


# -- Luma's own API ----------------------------------------------------------------------------

MODEL_NAMES = {"ray-v2": "ray-2"}  # the proxy's names with a counterpart (ray-v1 has none)
DURATIONS = ("5s", "9s")  # the SDK's values, as resolution and aspect ratio are the API's own


def model_name(name: str) -> str | None:
    """A model name in Luma's words: its own pass, the proxy's `ray-v2` is `ray-2`; None when
    Luma has no such model (the proxy's `ray-v1`, say)."""
    name = name.strip().lower()
    name = MODEL_NAMES.get(name, name)
    return name if name in LUMA_MODELS else None


def _is_url(value: str) -> bool:
    return value.lower().startswith(("http://", "https://"))


class LumaDialect:
    """Luma's own Dream Machine API (upstream.md, "Luma's own API").

    One create route for everything: an extend is a create whose `keyframes.frame0` is the
    source generation, a start image is `frame0 {"type": "image", "url"}`, an end image
    `frame1`. Queries are `GET /generations/{id}`; there is no batch query and no download
    link route (the Generation object's `assets.video` is the link). The balance is
    `GET /credits`. The proxy's words map to Luma's: `user_prompt` -> `prompt`,
    `notify_hook` -> `callback_url`, `model_name` -> `model` (`ray-v2` is `ray-2`; Luma's own
    names pass; `ray-v1` has no counterpart and is refused at submit). `model` is required on
    every create (the SDK's contract): LUMA_MODEL when the task names none. `expand_prompt`
    has no counterpart and is not sent. Luma takes image URLs only.
    """

    name = "luma"
    default_base = DEFAULT_BASES["luma"]
    has_batch = False
    has_download_url = False
    credits_path: str | None = "/credits"

    def request(
        self, operation: Operation, callback_url: str | None, model: str = LUMA_MODELS[0]
    ) -> Request:
        body: dict[str, Any] = {"prompt": operation.prompt}
        if callback_url:
            body["callback_url"] = callback_url
        keyframes: dict[str, Any] = {}
        body["model"] = model
        match operation:
            case Generate():
                if operation.model_name is not None:
                    body["model"] = model_name(str(operation.model_name)) or model
                options = _options(operation)
                del options["model_name"]
                body.update(_given(options))
                if operation.image_url:
                    keyframes["frame0"] = {"type": "image", "url": operation.image_url}
            case Extend():  # one create route: the source generation is the first keyframe
                keyframes["frame0"] = {"type": "generation", "id": operation.source_id}
            case _:
                assert_never(operation)
        if operation.image_end_url:
            keyframes["frame1"] = {"type": "image", "url": operation.image_end_url}
        if keyframes:
            body["keyframes"] = keyframes
        return Request("/generations", body)

    def query_path(self, upstream_id: str) -> str:
        return f"/generations/{_segment(upstream_id)}"

    def batch_path(self) -> str | None:
        return None

    def list_path(self, offset: int, limit: int) -> str | None:
        return f"/generations?limit={limit}&offset={offset}"

    def download_url_path(self, upstream_id: str) -> str | None:
        return None

    def unsupported(self, operation: Operation) -> tuple[str, str] | None:
        if isinstance(operation, Generate):
            problem = _luma_options(operation)
            if problem is not None:
                return problem
        images = {"image_url": operation.image_url, "image_end_url": operation.image_end_url}
        for field, value in images.items():
            if value and not _is_url(value):
                return (
                    field,
                    f"{field} must be an http(s) URL: Luma's own API (LUMA_API_FLAVOR=luma) "
                    "takes no base64 images",
                )
        if isinstance(operation, Extend) and operation.image_url:
            return (
                "image_url",
                "image_url cannot go with source_task_id on Luma's own API: the extended "
                "generation is the first frame (give image_end_url for the last)",
            )
        return None


def _luma_options(operation: Generate) -> tuple[str, str] | None:
    """A generation's options Luma's own API refuses (its SDK's values)."""
    named = operation.model_name
    if named is not None and model_name(str(named)) is None:
        accepted = ", ".join([*LUMA_MODELS, *MODEL_NAMES])
        return "model_name", f"model_name must be one of {accepted} on Luma's own API"
    if operation.duration is not None and operation.duration not in DURATIONS:
        return "duration", f"duration must be one of {', '.join(DURATIONS)} on Luma's own API"
    return None  # aspect_ratio, resolution and loop: the API's own rules take the SDK's values


_DIALECTS: dict[str, Dialect] = {"proxy": ProxyDialect(), "luma": LumaDialect()}


def get(name: str) -> Dialect:
    """The dialect LUMA_API_FLAVOR names; ValueError for an unknown name."""
    try:
        return _DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown upstream dialect {name!r}") from None
