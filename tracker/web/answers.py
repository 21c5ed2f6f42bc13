"""What the API answers: a task (with its events), a page of tasks, the account, an error,
the workers and the webhook delivery log; the OpenAPI document (openapi.py) is built from
these shapes.

The models document exactly what `tracker.tasks.serialize` builds; serialize writes plain
dicts for speed (the list page builds up to 200 of them), and tests/test_schemas.py checks
every dict it builds against these models, strictly and field for field, so the document
and the answers cannot drift apart. Every field is always present (null when unknown).

GET /api/workers (monitoring.py) and the webhook delivery log (api.py) build their JSON
directly; their shapes are small enough to write by hand (`HAND_WRITTEN`, below).
tests/test_fuzz.py checks the live answers against them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tracker.settings import DIALECTS
from tracker.tasks.models import KINDS
from tracker.tasks.states import EVENT_SOURCES, STATES


def _one_of(values: tuple[str, ...]) -> Any:
    """The JSON schema of a string from a fixed list (the code's own list, not a copy)."""
    return Field(json_schema_extra={"enum": list(values)})


Kind = Annotated[str, _one_of(KINDS)]
Flavor = Annotated[str, _one_of(DIALECTS)]
State = Annotated[str, _one_of(STATES)]
EventSource = Annotated[str, _one_of(EVENT_SOURCES)]


class _Answer(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Task(_Answer):
    """A task as the API, the CLI and the dashboard's data show it."""

    id: int
    upstream_id: str | None
    source_task_id: str | None
    kind: Kind
    upstream: Flavor = Field(
        description="the API it was sent with (LUMA_API_FLAVOR then); only that dialect's "
        "worker follows it"
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
    media_url: str | None = Field(description="the archived video, served by the tracker")
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
    # new task fields go here, and in serialize.task_json


class Event(_Answer):
    """One entry of a task's history: who said what, and the state it moved the task to."""

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


class TaskPage(_Answer):
    """A page of tasks, newest first."""

    tasks: list[Task]
    next_cursor: str | None = Field(description="the cursor of the next page; null on the last")


class Account(_Answer):
    """The upstream account's balance as the worker last read it."""

    upstream: Annotated[str, _one_of(("luma",))]
    credit_balance: int | None = Field(
        description="US cents, as the worker last read it (null before its first read)"
    )
    checked_at: datetime | None


class Problem(_Answer):
    """One thing wrong with a request, and the field to fix (null: the body as a whole)."""

    field: str | None
    error: str


class Error(BaseModel):
    """Any error. A 400 names the first problem in `error` and `field`, and all in `errors`.

    Open to more keys (unlike the task): errors are answered by many modules."""

    model_config = ConfigDict(strict=True)

    error: str
    field: str | None = None
    errors: list[Problem] | None = None


# -- the answers no model describes, written by hand ----------------------------------------

REF = "#/components/schemas/{model}"
HAND_WRITTEN: dict[str, Any] = {}

WORKER_FIELDS = (
    "id", "host", "pid", "started_at", "last_seen_at", "tasks_claimed", "paused_until", "stale"
)  # fmt: skip

# GET /api/workers
_WHEN = {"type": ["string", "null"], "format": "date-time"}
HAND_WRITTEN["Workers"] = {
    "type": "object",
    "required": ["workers"],
    "properties": {
        "workers": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [*WORKER_FIELDS],
                "properties": {
                    "id": {"type": "string"},
                    "host": {"type": "string"},
                    "pid": {"type": "integer"},
                    "started_at": {"type": "string", "format": "date-time"},
                    "last_seen_at": {"type": "string", "format": "date-time"},
                    "tasks_claimed": {"type": "integer"},
                    "paused_until": _WHEN,
                    "stale": {"type": "boolean", "description": "no heartbeat for 60 s"},
                },
            },
        }
    },
}
# GET /api/tasks/<id>/deliveries, POST /api/deliveries/<id>/redeliver
HAND_WRITTEN["Delivery"] = {
    "type": "object",
    "required": ["id", "type", "target", "state", "webhook_id", "attempts"],
    "properties": {
        "id": {"type": "integer"},
        "type": {"type": "string", "description": "the event: task.completed, say"},
        "target": {"type": "string", "description": "the URL it goes to"},
        "state": {"type": "string", "enum": ["pending", "succeeded", "failed"]},
        "webhook_id": {"type": "string", "description": "the same on every attempt"},
        "attempts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["at", "status", "latency_ms", "response"],
                "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "status": {
                        "type": ["integer", "null"],
                        "description": "the receiver's HTTP status; null: no answer",
                    },
                    "latency_ms": {"type": "integer"},
                    "response": {"type": "string", "description": "its first words"},
                },
            },
        },
    },
}
HAND_WRITTEN["Deliveries"] = {
    "type": "object",
    "required": ["deliveries"],
    "properties": {
        "deliveries": {"type": "array", "items": {"$ref": REF.format(model="Delivery")}}
    },
}
