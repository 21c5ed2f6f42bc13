"""What Luma's operations beside create take: the refusals, in its words, and the `request` each
generation echoes back.

Why a table rather than a function per operation: the SDK (lumaai 1.21.0, generated from
Luma's OpenAPI document) gives each operation the same few kinds of field (a fixed
`generation_type`, a model, choices such as `mode` or `aspect_ratio`, media links, crop
integers), so one reading of the table checks them all and the refusals read alike. The
echo keeps only the operation's own keys, with its `generation_type` set, so that it
validates as exactly one member of the SDK's `Generation.request` union.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lumasim.luma import ASPECT_RATIOS, IMAGE_MODELS, LUMA_STATE, MODELS, RESOLUTIONS

MODES = tuple(f"{kind}_{n}" for kind in ("adhere", "flex", "reimagine") for n in (1, 2, 3))
FORMATS = ("jpg", "png")
CROP = (
    "grid_position_x",
    "grid_position_y",
    "resized_height",
    "resized_width",
    "x_end",
    "x_start",
    "y_end",
    "y_start",
)
RERUNS = {"upscale": "upscaled", "audio": "given audio"}  # the ones that keep the source's id
SYNC_TIMEOUT = 60.0  # seconds an image created with sync=true waits at most, unless it says


@dataclass(frozen=True)
class Operation:
    """One operation's fields, as its SDK params type (and request model) declares them."""

    generation_type: str  # the only value its body may give, echoed back in `request`
    type_required: bool
    models: tuple[str, ...]  # empty: the operation takes no model (a rerun keeps the source's)
    choices: dict[str, tuple[tuple[str, ...], bool]] = field(default_factory=dict)  # required?
    media: bool = False  # `media` {url} required, `first_frame` {url} optional
    keys: tuple[str, ...] = ()  # every key the request model has: what the echo keeps

    def result(self, body: dict[str, Any]) -> str:
        """The main asset's extension: mp4 for a video, the format asked for an image."""
        if self.models != IMAGE_MODELS:
            return "mp4"
        return "png" if body.get("format") == "png" else "jpg"


OPERATIONS = {
    "upscale": Operation(
        "upscale_video",
        False,
        (),
        {"resolution": (RESOLUTIONS, False)},
        keys=("callback_url", "resolution"),
    ),
    "audio": Operation("add_audio", False, (), keys=("callback_url", "prompt", "negative_prompt")),
    "modify": Operation(
        "modify_video",
        True,
        MODELS,
        {"mode": (MODES, True)},
        media=True,
        keys=("callback_url", "media", "mode", "model", "prompt", "first_frame"),
    ),
    "reframe": Operation(
        "reframe_video",
        True,
        MODELS,
        {"aspect_ratio": (ASPECT_RATIOS, True)},
        media=True,
        keys=("aspect_ratio", "callback_url", "media", "model", "prompt", "first_frame", *CROP),
    ),
    "image": Operation(
        "image",
        False,
        IMAGE_MODELS,
        {"aspect_ratio": (ASPECT_RATIOS, False), "format": (FORMATS, False)},
        keys=(
            "aspect_ratio",
            "callback_url",
            "character_ref",
            "format",
            "image_ref",
            "modify_image_ref",
            "model",
            "prompt",
            "style_ref",
            "sync",
            "sync_timeout",
        ),
    ),
    "reframe_image": Operation(
        "reframe_image",
        True,
        IMAGE_MODELS,
        {"aspect_ratio": (ASPECT_RATIOS, True), "format": (FORMATS, False)},
        media=True,
        keys=("aspect_ratio", "callback_url", "format", "media", "model", "prompt", *CROP),
    ),
}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _link_refusal(name: str, value: Any) -> str | None:
    """A media entity ({url}) must carry a web link, as keyframe images must."""
    if not isinstance(value, dict) or value.get("url") is None:
        return f"{name}.url is required"
    url = value["url"]
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return f"Invalid {name}.url: a URL is required"
    return None


def _typed_refusal(body: dict[str, Any]) -> str | None:
    """The free fields' types: text, crop integers, reference lists, the sync switch."""
    for name in ("prompt", "negative_prompt", "callback_url"):
        if name in body and not isinstance(body[name], str | None):
            return f"{name} must be a string"
    if len(body.get("prompt") or "") > 5000:
        return "Prompt is too long, maximum length is 5000 characters"
    for name in CROP:
        if name in body and (not isinstance(body[name], int) or isinstance(body[name], bool)):
            return f"{name} must be an integer"
    for name in ("image_ref", "style_ref"):
        refs = body.get(name)
        if refs is None:
            continue
        if not isinstance(refs, list) or not all(isinstance(ref, dict) for ref in refs):
            return f"{name} must be a list of {{url, weight}} objects"
        for ref in refs:
            if not isinstance(ref.get("url"), str | None):
                return f"Invalid {name} url: a URL is required"
            weight = ref.get("weight")
            if weight is not None and not _number(weight):
                return f"Invalid {name} weight: a number is required"
    for name in ("character_ref", "modify_image_ref"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            return f"{name} must be an object"
    if not isinstance(body.get("sync", False), bool | None):
        return "sync must be a boolean"
    timeout = body.get("sync_timeout")
    if timeout is not None and not _number(timeout):
        return "sync_timeout must be a number"
    return None


def refusal(name: str, body: dict[str, Any]) -> str | None:
    """Luma's refusal of operation `name`'s body, in its words; None when it would take it."""
    operation = OPERATIONS[name]
    given = body.get("generation_type")
    if given is None and operation.type_required:
        return f"generation_type is required: {operation.generation_type}"
    if given is not None and given != operation.generation_type:
        return f"Invalid generation_type: {given}. Use {operation.generation_type}"
    if operation.models:
        model = body.get("model")
        if model is None:
            return f"model is required: one of {', '.join(operation.models)}"
        if model not in operation.models:
            return f"Invalid model: {model}. Use one of {', '.join(operation.models)}"
    for key, (allowed, required) in operation.choices.items():
        if body.get(key) is None and required:
            return f"{key} is required: one of {', '.join(allowed)}"
        if body.get(key) is not None and body[key] not in allowed:
            return f"Invalid {key}: {body[key]}. Use one of {', '.join(allowed)}"
    if operation.media:
        found = _link_refusal("media", body.get("media"))
        if found:
            return found
        if body.get("first_frame") is not None:
            found = _link_refusal("first_frame", body["first_frame"])
            if found:
                return found
    return _typed_refusal(body)


def rerun_refusal(name: str, state: str, output: str) -> str | None:
    """An upscale or audio needs a completed video generation to work on."""
    if output != "mp4":
        return f"Only a video generation can be {RERUNS[name]}"
    if state != "completed":
        shown = LUMA_STATE.get(state, state)
        return f"Only a completed generation can be {RERUNS[name]} (generation is {shown})"
    return None


def echo(name: str, body: dict[str, Any]) -> dict[str, Any]:
    """The `request` a generation shows: the operation's own keys, its generation_type set."""
    operation = OPERATIONS[name]
    kept = {key: body[key] for key in operation.keys if body.get(key) is not None}
    return {"generation_type": operation.generation_type, **kept}
