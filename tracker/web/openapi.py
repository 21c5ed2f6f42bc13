"""The OpenAPI document of the JSON API, served at /api/openapi.json.

Written by hand next to the code it describes (the API is small), and checked
against the live app by schemathesis in the test suite, so it cannot drift.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ..dialects import FLAVORS
from ..models import KINDS
from ..states import EVENT_SOURCES, STATES
from ..validate import (
    ASPECT_RATIOS,
    DURATION_PATTERN,
    GENERATE_FIELDS,
    ID_PATTERN,
    IMAGE_PATTERN,
    MAX_PROMPT,
    RESOLUTIONS,
    TEXT_PATTERN,
)

bp = Blueprint("openapi", __name__)

_nullable_string = {"type": ["string", "null"]}
_time = {"type": ["string", "null"], "format": "date-time"}

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "field": {"type": ["string", "null"]}},
}

TASK = {
    "type": "object",
    "required": ["id", "kind", "state", "user_prompt", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "integer"},
        "upstream_id": _nullable_string,
        "source_task_id": _nullable_string,
        "kind": {"type": "string", "enum": list(KINDS)},
        "upstream": {
            "type": "string",
            "enum": list(FLAVORS),
            "description": "the API it was sent with (LUMA_API_FLAVOR then); only that "
            "dialect's worker follows it",
        },
        "state": {"type": "string", "enum": list(STATES)},
        "upstream_state": _nullable_string,
        "user_prompt": {"type": "string"},
        "expand_prompt": {"type": ["boolean", "null"]},
        "image_url": _nullable_string,
        "image_end_url": _nullable_string,
        "options": {"type": "object"},
        "video_url": _nullable_string,
        "thumbnail_url": _nullable_string,
        "media_url": _nullable_string,
        "thumbnail_media_url": _nullable_string,
        "failure_reason": _nullable_string,
        "progress": {
            "type": ["integer", "null"],
            "minimum": 0,
            "maximum": 100,
            "description": "how far along the upstream says the task is, in percent; null "
            "where it does not say. Never goes back while the task runs; 100 once completed, "
            "null after any other final state.",
        },
        "estimate_wait_seconds": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "the upstream's own guess of the wait, in seconds, as of its "
            "latest answer; null where it gives none and once the task is final",
        },
        "attempts": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "completed_at": _time,
    },
}

EVENT = {
    "type": "object",
    "required": ["id", "source", "at", "state_before", "state_after"],
    "properties": {
        "id": {"type": "integer"},
        "source": {"type": "string", "enum": list(EVENT_SOURCES)},
        "at": {"type": "string", "format": "date-time"},
        "state_before": _nullable_string,
        "state_after": _nullable_string,
        "note": _nullable_string,
        "payload": {},
    },
}

TASK_DETAIL = {
    "allOf": [
        {"$ref": "#/components/schemas/Task"},
        {
            "type": "object",
            "required": ["events"],
            "properties": {
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}
            },
        },
    ]
}

_optional_text = {"type": ["string", "null"]}
_image = {
    "type": ["string", "null"],
    "pattern": IMAGE_PATTERN,
    "description": "an http(s) URL or base64 image data",
}
_COMMON = {
    "user_prompt": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_PROMPT,
        "pattern": TEXT_PATTERN,
    },
    "expand_prompt": {"type": ["boolean", "null"]},
    "image_url": _image,
    "image_end_url": _image,
}
# null and "" mean "not given" for every optional field
EXTEND = {
    "type": "object",
    "description": "extend the video with this upstream id",
    "required": ["source_task_id", "user_prompt"],
    "additionalProperties": False,
    "properties": {
        "source_task_id": {"type": "string", "maxLength": 128, "pattern": ID_PATTERN},
        **_COMMON,
        **{name: {"enum": ["", None]} for name in GENERATE_FIELDS},
    },
}
GENERATE = {
    "type": "object",
    "description": "a new generation",
    "required": ["user_prompt"],
    "additionalProperties": False,
    "properties": {
        "source_task_id": {"enum": ["", None]},
        **_COMMON,
        "aspect_ratio": {"enum": [*ASPECT_RATIOS, "", None]},
        "loop": {"type": ["boolean", "null"]},
        "resolution": {"enum": [*RESOLUTIONS, "", None]},
        "duration": {"type": ["string", "null"], "pattern": f"({DURATION_PATTERN})|(^$)"},
        "model_name": {
            "type": ["string", "null"],
            "maxLength": 64,
            "pattern": f"^$|{TEXT_PATTERN}",
        },
    },
}
# inline rather than $ref: schemathesis does not follow a $ref to a oneOf of $refs
NEW_TASK = {"oneOf": [EXTEND, GENERATE]}


def _json(schema_name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}


def _answers(ok: dict[str, Any], *errors: int, unsafe: bool = False) -> dict[str, Any]:
    described = {
        400: "bad input; `field` names what to fix",
        401: "missing or wrong token (when TRACKER_API_TOKEN is set)",
        403: "sent by a browser from another site (its Origin)",
        404: "no such task (import: the upstream does not know the id; account: proxy dialect)",
        409: "the action does not fit the task's state",
        413: "the body is too large",
        415: "not sent as Content-Type: application/json",
        429: "too many wrong tokens from this address; see Retry-After",
        502: "the upstream query failed (import: nothing is stored)",
        503: "the database is unavailable; try again",
    }
    answers = dict(ok)
    always = (401, 429, 503) + ((403, 415) if unsafe else ())
    for code in (*errors, *always):
        answers[str(code)] = {"description": described[code], "content": _json("Error")}
    return answers


# the actions take no input, but like every unsafe API request they must be sent as JSON
# (web/sameorigin.py): an empty body or {} with Content-Type: application/json
ACTION_BODY = {
    # "required": an empty body is accepted too, but only with this type, which OpenAPI
    # cannot say; without the type the answer is 415
    "required": True,
    "description": "ignored: {} (or an empty body), with Content-Type: application/json",
    "content": {"application/json": {"schema": {"type": "object"}}},
}
IMPORT = {
    "type": "object",
    "required": ["upstream_id"],
    "additionalProperties": False,
    "properties": {
        "upstream_id": {
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "pattern": ID_PATTERN,
            "description": "the upstream's id of a task made elsewhere",
        }
    },
}
ACCOUNT = {
    "type": "object",
    "required": ["upstream", "credit_balance", "checked_at"],
    "properties": {
        "upstream": {"type": "string", "enum": ["luma"]},
        "credit_balance": {
            "type": ["integer", "null"],
            "description": "US cents, as the worker last read it (null before its first read)",
        },
        "checked_at": _time,
    },
}

TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0, "maximum": 2**62},
    "description": "a task's id; ids past the largest stored are simply not found",
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Luma task tracker",
        "version": "1",
        "description": "Submit Luma extends and generations, follow them, read their history.",
    },
    "paths": {
        "/api/tasks": {
            "post": {
                "summary": "Submit an extend (with source_task_id) or a new generation",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": NEW_TASK}},
                },
                "responses": _answers(
                    {
                        "201": {
                            "description": "stored (and sent when a slot is free)",
                            "content": _json("TaskDetail"),
                        }
                    },
                    400,
                    413,
                    unsafe=True,
                ),
            },
            "get": {
                "summary": "Tasks, newest first, with cursor pagination",
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["", *STATES]},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "next_cursor of the previous page",
                        "schema": {"type": "string", "pattern": "^([0-9]{1,18})?$"},
                    },
                ],
                "responses": _answers(
                    {
                        "200": {
                            "description": "a page of tasks",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["tasks", "next_cursor"],
                                        "properties": {
                                            "tasks": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Task"},
                                            },
                                            "next_cursor": _nullable_string,
                                        },
                                    }
                                }
                            },
                        }
                    },
                    400,
                ),
            },
        },
        "/api/tasks/import": {
            "post": {
                "summary": "Track a task made elsewhere (Luma's web app, another tool)",
                "description": "Asks the upstream once. A completed task is archived, an "
                "unfinished one followed. 404 carries the upstream's words; on 502 nothing "
                "is stored.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": IMPORT}},
                },
                "responses": _answers(
                    {
                        "201": {"description": "imported", "content": _json("TaskDetail")},
                        "200": {
                            "description": "already tracked: the existing task",
                            "content": _json("TaskDetail"),
                        },
                    },
                    400,
                    404,
                    413,
                    502,
                    unsafe=True,
                ),
            }
        },
        "/api/account": {
            "get": {
                "summary": "The upstream account's credit balance (LUMA_API_FLAVOR=luma only)",
                "responses": _answers(
                    {"200": {"description": "the stored balance", "content": _json("Account")}},
                    404,
                ),
            }
        },
        "/api/tasks/{task_id}": {
            "get": {
                "summary": "One task with its events",
                "parameters": [TASK_ID],
                "responses": _answers(
                    {"200": {"description": "the task", "content": _json("TaskDetail")}}, 404
                ),
            }
        },
        "/api/tasks/{task_id}/poll": {
            "post": {
                "summary": "Query the upstream for this task now",
                "parameters": [TASK_ID],
                "requestBody": ACTION_BODY,
                "responses": _answers(
                    {
                        "200": {
                            "description": "the task after the query",
                            "content": _json("TaskDetail"),
                        }
                    },
                    404,
                    409,
                    502,
                    unsafe=True,
                ),
            }
        },
        "/api/tasks/{task_id}/resend": {
            "post": {
                "summary": "Send a rejected task again, as a new attempt",
                "parameters": [TASK_ID],
                "requestBody": ACTION_BODY,
                "responses": _answers(
                    {
                        "200": {
                            "description": "the task, queued or sent",
                            "content": _json("TaskDetail"),
                        }
                    },
                    404,
                    409,
                    unsafe=True,
                ),
            }
        },
    },
    "components": {
        "schemas": {
            "Task": TASK,
            "TaskDetail": TASK_DETAIL,
            "Event": EVENT,
            "NewTask": NEW_TASK,
            "Import": IMPORT,
            "Account": ACCOUNT,
            "Error": ERROR,
        },
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"bearer": []}, {}],
}


@bp.get("/api/openapi.json")
def openapi() -> dict[str, Any]:
    return SPEC
