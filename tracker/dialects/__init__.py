"""One module per upstream API the tracker can speak: its paths and its request bodies.

Why a package: the reseller proxy (`proxy`) and Luma's own API (`luma`) take the same
work in different words (`user_prompt` vs `prompt`, an extend path vs keyframes, a batch
query or none). Everything that differs between them lives in these modules, so the rest
of the tracker (lifecycle, worker, web) asks a `Dialect` instead of spelling paths.
Parsing the answers stays in `tracker.parse`, which understands both.

`LUMA_API_FLAVOR` picks the dialect (settings.luma_api_flavor); each task stores the one
it was sent with in `tasks.upstream`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

FLAVORS = ("proxy", "luma")


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


def get(flavor: str) -> Dialect:
    """The dialect named by LUMA_API_FLAVOR; ValueError for an unknown name."""
    from . import luma, proxy

    dialects: dict[str, Dialect] = {"proxy": proxy.DIALECT, "luma": luma.DIALECT}
    try:
        return dialects[flavor]
    except KeyError:
        raise ValueError(f"unknown upstream dialect {flavor!r}") from None


def default_base(flavor: str) -> str:
    return get(flavor).default_base
