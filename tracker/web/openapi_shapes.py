"""The answers of the OpenAPI document that no pydantic model describes, written by hand.

GET /api/workers (tracker/web/workers.py) and the webhook delivery log (tracker/web/deliveries.py)
build their JSON directly; their shapes are small enough to say here. tests/test_fuzz.py checks
the live answers against them.
"""

from __future__ import annotations

from typing import Any

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
