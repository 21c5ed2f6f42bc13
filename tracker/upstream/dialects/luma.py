"""Luma's own Dream Machine API (upstream.md, "Luma's own API"): the second dialect.

One create route for everything: an extend is a create whose `keyframes.frame0` is the
source generation, a start image is `frame0 {"type": "image", "url"}`, an end image
`frame1`. Queries are `GET /generations/{id}`; there is no batch query and no download
link route (the Generation object's `assets.video` is the link). The balance is
`GET /credits`.

The proxy's words map to Luma's: `user_prompt` -> `prompt`, `notify_hook` -> `callback_url`,
`model_name` `ray-v1` -> `ray-1-6` and `ray-v2` -> `ray-2` (Luma's own names pass as they
are). `expand_prompt` has no counterpart and is not sent. Luma takes image URLs only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tracker.settings import DEFAULT_BASES
from tracker.upstream.dialects.base import Request, TaskLike

MODEL_NAMES = {"ray-v1": "ray-1-6", "ray-v2": "ray-2"}
IMAGE_FIELDS = ("image_url", "image_end_url")


def model_name(name: str) -> str:
    """The proxy's model names in Luma's words; anything else is taken as Luma's own."""
    return MODEL_NAMES.get(name.strip().lower(), name)


def _is_url(value: str) -> bool:
    return value.lower().startswith(("http://", "https://"))


class LumaDialect:
    name = "luma"
    default_base = DEFAULT_BASES["luma"]
    has_batch = False
    has_download_url = False
    credits_path: str | None = "/credits"

    def create_request(self, task: TaskLike, callback_url: str | None) -> Request:
        body: dict[str, Any] = {"prompt": task.user_prompt}
        if callback_url:
            body["callback_url"] = callback_url
        options = {k: v for k, v in (task.options or {}).items() if v is not None}
        if "model_name" in options:
            body["model"] = model_name(str(options.pop("model_name")))
        for key in ("aspect_ratio", "loop", "resolution", "duration"):
            if key in options:
                body[key] = options[key]
        keyframes: dict[str, Any] = {}
        if task.kind == "extend" and task.source_task_id:
            keyframes["frame0"] = {"type": "generation", "id": task.source_task_id}
        elif task.image_url:
            keyframes["frame0"] = {"type": "image", "url": task.image_url}
        if task.image_end_url:
            keyframes["frame1"] = {"type": "image", "url": task.image_end_url}
        if keyframes:
            body["keyframes"] = keyframes
        return Request("/generations", body)

    def query_path(self, upstream_id: str) -> str:
        return f"/generations/{quote(upstream_id, safe='')}"

    def batch_path(self) -> str | None:
        return None

    def download_url_path(self, upstream_id: str) -> str | None:
        return None

    def unsupported(self, task: TaskLike) -> tuple[str, str] | None:
        for field in IMAGE_FIELDS:
            value = getattr(task, field)
            if value and not _is_url(value):
                return (
                    field,
                    f"{field} must be an http(s) URL: Luma's own API (LUMA_API_FLAVOR=luma) "
                    "takes no base64 images",
                )
        if task.kind == "extend" and task.image_url:
            return (
                "image_url",
                "image_url cannot go with source_task_id on Luma's own API: the extended "
                "generation is the first frame (give image_end_url for the last)",
            )
        return None


DIALECT = LumaDialect()
