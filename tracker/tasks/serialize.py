"""A task as JSON, the same for the API, the CLI and the dashboard's data.

The shape is `tracker.web.answers` (Task, TaskDetail, Event, Account), which
/api/openapi.json is generated from; these functions build exactly those fields as plain
dicts, because a list page builds up to 200 of them and a model per task would cost time
for nothing. tests/test_schemas.py reads every answer back through its model, strictly, so
a field added here and not there (or the other way round) fails the tests.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tracker import jsontext
from tracker.tasks.models import Task, TaskEvent


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def short_image(value: str | None) -> str | None:
    """Base64 image data is shortened for display; URLs are kept whole."""
    if value is None or value.lower().startswith(("http://", "https://")):
        return value
    if len(value) <= 64:
        return value
    return f"{value[:48]}…({len(value)} chars)"


def event_json(event: TaskEvent) -> dict[str, Any]:
    # whatever a row holds (older rows: plain text, Infinity, deep nesting), never a 500
    payload = jsontext.loads_stored(event.payload) if event.payload is not None else None
    return {
        "id": event.id,
        "source": event.source,
        "at": iso(event.created_at),
        "state_before": event.state_before,
        "state_after": event.state_after,
        "note": event.note,
        "payload": payload,
    }


def account_json(balance: Any) -> dict[str, Any]:
    """GET /api/account: the stored balance (credits.Balance), never read on the spot."""
    return {
        "upstream": balance.upstream,
        "credit_balance": balance.credit_balance,
        "checked_at": iso(balance.checked_at),
    }


def task_json(task: Task, *, events: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": task.id,
        "upstream_id": task.upstream_id,
        "source_task_id": task.source_task_id,
        "kind": task.kind,
        "upstream": task.upstream,
        "state": task.state,
        "upstream_state": task.upstream_state,
        "user_prompt": task.user_prompt,
        "expand_prompt": task.expand_prompt,
        "image_url": short_image(task.image_url),
        "image_end_url": short_image(task.image_end_url),
        "options": task.options or {},
        "video_url": task.video_url,
        "thumbnail_url": task.thumbnail_url,
        "media_url": f"/media/{task.id}/video" if task.media_path else None,
        "thumbnail_media_url": f"/media/{task.id}/thumbnail" if task.thumbnail_path else None,
        "failure_reason": task.failure_reason,
        "progress": task.progress,
        "estimate_wait_seconds": task.estimate_wait_seconds,
        "attempts": task.attempts,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "completed_at": iso(task.completed_at),
    }
    if events:
        data["events"] = [event_json(e) for e in task.events]
    return data
