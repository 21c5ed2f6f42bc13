"""One module per upstream API the tracker can speak: its paths and its request bodies.

Why a package: the reseller proxy (`proxy`) and Luma's own API (`luma`) take the same
work in different words (`user_prompt` vs `prompt`, an extend path vs keyframes, a batch
query or none). Everything that differs between them lives in these modules, so the rest
of the tracker (lifecycle, worker, web) asks a `Dialect` instead of spelling paths.
Parsing the answers stays in `tracker.upstream.parse`, which understands both.

`LUMA_API_FLAVOR` picks the dialect (settings.luma_api_flavor); each task stores the one
it was sent with in `tasks.upstream`.
"""

from __future__ import annotations

from tracker.settings import DIALECTS as FLAVORS
from tracker.upstream.dialects import luma, proxy
from tracker.upstream.dialects.base import Dialect, Request, TaskLike

__all__ = ["FLAVORS", "Dialect", "Request", "TaskLike", "default_base", "get"]


def get(flavor: str) -> Dialect:
    """The dialect named by LUMA_API_FLAVOR; ValueError for an unknown name."""
    dialects: dict[str, Dialect] = {"proxy": proxy.DIALECT, "luma": luma.DIALECT}
    try:
        return dialects[flavor]
    except KeyError:
        raise ValueError(f"unknown upstream dialect {flavor!r}") from None


def default_base(flavor: str) -> str:
    return get(flavor).default_base
