"""The reseller proxy's dialect (upstream.md, "Endpoints"): today's API, the default.

`POST /luma/generations` creates, `POST /luma/generations/{id}/extend` extends, `GET
/luma/generations/{id}` queries one, `POST /luma/tasks` queries many, and some resellers
hand out a fresh download link. The callback URL travels as `notify_hook`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tracker.settings import DEFAULT_BASES
from tracker.upstream.dialects.base import Request, TaskLike


def _segment(value: str) -> str:
    return quote(value, safe="")


class ProxyDialect:
    name = "proxy"
    default_base = DEFAULT_BASES["proxy"]
    has_batch = True
    has_download_url = True
    credits_path: str | None = None

    def create_request(self, task: TaskLike, callback_url: str | None) -> Request:
        """Optional fields the user did not give are left out, not sent empty."""
        body: dict[str, Any] = {"user_prompt": task.user_prompt}
        if task.expand_prompt is not None:
            body["expand_prompt"] = task.expand_prompt
        if task.image_url:
            body["image_url"] = task.image_url
        if task.image_end_url:
            body["image_end_url"] = task.image_end_url
        if task.kind == "generate":
            body.update({k: v for k, v in (task.options or {}).items() if v is not None})
        if callback_url:
            body["notify_hook"] = callback_url
        if task.kind == "extend" and task.source_task_id:
            return Request(f"/luma/generations/{_segment(task.source_task_id)}/extend", body)
        return Request("/luma/generations", body)

    def query_path(self, upstream_id: str) -> str:
        return f"/luma/generations/{_segment(upstream_id)}"

    def batch_path(self) -> str | None:
        return "/luma/tasks"

    def download_url_path(self, upstream_id: str) -> str | None:
        return f"/luma/generations/{_segment(upstream_id)}/download_video_url"

    def unsupported(self, task: TaskLike) -> tuple[str, str] | None:
        return None  # the proxy takes URLs and base64 images alike


DIALECT = ProxyDialect()
