"""The OpenAPI document of the JSON API, served at /api/openapi.json.

The schemas are generated from the models in `flows/bodies.py` (the ones that check the
input) and `web/answers.py` (the answers), so the document cannot drift from the code; what is
written here is only what a model cannot say: the routes, their words and status codes.
schemathesis fuzzes the live app against this document in the test suite.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any

from flask import Blueprint
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from tracker.flows import bodies, validate
from tracker.settings import DIALECTS
from tracker.tasks.states import STATES
from tracker.upstream import accounts, dialects
from tracker.web import answers, services
from tracker.web.admission import MAX_WAIT
from tracker.web.answers import HAND_WRITTEN, REF
from tracker.web.api import MAX_LIMIT

bp = Blueprint("openapi", __name__)


class _Compact(GenerateJsonSchema):
    """Pydantic's JSON schema, written as a person would: no generated titles, and
    `{"type": ["integer", "null"]}` rather than an anyOf for a nullable field."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        kind = inner.get("type")
        if isinstance(kind, str) and "$ref" not in inner:
            return {**inner, "type": [kind, "null"]}
        return super().nullable_schema(schema)


def _components() -> dict[str, Any]:
    models: list[type[BaseModel]] = [answers.Task, answers.TaskDetail, answers.Event]
    models += [answers.TaskPage, answers.Account, answers.Accounts, answers.Error]
    models += [*bodies.SUBMITS.values(), validate.Import]
    _, found = models_json_schema(
        [(model, "validation") for model in models],
        ref_template=REF,
        schema_generator=_Compact,
    )
    components: dict[str, Any] = found["$defs"]
    for component in components.values():
        component.pop("title", None)
    components.update(HAND_WRITTEN)
    components["NewTask"] = {
        "oneOf": [{"$ref": REF.format(model=m.__name__)} for m in bodies.SUBMITS.values()]
    }
    return components


COMPONENTS = _components()

# what each status means, for every route that answers it
STATUS = {
    400: "bad input: `error` and `field` name the first problem, `errors` every one",
    401: "missing or wrong token (when TRACKER_API_TOKEN is set)",
    403: "sent by a browser from another site (its Origin)",
    404: "no such task or delivery (import: the upstream does not know the id; account: "
    "proxy dialect)",
    409: "the action does not fit the task's state",
    413: "the body is too large",
    415: "not sent as Content-Type: application/json",
    429: "too many wrong tokens from this address; see Retry-After",
    502: "the upstream query failed (import: nothing is stored)",
    503: "the database is unavailable; try again",
}
ALWAYS = (401, 429, 503)
UNSAFE = (403, 415)  # every unsafe API request (security.check_api_request)

# the request bodies: a model, or a oneOf inlined (schemathesis does not follow a $ref to a
# oneOf of $refs); the actions take none but must be sent as JSON like every unsafe request
SUBMIT = {"oneOf": [COMPONENTS[model.__name__] for model in bodies.SUBMITS.values()]}


def submit_body(flavor: str, components: dict[str, Any] = COMPONENTS) -> dict[str, Any]:
    """The kinds the dialect offers (the proxy: generate and extend; Luma's own API: all)."""
    kinds = dialects.get(flavor).kinds
    return {"oneOf": [components[m.__name__] for k, m in bodies.SUBMITS.items() if k in kinds]}


IMPORT = {"$ref": REF.format(model="Import")}
ACTION = {"type": "object"}
ACTION_DESCRIPTION = "ignored: {} (or an empty body), with Content-Type: application/json"

TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0, "maximum": 2**62},
    "description": "a task's id; ids past the largest stored are simply not found",
}
DELIVERY_ID = {**TASK_ID, "name": "delivery_id", "description": "a delivery's id"}
WAIT = {
    "name": "wait",
    "in": "query",
    "description": "wait up to this many seconds for the task to be final (completed, "
    "failed...), then answer; the header X-Tracker-Wait: skipped says too many were waiting",
    "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT},
}
LIST_PARAMETERS = [
    {"name": "state", "in": "query", "schema": {"type": "string", "enum": ["", *STATES]}},
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    },
    {
        "name": "cursor",
        "in": "query",
        "description": "next_cursor of the previous page",
        "schema": {"type": "string", "pattern": "^([0-9]{1,18})?$"},
    },
]


@dataclass(frozen=True)
class Route:
    """One operation: what a model cannot say about it."""

    method: str
    path: str
    summary: str
    ok: dict[int, tuple[str, str]]  # status: (what it means, the answer's model)
    errors: tuple[int, ...] = ()  # besides ALWAYS, and UNSAFE for a POST
    body: dict[str, Any] | None = None
    description: str | None = None


