"""What the API answers: a task (with its events), a page of tasks, the account, an error,
the workers and the webhook delivery log; the OpenAPI document (openapi.py) is built from
these shapes.

A task and its events are `tasks/schema.py`'s models, which also write their JSON (a move's
webhook body is written by the store with them); the page, the account and the errors are
here. Every field is always present (null when unknown); tests/test_schemas.py reads every
answer back through its model, strictly.

GET /api/workers (monitoring.py) and the webhook delivery log (api.py) build their JSON
directly; their shapes are small enough to write by hand (`HAND_WRITTEN`, below).
tests/test_fuzz.py checks the live answers against them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tracker.settings import DIALECTS

# a task's shapes are the store's (a move writes its webhook body with them), shown here too
from tracker.tasks.schema import Event as Event
from tracker.tasks.schema import Shape, one_of
from tracker.tasks.schema import Task as Task
from tracker.tasks.schema import TaskDetail as TaskDetail


class TaskPage(Shape):
    """A page of tasks, newest first."""

    tasks: list[Task]
    next_cursor: str | None = Field(description="the cursor of the next page; null on the last")


class Account(Shape):
    """The upstream account's balance as the worker last read it."""

    upstream: Annotated[str, one_of(("luma",))]
    credit_balance: int | None = Field(
        description="US cents, as the worker last read it (null before its first read)"
    )
    checked_at: datetime | None

    @classmethod
    def of(cls, balance: Any) -> Account:
        """GET /api/account: the stored balance (accounts.Balance), never read on the spot."""
        return cls.model_construct(
            upstream=balance.upstream,
            credit_balance=balance.credit_balance,
            checked_at=balance.checked_at,
        )


class AccountState(Shape):
    """An upstream account of the pool: whether it takes work, its load, its day, its balance."""

    name: str
    upstream: Annotated[str, one_of(DIALECTS)]
    enabled: bool
    disabled_reason: str | None = Field(description="why a refused key disabled it")
    in_flight: int
    max_in_flight: int
    creates_today: int = Field(description="creates sent this UTC day (accepted or unknown)")
    daily_limit: int | None
    credit_balance: int | None = Field(description="US cents, as last read (luma only)")
    checked_at: datetime | None
    paused_until: datetime | None


class Accounts(Shape):
    """Every account of the pool (LUMA_ACCOUNT_<NAME>_KEY; LUMA_API_KEY alone: `default`)."""

    accounts: list[AccountState]


class Problem(Shape):
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
