"""Luma's own Dream Machine API, the `luma` dialect (upstream.md, "Luma's own API").

Its official SDK (`lumaai`, generated from Luma's OpenAPI document) is the contract: the
tests validate every body built here as the SDK's params types. One create route makes a
video from a prompt: an extend is a create whose `keyframes.frame0` is the source
generation, a start image `frame0 {"type": "image", "url"}`, an end image `frame1`. The
other operations have routes of their own: `/generations/{id}/upscale` and `/audio` work on
a generation of the account, `/generations/video/modify` and `/reframe` on any video by URL
(`media.url`), `/generations/image` makes a still with Photon.

The proxy's words map to Luma's: `user_prompt` -> `prompt`, `notify_hook` -> `callback_url`,
`model_name` -> `model` (`ray-v2` is `ray-2`; Luma's own names pass; `ray-v1` has no
counterpart and is refused at submit). `model` is required on every video create: LUMA_MODEL
when the task names none; an image's is Photon's (`photon-1` by default). `expand_prompt`
has no counterpart and is not sent. Luma takes image URLs only. Queries are `GET
/generations/{id}`; there is no batch query and no download-link route (the Generation's
`assets.video`, or `assets.image` for an image, is the link). The balance is `GET /credits`.
"""

from __future__ import annotations

from typing import Any, assert_never
from urllib.parse import quote

from tracker.settings import DEFAULT_BASES, LUMA_MODELS
from tracker.tasks.models import KINDS
from tracker.upstream.operations import (
    GENERATE_OPTIONS,
    Audio,
    Extend,
    Generate,
    Image,
    Modify,
    Operation,
    Reframe,
    Request,
    Upscale,
)

MODEL_NAMES = {"ray-v2": "ray-2"}  # the proxy's names with a counterpart (ray-v1 has none)
DURATIONS = ("5s", "9s")  # the SDK's values, as resolution and aspect ratio are the API's own
IMAGE_MODELS = ("photon-1", "photon-flash-1")
# how far a modified video may stray from its source, closest first (the SDK's nine)
MODES = tuple(f"{way}_{n}" for way in ("adhere", "flex", "reimagine") for n in (1, 2, 3))


def segment(value: str) -> str:
    return quote(value, safe="")


def given(fields: dict[str, Any]) -> dict[str, Any]:
    """Only what was given: a field left out is not sent, not even empty."""
    return {name: value for name, value in fields.items() if value is not None}


def model_name(name: str) -> str | None:
    """A video model name in Luma's words: its own pass, the proxy's `ray-v2` is `ray-2`; None
    when Luma has no such model (the proxy's `ray-v1`, say)."""
    name = name.strip().lower()
    name = MODEL_NAMES.get(name, name)
    return name if name in LUMA_MODELS else None


def _is_url(value: str) -> bool:
    return value.lower().startswith(("http://", "https://"))


def _model(named: str | None, default: str) -> str:
    return (model_name(named) if named else None) or default


def _frame(url: str | None) -> dict[str, str] | None:
    return {"type": "image", "url": url} if url else None


def _media(url: str | None) -> dict[str, str] | None:
    return {"url": url} if url else None