ROUTES = [
    Route(
        "post", "/api/tasks", "Submit a task of any kind (without `kind`: an extend when "
        "source_task_id is given, else a generation)",
        {201: ("stored (and sent when a slot is free)", "TaskDetail")}, (400, 413), SUBMIT,
    ),
    Route(
        "get", "/api/tasks", "Tasks, newest first, with cursor pagination",
        {200: ("a page of tasks", "TaskPage")}, (400,),
    ),
    Route(
        "post", "/api/tasks/import", "Track a task made elsewhere (Luma's web app, another tool)",
        {201: ("imported", "TaskDetail"), 200: ("already tracked: the task", "TaskDetail")},
        (400, 404, 413, 502), IMPORT,
        "Asks the upstream once. A completed task is archived, an unfinished one followed. "
        "404 carries the upstream's words; on 502 nothing is stored.",
    ),
    Route(
        "get", "/api/account", "The upstream account's credit balance (LUMA_API_FLAVOR=luma only)",
        {200: ("the stored balance", "Account")}, (404,),
    ),
    Route(
        "get", "/api/accounts", "Every upstream account of the pool: enabled, load, day, balance",
        {200: ("the accounts", "Accounts")}, (),
    ),
    Route(
        "get", "/api/workers", "Worker processes and their heartbeats (stale: none for 60 s)",
        {200: ("every registered worker", "Workers")},
    ),
    Route(
        "get", "/api/tasks/{task_id}", "One task with its events",
        {200: ("the task", "TaskDetail")}, (400, 404),
    ),
    Route(
        "get", "/api/tasks/{task_id}/deliveries", "The task's outgoing webhook deliveries",
        {200: ("newest first, each with its attempts", "Deliveries")}, (404,),
    ),
    Route(
        "post", "/api/deliveries/{delivery_id}/redeliver",
        "Send a delivery again, with the same webhook-id",
        {202: ("queued: the worker sends it", "Delivery")}, (404,), ACTION,
    ),
    Route(
        "post", "/api/tasks/{task_id}/poll", "Query the upstream for this task now",
        {200: ("the task after the query", "TaskDetail")}, (404, 409, 502), ACTION,
    ),
    Route(
        "post", "/api/tasks/{task_id}/resend", "Send a rejected task again, as a new attempt",
        {200: ("the task, queued or sent", "TaskDetail")}, (404, 409), ACTION,
    ),
]  # fmt: skip


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(route: Route) -> dict[str, Any]:
    answers = {
        str(status): {"description": words, "content": _json({"$ref": REF.format(model=model)})}
        for status, (words, model) in route.ok.items()
    }
    unsafe = UNSAFE if route.method != "get" else ()
    for status in (*route.errors, *ALWAYS, *unsafe):
        answers[str(status)] = {
            "description": STATUS[status],
            "content": _json({"$ref": REF.format(model="Error")}),
        }
    operation: dict[str, Any] = {"summary": route.summary}
    if route.description:
        operation["description"] = route.description
    if route.path == "/api/tasks/{task_id}" and route.method == "get":
        operation["parameters"] = [TASK_ID, WAIT]
    elif "{task_id}" in route.path:
        operation["parameters"] = [TASK_ID]
    elif "{delivery_id}" in route.path:
        operation["parameters"] = [DELIVERY_ID]
    elif route.method == "get" and route.path == "/api/tasks":
        operation["parameters"] = LIST_PARAMETERS
    if route.body is not None:
        # "required": an empty action body is accepted too, but only as JSON, which OpenAPI
        # cannot say; without the type the answer is 415
        operation["requestBody"] = {"required": True, "content": _json(route.body)}
        if route.body is ACTION:
            operation["requestBody"]["description"] = ACTION_DESCRIPTION
    operation["responses"] = answers
    return operation


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    # Prometheus's text format, not JSON (monitoring.py; absent with TRACKER_METRICS=0)
    text = {"text/plain": {"schema": {"type": "string"}}}
    error = {"$ref": REF.format(model="Error")}
    paths["/metrics"] = {
        "get": {
            "summary": "Metrics of every tracker process on this machine, for Prometheus",
            "responses": {
                "200": {"description": "Prometheus's text exposition format", "content": text},
                **{
                    str(status): {"description": STATUS[status], "content": _json(error)}
                    for status in ALWAYS
                },
            },
        }
    }
    return paths


def document(flavor: str, names: tuple[str, ...] = ("default",)) -> dict[str, Any]:
    """The document of a tracker speaking this dialect (its submit body: the kinds it offers)
    with these accounts (`account` in a body names one of them: the schema says which)."""
    components = copy.deepcopy(COMPONENTS)
    for model in [*(m.__name__ for m in bodies.SUBMITS.values()), "Import"]:
        components[model]["properties"]["account"] = {
            "enum": [*names, "", None],
            "description": "the upstream account to use (LUMA_ACCOUNT_<NAME>_KEY); null: any",
        }
    paths = _paths()
    paths["/api/tasks"]["post"]["requestBody"]["content"] = _json(submit_body(flavor, components))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Luma task tracker",
            "version": "1",
            "description": "Submit Luma videos and images, follow them, read their history.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }


SPECS = {flavor: document(flavor) for flavor in DIALECTS}
SPEC = SPECS["proxy"]


@functools.lru_cache(maxsize=8)
def _served(flavor: str, names: tuple[str, ...]) -> dict[str, Any]:
    return document(flavor, names)


@bp.get("/api/openapi.json")
def openapi() -> dict[str, Any]:
    settings = services().settings
    names = tuple(account.name for account in accounts.pool(settings))
    return _served(settings.luma_api_flavor, names)
