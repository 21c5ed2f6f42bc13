"""The dialects: each upstream API the tracker can speak, its paths and its words.

The reseller proxy (`proxy`, the default) and Luma's own API (`luma`) take the same work in
different words (`user_prompt` vs `prompt`, an extend path vs keyframes, a batch query or
none). Everything that differs between them lives here, so the rest of the tracker asks a
`Dialect` instead of spelling paths: `request` turns an operation (`upstream.operations`)
and the callback URL into the wire request. Reading the answers is `tracker.upstream.parse`'s,
which understands both. LUMA_API_FLAVOR picks the dialect (its names and default base URLs are
`tracker.settings.DIALECTS` and `DEFAULT_BASES`); each task stores the one it was sent with
in `tasks.upstream`.
"""

from __future__ import annotations

from typing import Any, Protocol

from tracker.settings import DEFAULT_BASES, LUMA_MODELS
from tracker.upstream.luma import LumaDialect, given, segment
from tracker.upstream.operations import (
    GENERATE_OPTIONS,
    Extend,
    Generate,
    Operation,
    Request,
    kind_of,
)


class Dialect(Protocol):
    name: str
    default_base: str
    kinds: tuple[str, ...]  # the operations it offers (tasks.models.KINDS)
    has_batch: bool
    has_download_url: bool
    credits_path: str | None

    def request(
        self, operation: Operation, callback_url: str | None, model: str = LUMA_MODELS[0]
    ) -> Request:
        """The wire request; `model`: the video model when the task names none (LUMA_MODEL)."""
        ...

    def query_path(self, upstream_id: str) -> str: ...

    def batch_path(self) -> str | None: ...

    def list_path(self, offset: int, limit: int) -> str | None:
        """A page of the account's generations, newest first (None: the API lists none)."""
        ...

    def download_url_path(self, upstream_id: str) -> str | None: ...

    def unsupported(self, operation: Operation) -> tuple[str, str] | None:
        """(field, reason) when this API cannot take the operation as given, else None."""
        ...


# -- the reseller proxy ------------------------------------------------------------------------


class ProxyDialect:
    """The reseller proxy (upstream.md, "Endpoints"): today's API, the default.

    `POST /luma/generations` creates, `POST /luma/generations/{id}/extend` extends, `GET
    /luma/generations/{id}` queries one, `POST /luma/tasks` queries many, and some resellers
    hand out a fresh download link. The callback URL travels as `notify_hook`.
    """

    name = "proxy"
    default_base = DEFAULT_BASES["proxy"]
    kinds: tuple[str, ...] = ("generate", "extend")
    has_batch = True
    has_download_url = True
    credits_path: str | None = None

    def request(
        self, operation: Operation, callback_url: str | None, model: str = LUMA_MODELS[0]
    ) -> Request:  # the proxy picks its own model when none is named: `model` is not sent
        """Optional fields the user did not give are left out, not sent empty."""
        match operation:
            case Generate():
                path = "/luma/generations"
                options = {name: getattr(operation, name) for name in GENERATE_OPTIONS}
                extra = given(options)  # the options in the proxy's words
            case Extend():
                path = f"/luma/generations/{segment(operation.source_id)}/extend"
                extra = given({"model_name": operation.model_name})
            case _:  # refused at submit (`unsupported`): nothing of it is ever stored
                raise ValueError(f"the proxy offers no {kind_of(operation)}")
        body: dict[str, Any] = {"user_prompt": operation.prompt}
        if operation.expand_prompt is not None:
            body["expand_prompt"] = operation.expand_prompt
        body |= given({"image_url": operation.image_url or None})
        body |= given({"image_end_url": operation.image_end_url or None}) | extra
        if callback_url:
            body["notify_hook"] = callback_url
        return Request(path, body)

    def query_path(self, upstream_id: str) -> str:
        return f"/luma/generations/{segment(upstream_id)}"

    def batch_path(self) -> str | None:
        return "/luma/tasks"

    def list_path(self, offset: int, limit: int) -> str | None:
        return None

    def download_url_path(self, upstream_id: str) -> str | None:
        return f"/luma/generations/{segment(upstream_id)}/download_video_url"

    def unsupported(self, operation: Operation) -> tuple[str, str] | None:
        """Only generate and extend; URLs and base64 images alike."""
        if not isinstance(operation, Generate | Extend):
            kind = kind_of(operation)
            return "kind", (
                f"kind {kind} is offered by Luma's own API (LUMA_API_FLAVOR=luma); the proxy "
                "offers generate and extend"
            )
        return None


_DIALECTS: dict[str, Dialect] = {"proxy": ProxyDialect(), "luma": LumaDialect()}


def get(name: str) -> Dialect:
    """The dialect LUMA_API_FLAVOR names; ValueError for an unknown name."""
    try:
        return _DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown upstream dialect {name!r}") from None
