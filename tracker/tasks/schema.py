"""A task as the API, the CLI, the dashboard's data and the webhooks show it: the schema
(pydantic models, which /api/openapi.json is generated from) that also serialises.

`task_json` is the models' own dump (`Task.of(row)`, built without validation: a list page
builds up to 200 and the row is the service's own), so there is one shape and one writer of
a task's JSON. It lives with the tasks, not the web, because a move's webhook rows carry the
task as the API shows it, written in the move's own transaction (tasks/webhooks.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tracker import jsontext
from tracker.settings import DIALECTS
from tracker.tasks import models
from tracker.tasks.models import KINDS
from tracker.tasks.states import EVENT_SOURCES, STATES


def one_of(values: tuple[str, ...]) -> Any:
    """The JSON schema of a string from a fixed list (the code's own list, not a copy)."""
    return Field(json_schema_extra={"enum": list(values)})


Kind = Annotated[str, one_of(KINDS)]
Flavor = Annotated[str, one_of(DIALECTS)]
State = Annotated[str, one_of(STATES)]
EventSource = Annotated[str, one_of(EVENT_SOURCES)]


class Shape(BaseModel):
    """An answer's shape: strict, and no key it does not name."""

    model_config = ConfigDict(strict=True, extra="forbid")


class Task(Shape):
    """A task as the API, the CLI and the dashboard's data show it."""

    id: int
    upstream_id: str | None
    source_task_id: str | None
    kind: Kind
    upstream: Flavor = Field(
        description="the API it was sent with (LUMA_API_FLAVOR then); only that dialect's "
        "worker follows it"
    )
    account: str | None = Field(
        description="the upstream account that sent it (null: waiting for one with room)"
    )
    state: State
    upstream_state: str | None
    user_prompt: str
    expand_prompt: bool | None
    image_url: str | None = Field(description="a URL, or base64 data shortened for display")
    image_end_url: str | None = Field(description="as image_url")
    options: dict[str, Any] = Field(description="a generation's options as given")
    video_url: str | None
    thumbnail_url: str | None
    media_url: str | None = Field(
        description="the archived video (an image task's: its image), served by the tracker"
    )
    thumbnail_media_url: str | None
    failure_reason: str | None
    progress: int | None = Field(
        ge=0,
        le=100,
        description="how far along the upstream says the task is, in percent; null where it "
        "does not say. Never goes back while the task runs; 100 once completed, null after "
        "any other final state.",
    )
    estimate_wait_seconds: int | None = Field(
        ge=0,
        description="the upstream's own guess of the wait, in seconds, as of its latest "
        "answer; null where it gives none and once the task is final",
    )
    attempts: int
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    # a new task field goes here, and in `of` below

    @classmethod
    def of(cls, task: models.Task) -> Task:
        """The task as shown (no validation: the row is the service's own)."""
        return cls.model_construct(**_fields(task))


class Event(Shape):
    """One entry of a task's history: who said what, and the state it moved the task to."""

    @classmethod
    def of(cls, event: models.TaskEvent) -> Event:
        # whatever a row holds (older rows: plain text, Infinity, deep nesting), never a 500
        payload = jsontext.loads_stored(event.payload) if event.payload is not None else None
        return cls.model_construct(
            id=event.id,
            source=event.source,
            at=event.created_at,
            state_before=event.state_before,
            state_after=event.state_after,
            note=event.note,
            payload=payload,
        )

    id: int
    source: EventSource
    at: datetime
    state_before: str | None
    state_after: str | None
    note: str | None
    payload: Any = Field(description="what the upstream sent, as stored")


class TaskDetail(Task):
    """A task with its history, oldest first."""

    events: list[Event]


def task_json(task: models.Task, *, events: bool = False) -> dict[str, Any]:
    """The JSON of a task (with its history when `events`), as its model dumps it."""
    if not events:
        return Task.of(task).model_dump(mode="json")
    history = [Event.of(event) for event in task.events]
    return TaskDetail.model_construct(**_fields(task), events=history).model_dump(mode="json")


def _fields(task: models.Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "upstream_id": task.upstream_id,
        "source_task_id": task.source_task_id,
        "kind": task.kind,
        "upstream": task.upstream,
        "account": task.account,
        "state": task.state,
        "upstream_state": task.upstream_state,
        "user_prompt": task.user_prompt,
        "expand_prompt": task.expand_prompt,
        "image_url": short_image(task.image_url),
        "image_end_url": short_image(task.image_end_url),
        "options": task.options or {},
        "video_url": task.video_url,
        "thumbnail_url": task.thumbnail_url,
        "media_url": f"/media/{task.id}/{_media_kind(task)}" if task.media_path else None,
        "thumbnail_media_url": f"/media/{task.id}/thumbnail" if task.thumbnail_path else None,
        "failure_reason": task.failure_reason,
        "progress": task.progress,
        "estimate_wait_seconds": task.estimate_wait_seconds,
        "attempts": task.attempts,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "completed_at": task.completed_at,
    }


def _media_kind(task: models.Task) -> str:
    return "image" if task.kind == "image" else "video"


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def short_image(value: str | None) -> str | None:
    """Base64 image data is shortened for display; URLs are kept whole."""
    if value is None or value.lower().startswith(("http://", "https://")):
        return value
    if len(value) <= 64:
        return value
    return f"{value[:48]}…({len(value)} chars)"
