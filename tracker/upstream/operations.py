"""One typed request per operation: what each thing we ask the upstream to do takes.

A task row says what was asked (its kind, prompt, images, options, the source generation);
`operation_for` reads it into one of these frozen values, and a dialect turns one, with the
callback URL, into its wire request (`Dialect.request`: a path and a body). Nothing past
this module reads a task row to build a request.

A new operation is one dataclass here, its place in `operation_for` and `KIND_OPTIONS`, and
its wire mapping in each dialect's `request` (a dialect without it refuses it in
`unsupported`). What the upstream says back about a create is `upstream.creates`'.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from tracker.tasks.models import Task
from tracker.tasks.store import NewTask


@dataclass(frozen=True)
class Generate:
    """A new video from a prompt, optionally from a first frame and towards a last one."""

    prompt: str
    expand_prompt: bool | None = None  # the proxy's prompt expansion (Luma has none)
    image_url: str | None = None  # the first frame: an http(s) URL or base64 image data
    image_end_url: str | None = None  # the last frame, likewise
    aspect_ratio: str | None = None  # "16:9", ...
    loop: bool | None = None
    resolution: str | None = None  # "720p", ...
    duration: str | None = None  # "5s", ...
    model_name: str | None = None  # the proxy's names (ray-v1, ray-v2) or Luma's own


# the generation options a task row keeps in `options`, in the order they are sent
GENERATE_OPTIONS = ("aspect_ratio", "loop", "resolution", "duration", "model_name")


@dataclass(frozen=True)
class Extend:
    """More of a completed generation (`source_id`, its upstream id), from a prompt."""

    source_id: str
    prompt: str
    expand_prompt: bool | None = None
    image_url: str | None = None  # the proxy's first frame; on Luma the source is the first
    image_end_url: str | None = None
    model_name: str | None = None


@dataclass(frozen=True)
class Upscale:
    """A completed video at a higher resolution (Luma's own API)."""

    source_id: str
    resolution: str | None = None


@dataclass(frozen=True)
class Audio:
    """A completed video with a sound track made for it (Luma's own API)."""

    source_id: str
    prompt: str = ""
    negative_prompt: str | None = None


@dataclass(frozen=True)
class Modify:
    """A video restyled (`mode`: how far from the source) from a prompt (Luma's own API).

    The source is a video URL: given (`source_video_url`), or the source generation's video,
    read at dispatch (`video_url` is None until then).
    """

    mode: str
    source_id: str | None = None
    video_url: str | None = None
    prompt: str = ""
    first_frame_url: str | None = None
    model_name: str | None = None


@dataclass(frozen=True)
class Reframe:
    """A video to another aspect ratio, the new space filled in (Luma's own API)."""

    aspect_ratio: str
    source_id: str | None = None
    video_url: str | None = None
    prompt: str = ""
    model_name: str | None = None


@dataclass(frozen=True)
class Image:
    """A still image from a prompt (Luma's Photon), optionally after a reference and a style."""

    prompt: str
    model_name: str | None = None
    aspect_ratio: str | None = None
    image_url: str | None = None  # the image reference
    style_url: str | None = None  # the style reference


Operation = Generate | Extend | Upscale | Audio | Modify | Reframe | Image
# an operation that works on a video the account already has: it reads its source's video
FROM_VIDEO = (Modify, Reframe)
# what each kind keeps in `options` besides the generation's own
KIND_OPTIONS = {
    "extend": ("model_name",),
    "upscale": ("resolution",),
    "audio": ("negative_prompt",),
    "modify": ("mode", "source_video_url", "first_frame_url", "model_name"),
    "reframe": ("aspect_ratio", "source_video_url", "model_name"),
    "image": ("model_name", "aspect_ratio", "style_url"),
    "generate": GENERATE_OPTIONS,
}


def kind_of(operation: Operation) -> str:
    """The task kind an operation is (its class's name: `Upscale` is "upscale")."""
    return type(operation).__name__.lower()


@dataclass(frozen=True)
class Request:
    """One operation as the upstream wants it: the path to POST to and the JSON body."""

    path: str
    body: dict[str, Any]


def operation_for(task: Task | NewTask) -> Operation:
    """The operation a task (stored, or about to be) asks for.

    An extend names its source; a task of an unknown kind, or an extend without a source,
    is a generation (its options count only when it is one).
    """
    given: dict[str, Any] = task.options or {}
    source, prompt = task.source_task_id, task.user_prompt
    match task.kind:
        case "extend" if source:
            return Extend(
                source,
                prompt,
                expand_prompt=task.expand_prompt,
                image_url=task.image_url,
                image_end_url=task.image_end_url,
                model_name=given.get("model_name"),
            )
        case "upscale" if source:
            return Upscale(source, given.get("resolution"))
        case "audio" if source:
            return Audio(source, prompt, given.get("negative_prompt"))
        case "modify":
            video = given.get("source_video_url")
            return Modify(given.get("mode", ""), source, video, prompt, **_picked(given, Modify))
        case "reframe":
            video, ratio = given.get("source_video_url"), given.get("aspect_ratio", "")
            return Reframe(ratio, source, video, prompt, given.get("model_name"))
        case "image":
            return Image(prompt, image_url=task.image_url, **_picked(given, Image))
    generation = given if task.kind == "generate" else {}
    return Generate(
        prompt,
        expand_prompt=task.expand_prompt,
        image_url=task.image_url,
        image_end_url=task.image_end_url,
        **{name: generation.get(name) for name in GENERATE_OPTIONS},
    )


def _picked(given: dict[str, Any], operation: type) -> dict[str, Any]:
    """The stored options an operation takes by their own names (first_frame_url, ...)."""
    names = {"first_frame_url", "model_name", "aspect_ratio", "style_url"}
    return {f.name: given.get(f.name) for f in fields(operation) if f.name in names}
