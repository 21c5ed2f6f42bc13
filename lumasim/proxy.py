"""The simulator's first voice: the reseller proxy (upstream.md), the tracker's default.

Beside `luma.py` (Luma's own API): the routes, the refusals in Luma's words, the raw Luma
object the proxy passes through, and the "wrapped" batch shape of the task platform.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from werkzeug.routing import Rule

VIDEO_SIZE = (320, 180)  # the sample files' real size
# the task-platform words of the "wrapped" batch shape (upstream.md, answer shape 3)
WRAPPED_STATUS = {
    "pending": "SUBMITTED",
    "processing": "IN_PROGRESS",
    "completed": "SUCCESS",
    "failed": "FAILURE",
}


def rules() -> list[Rule]:
    return [
        Rule("/luma/generations", methods=["POST"], endpoint="create"),
        Rule("/luma/generations/<task_id>/extend", methods=["POST"], endpoint="extend"),
        Rule("/luma/generations/<task_id>", methods=["GET"], endpoint="query"),
        Rule("/luma/tasks", methods=["POST"], endpoint="batch"),
        Rule(
            "/luma/generations/<task_id>/download_video_url",
            methods=["GET"],
            endpoint="download_url",
        ),
    ]


def refusal(body: dict[str, Any], source_state: str | None, extends: bool) -> str | None:
    """Luma's own refusals, in its words (upstream.md, Errors)."""
    prompt = body.get("user_prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "Prompt is required"
    if len(prompt.strip()) < 3:
        return "Prompt is too short, minimum length is 3 characters"
    if len(prompt) > 5000:
        return "Prompt is too long, maximum length is 5000 characters"
    if extends and "loop" in body:
        return "Loop is not supported for extend"
    if extends and source_state != "completed":
        return f"Only a completed generation can be extended (task is {source_state})"
    return None


def luma_object(
    *,
    task_id: str,
    state: str,
    created_at: datetime,
    request: dict[str, Any],
    video_url: str | None,
    image_url: str | None,
    failure_reason: str | None,
) -> dict[str, Any]:
    """The raw Luma object, as upstream.md shows it (links only once completed)."""
    video = thumbnail = None
    if state == "completed" and video_url and image_url:
        width, height = VIDEO_SIZE
        video = {"url": video_url, "width": width, "height": height, "download_url": video_url}
        thumbnail = {"url": image_url, "width": width, "height": height}
    return {
        "id": task_id,
        "prompt": request.get("user_prompt", ""),
        "state": state,
        "queue_state": None,
        "created_at": created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "batch_id": "",
        "video": video,
        "video_raw": {k: v for k, v in video.items() if k != "download_url"} if video else None,
        "liked": None,
        "estimate_wait_seconds": None,
        "thumbnail": thumbnail,
        "last_frame": dict(thumbnail) if thumbnail else None,
        "failure_reason": failure_reason,
    }


def wrapped(raws: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch answer in the task platform's envelope (upstream.md, answer shape 3)."""
    entries = [
        {
            "task_id": raw["id"],
            "status": WRAPPED_STATUS[raw["state"]],
            "fail_reason": raw["failure_reason"] or "",
            "data": raw,
        }
        for raw in raws
    ]
    return {"code": "success", "data": entries}
