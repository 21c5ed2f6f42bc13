"""What an imported task was asked to do, read from the upstream's answer about it.

`tracker.upstream.parse` says where a task stands (state, links); an import also needs what it
was made from, to show it like any other task: its prompt, and the video it extends.
Luma's Generation object keeps them under `request` (`request.prompt`,
`request.keyframes.frame0 = {"type": "generation", "id"}`); the proxy's raw object has a
top-level `prompt`; resellers nest either under `data`. Never raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 4
MAX_PROMPT = 5000


@dataclass(frozen=True)
class Origin:
    prompt: str | None = None
    source_id: str | None = None  # the generation it extends


def _text(value: Any, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8").strip()
    return value[:limit] or None


def origin(body: Any, _depth: int = 0) -> Origin:
    if _depth > MAX_DEPTH:
        return Origin()
    if isinstance(body, list) and len(body) == 1:
        return origin(body[0], _depth + 1)
    if not isinstance(body, dict):
        return Origin()
    request = body.get("request")
    if not isinstance(request, dict):
        request = {}
    prompt = (
        _text(request.get("prompt"), MAX_PROMPT)
        or _text(body.get("prompt"), MAX_PROMPT)
        or _text(body.get("user_prompt"), MAX_PROMPT)
    )
    source = None
    frames = request.get("keyframes")
    if isinstance(frames, dict):
        for name in ("frame0", "frame1"):  # frame1: a reverse extend
            frame = frames.get(name)
            if isinstance(frame, dict) and frame.get("type") == "generation":
                source = _text(frame.get("id"), 128)
                if source:
                    break
    here = Origin(prompt, source)
    inner = body.get("data")
    if isinstance(inner, dict | list):
        deeper = origin(inner, _depth + 1)
        return Origin(here.prompt or deeper.prompt, here.source_id or deeper.source_id)
    return here
