"""What every dialect shares: the task it builds a request from, the request, the protocol.

Kept apart from the package's __init__ so that `proxy` and `luma` import these without
importing the package that imports them (no cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class TaskLike(Protocol):
    """What a request body is built from: a stored Task or a NewTask.

    Read-only properties: a dialect only reads them, and so a Task, whose `options` is never
    None, fits as well as a NewTask, whose `options` may be.
    """

    @property
    def kind(self) -> str: ...
    @property
    def user_prompt(self) -> str: ...
    @property
    def source_task_id(self) -> str | None: ...
    @property
    def expand_prompt(self) -> bool | None: ...
    @property
    def image_url(self) -> str | None: ...
    @property
    def image_end_url(self) -> str | None: ...
    @property
    def options(self) -> dict[str, Any] | None: ...


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
