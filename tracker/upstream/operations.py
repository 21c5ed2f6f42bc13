"""One typed request per operation: what each thing we ask the upstream to do takes.

A task row says what was asked (its kind, prompt, images, options, the source generation);
`operation_for` reads it into one of these frozen values, and a dialect turns one, with the
callback URL, into its wire request (`Dialect.request`: a path and a body). Nothing past
this module reads a task row to build a request.

A new operation (upscale, add audio, modify, reframe, an image) is one dataclass here, its
place in `operation_for`, and its wire mapping in each dialect's `request` (a dialect
without it refuses it in `unsupported`).
"""

from __future__ import annotations

from dataclasses import dataclass
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


Operation = Generate | Extend


def operation_for(task: Task | NewTask) -> Operation:
    """The operation a task (stored, or about to be) asks for.

    An extend names its source; a task of another kind, or an extend without a source, is a
    generation (its options count only when it is one: an extend takes none).
    """
    if task.kind == "extend" and task.source_task_id:
        return Extend(
            task.source_task_id,
            task.user_prompt,
            expand_prompt=task.expand_prompt,
            image_url=task.image_url,
            image_end_url=task.image_end_url,
        )
    given: dict[str, Any] = (task.options or {}) if task.kind == "generate" else {}
    return Generate(
        task.user_prompt,
        expand_prompt=task.expand_prompt,
        image_url=task.image_url,
        image_end_url=task.image_end_url,
        **{name: given.get(name) for name in GENERATE_OPTIONS},
    )
