"""The simulator's second voice: Luma's own Dream Machine API (upstream.md, "Luma's own API").

Kept beside `simulator.py` (which holds the clock, callbacks, links and faults shared by
both voices) so that each file stays readable. What differs is here: the routes, the
create body (`prompt`, `callback_url`, `model`, `keyframes`), Luma's refusals in its own
words, and the Generation object (`state` queued/dreaming/completed/failed, `assets`).
The other operations (upscale, audio, modify, reframe, image) are checked in
`luma_checks.py` and answered in `luma_routes.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from werkzeug.routing import Rule

# what Luma's API takes, as its SDK (lumaai 1.21.0, generated from its OpenAPI document) says
MODELS = ("ray-2", "ray-flash-2")
IMAGE_MODELS = ("photon-1", "photon-flash-1")
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
RESOLUTIONS = ("540p", "720p", "1080p", "4k")
DURATIONS = ("5s", "9s")
LUMA_STATE = {"pending": "queued", "processing": "dreaming"}  # completed/failed as they are
VIDEO_COST_CENTS = 40  # what one simulated generation takes off the balance
IMAGE_COST_CENTS = 2  # and one image (photon)


def rules() -> list[Rule]:
    return [
        Rule("/generations", methods=["POST"], endpoint="create"),
        Rule("/generations/video", methods=["POST"], endpoint="create"),
        Rule("/generations", methods=["GET"], endpoint="list"),
        Rule("/generations/<task_id>", methods=["GET"], endpoint="query"),
        Rule("/generations/<task_id>/upscale", methods=["POST"], endpoint="upscale"),
        Rule("/generations/<task_id>/audio", methods=["POST"], endpoint="audio"),
        Rule("/generations/video/modify", methods=["POST"], endpoint="modify"),
        Rule("/generations/video/reframe", methods=["POST"], endpoint="reframe"),
        Rule("/generations/image", methods=["POST"], endpoint="image"),
        Rule("/generations/image/reframe", methods=["POST"], endpoint="reframe_image"),
        Rule("/credits", methods=["GET"], endpoint="credits"),
    ]


def prompt_of(body: dict[str, Any]) -> str:
    value = body.get("prompt")
    return value if isinstance(value, str) else ""


def callback_of(body: dict[str, Any]) -> str | None:
    hook = body.get("callback_url")
    return hook if isinstance(hook, str) and hook.startswith("http") else None


def source_of(body: dict[str, Any]) -> str | None:
    """The generation an extend continues: a `generation` keyframe (frame0, or frame1: reverse)."""
    frames = body.get("keyframes")
    if not isinstance(frames, dict):
        return None
    for name in ("frame0", "frame1"):
        frame = frames.get(name)
        if isinstance(frame, dict) and frame.get("type") == "generation":
            found = frame.get("id")
            return found if isinstance(found, str) else ""
    return None


def refusal(body: dict[str, Any], source_state: str | None) -> str | None:
    """Luma's refusals of a create, in its words; None when it would accept the body.

    `source_state` is the extended generation's state (None: no such generation).
    """
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "Prompt is required"
    if len(prompt.strip()) < 3:
        return "Prompt is too short, minimum length is 3 characters"
    if len(prompt) > 5000:
        return "Prompt is too long, maximum length is 5000 characters"
    model = body.get("model")
    if model is None:
        return f"model is required: one of {', '.join(MODELS)}"
    if model not in MODELS:
        return f"Invalid model: {model}. Use one of {', '.join(MODELS)}"
    for name, allowed in (
        ("aspect_ratio", ASPECT_RATIOS),
        ("resolution", RESOLUTIONS),
        ("duration", DURATIONS),
    ):
        if name in body and body[name] not in allowed:
            return f"Invalid {name}: {body[name]}. Use one of {', '.join(allowed)}"
    frames = body.get("keyframes")
    if frames is not None and not isinstance(frames, dict):
        return "keyframes must be an object"
    for name, frame in (frames or {}).items():
        if name not in ("frame0", "frame1") or not isinstance(frame, dict):
            return f"Invalid keyframe: {name}"
        if frame.get("type") == "image":
            url = frame.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                return f"Invalid image url in {name}: a URL is required"
        elif frame.get("type") != "generation":
            return f"Invalid keyframe type in {name}"
    extends = source_of(body) is not None
    if extends and body.get("loop"):
        return "Loop is not supported for extend"
    if extends and source_state is None:
        return "Generation not found"
    if extends and source_state != "completed":
        return f"Only a completed generation can be extended (generation is {source_state})"
    return None


def generation(
    *,
    task_id: str,
    state: str,
    created_at: datetime,
    request: dict[str, Any],
    video_url: str | None,
    image_url: str | None,
    failure_reason: str | None,
    generation_type: str = "video",
    model: str | None = None,
) -> dict[str, Any]:
    """The Generation object, as Luma's OpenAPI document and SDK types show it.

    `request` is the latest request made of this generation (a create, or an upscale or audio
    rerun, whose echo has no model: `model` is the creating one); `generation_type` is video
    or image, the only two the SDK's Generation knows, whatever operation made it.
    """
    assets = None
    if state == "completed":
        assets = {"video": video_url, "image": image_url, "progress_video": None}
    return {
        "id": task_id,
        "generation_type": generation_type,
        "state": LUMA_STATE.get(state, state),
        "failure_reason": failure_reason,
        "created_at": created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "assets": assets,
        "model": model or request.get("model") or "ray-2",
        "request": {"generation_type": "video", **request},
    }
