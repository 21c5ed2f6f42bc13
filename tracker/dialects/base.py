"""What every dialect shares: the task it builds a request from, the request, the protocol.

Kept apart from the package's __init__ so that `proxy` and `luma` import these without
importing the package that imports them (no cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

FLAVORS = ("proxy", "luma")


class TaskLike(Protocol):
    """What a request body is built from: a stored Task or a NewTask."""

    kind: str
    user_prompt: str
    source_task_id: str | None
    expand_prompt: bool | None
    image_url: str | None
    image_end_url: str | None
    options: dict[str, Any] | None


@dataclass(frozen=True)
class Request:
    """One create as the upstream wants it."""

    path: str
    body: dict[str, Any]


class Dialect(Protocol):
    name: str
    default_base: str
    has_batch: bool
    has_download_url: bool
    credits_path: str | None

    def create_request(self, task: TaskLike, callback_url: str | None) -> Request: ...

    def query_path(self, upstream_id: str) -> str: ...

    def batch_path(self) -> str | None: ...

    def download_url_path(self, upstream_id: str) -> str | None: ...

    def unsupported(self, task: TaskLike) -> tuple[str, str] | None:
        """(field, reason) when this API cannot take the task as given, else None."""
        ...