def _wire(operation: Operation, model: str) -> tuple[str, dict[str, Any]]:
    """The path and the body of an operation, callback URL aside."""
    match operation:
        case Generate():
            body: dict[str, Any] = {"prompt": operation.prompt}
            body["model"] = _model(operation.model_name, model)
            body |= given({name: getattr(operation, name) for name in GENERATE_OPTIONS[:-1]})
            frames: dict[str, Any] = {"frame0": _frame(operation.image_url)}
        case Extend():  # one create route: the source generation is the first keyframe
            body = {"prompt": operation.prompt, "model": _model(operation.model_name, model)}
            frames = {"frame0": {"type": "generation", "id": operation.source_id}}
        case Upscale():
            path = f"/generations/{segment(operation.source_id)}/upscale"
            return path, {"generation_type": "upscale_video"} | given(
                {"resolution": operation.resolution}
            )
        case Audio():
            path = f"/generations/{segment(operation.source_id)}/audio"
            words = {
                "prompt": operation.prompt or None,
                "negative_prompt": operation.negative_prompt,
            }
            return path, {"generation_type": "add_audio"} | given(words)
        case Modify() | Reframe():
            if not operation.video_url:  # read from the source at dispatch (flows.submit)
                raise ValueError("the source video's URL is not known yet")
            body = {"media": {"url": operation.video_url}}
            body |= {"model": _model(operation.model_name, model)}
            body |= given({"prompt": operation.prompt or None})
            if isinstance(operation, Modify):
                body |= {"generation_type": "modify_video", "mode": operation.mode}
                return "/generations/video/modify", body | given(
                    {"first_frame": _media(operation.first_frame_url)}
                )
            body |= {"generation_type": "reframe_video", "aspect_ratio": operation.aspect_ratio}
            return "/generations/video/reframe", body
        case Image():
            body = {"generation_type": "image", "prompt": operation.prompt}
            body["model"] = operation.model_name or IMAGE_MODELS[0]
            body |= given({"aspect_ratio": operation.aspect_ratio})
            refs = {"image_ref": operation.image_url, "style_ref": operation.style_url}
            return "/generations/image", body | {k: [{"url": u}] for k, u in refs.items() if u}
        case _:
            assert_never(operation)
    frames |= {"frame1": _frame(operation.image_end_url)}
    if given(frames):
        body["keyframes"] = given(frames)
    return "/generations", body


def _url_only(fields: dict[str, str | None]) -> tuple[str, str] | None:
    for field, value in fields.items():
        if value and not _is_url(value):
            return (
                field,
                f"{field} must be an http(s) URL: Luma's own API (LUMA_API_FLAVOR=luma) "
                "takes no base64 images",
            )
    return None


def _video_model(named: str | None) -> tuple[str, str] | None:
    if named is not None and model_name(str(named)) is None:
        accepted = ", ".join([*LUMA_MODELS, *MODEL_NAMES])
        return "model_name", f"model_name must be one of {accepted} on Luma's own API"
    return None


def _refused(operation: Operation) -> tuple[str, str] | None:
    """What of an operation Luma's own API refuses (its SDK's values), field first."""
    match operation:
        case Generate():
            if operation.duration is not None and operation.duration not in DURATIONS:
                allowed = ", ".join(DURATIONS)
                return "duration", f"duration must be one of {allowed} on Luma's own API"
            urls = {"image_url": operation.image_url, "image_end_url": operation.image_end_url}
            return _video_model(operation.model_name) or _url_only(urls)
        case Extend():
            if operation.image_url:
                return (
                    "image_url",
                    "image_url cannot go with source_task_id on Luma's own API: the extended "
                    "generation is the first frame (give image_end_url for the last)",
                )
            end = {"image_end_url": operation.image_end_url}
            return _video_model(operation.model_name) or _url_only(end)
        case Modify():
            urls = {"source_video_url": operation.video_url}
            urls["first_frame_url"] = operation.first_frame_url
            return _video_model(operation.model_name) or _url_only(urls)
        case Reframe():
            urls = {"source_video_url": operation.video_url}
            return _video_model(operation.model_name) or _url_only(urls)
        case Image():
            if operation.model_name is not None and operation.model_name not in IMAGE_MODELS:
                allowed = ", ".join(IMAGE_MODELS)
                return "model_name", f"model_name must be one of {allowed} for an image"
            return _url_only({"image_url": operation.image_url, "style_url": operation.style_url})
    return None  # upscale and audio: the body's own rules take the SDK's values


class LumaDialect:
    name = "luma"
    default_base = DEFAULT_BASES["luma"]
    kinds: tuple[str, ...] = KINDS
    has_batch = False
    has_download_url = False
    credits_path: str | None = "/credits"

    def request(
        self, operation: Operation, callback_url: str | None, model: str = LUMA_MODELS[0]
    ) -> Request:
        """The wire request; `model`: the video model when the task names none (LUMA_MODEL)."""
        path, body = _wire(operation, model)
        if callback_url:
            body["callback_url"] = callback_url
        return Request(path, body)

    def query_path(self, upstream_id: str) -> str:
        return f"/generations/{segment(upstream_id)}"

    def batch_path(self) -> str | None:
        return None

    def list_path(self, offset: int, limit: int) -> str | None:
        return f"/generations?limit={limit}&offset={offset}"

    def download_url_path(self, upstream_id: str) -> str | None:
        return None

    def unsupported(self, operation: Operation) -> tuple[str, str] | None:
        return _refused(operation)
