"""One schema for a task (issue 10, item 4): the models in tracker.schemas check every input
(API, form, CLI), report every problem, document every answer, and /api/openapi.json is
generated from them."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
from flask import Flask
from openapi_spec_validator import validate as validate_openapi
from pydantic import BaseModel

from tests.support.factory import add_callbacks, make_task
from tests.support.scripted import Reply, ScriptedUpstream, raw_task
from tracker.db import Database
from tracker.flows import bodies, validate
from tracker.tasks.models import utcnow
from tracker.web import answers as answer_models
from tracker.web import pages
from tracker.web.openapi import SPEC, SPECS

PNG_BASE64 = "iVBORw0KGgo" + "A" * 80


def submit(app: str, body: Any) -> requests.Response:
    return requests.post(f"{app}/api/tasks", json=body, timeout=10)


def strictly(model: type[BaseModel], response: requests.Response) -> Any:
    """The answer read by its model: strict, every field present, none unknown."""
    return model.model_validate_json(response.content, strict=True)


# -- a 400 names every problem -------------------------------------------------------------


def test_a_400_lists_every_problem_and_leads_with_the_first(
    live: Any, upstream: ScriptedUpstream
) -> None:
    app = live(luma_api_base=upstream.url).url
    body = {
        "user_prompt": "   ",
        "expand_prompt": "yes",
        "image_url": "not an image",
        "aspect_ratio": "2:1",
        "loop": "no",
        "duration": "five",
        "progress": 5,
    }
    answer = submit(app, body).json()
    assert answer["errors"] == [
        {"field": "progress", "error": "progress is not a known field (the tracker sets it)"},
        {"field": "user_prompt", "error": "user_prompt must not be empty"},
        {"field": "expand_prompt", "error": "expand_prompt must be true or false"},
        {"field": "image_url", "error": "image_url must be an http(s) URL or base64 image data"},
        {"field": "aspect_ratio", "error": "aspect_ratio must be one of " + ", ".join(
            validate.ASPECT_RATIOS)},
        {"field": "loop", "error": "loop must be true or false"},
        {"field": "duration", "error": 'duration must look like "5s"'},
    ]  # fmt: skip
    # `error` and `field` are the first problem, as they were before `errors`
    assert (answer["field"], answer["error"]) == ("progress", answer["errors"][0]["error"])
    assert upstream.posts() == []


def test_an_extend_names_each_generation_option_it_cannot_take(live: Any) -> None:
    app = live().url
    body = {"user_prompt": "more", "source_task_id": "src-1", "loop": True, "duration": "5s"}
    answer = submit(app, body).json()
    assert answer["errors"] == [
        {"field": "loop", "error": "loop is not supported when extending a video"},
        {"field": "duration", "error": "duration is not supported when extending a video"},
    ]
    # null and "" still mean "not given"
    response = submit(app, {**body, "loop": None, "duration": ""})
    assert response.status_code == 201


def test_the_dialect_rule_is_one_problem_among_the_others(live: Any) -> None:
    app = live(luma_api_flavor="luma").url
    body = {"user_prompt": "a fox", "image_url": "QUFB" * 20, "duration": "long", "x": 1}
    answer = submit(app, body).json()
    assert [e["field"] for e in answer["errors"]] == ["x", "image_url", "duration"]
    assert "LUMA_API_FLAVOR=luma" in answer["errors"][1]["error"]
    # an extend with a start image: Luma's own API has no place for it
    extend = {"user_prompt": "on", "source_task_id": "gen-1", "image_url": "https://i.example/a"}
    answer = submit(app, extend).json()
    assert answer["field"] == "image_url" and "source_task_id" in answer["error"]
    # the proxy takes both
    proxy = live().url
    assert submit(proxy, {"user_prompt": "a fox", "image_url": "QUFB" * 20}).status_code == 201


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("expand_prompt", "true"),
        ("expand_prompt", 1),
        ("loop", 0),
        ("loop", "false"),
        ("user_prompt", 5),
        ("source_task_id", 5),
        ("duration", 5),
        ("model_name", ["ray-v2"]),
        ("aspect_ratio", 1.5),
    ],
)
def test_types_are_checked_strictly(live: Any, field: str, value: Any) -> None:
    body = {"user_prompt": "a fox", field: value}
    response = submit(live().url, body)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["errors"] == [{"field": field, "error": response.json()["error"]}]


def test_every_400_of_the_api_has_the_same_shape(live: Any) -> None:
    app = live().url
    answers = [
        requests.post(f"{app}/api/tasks/import", json={"upstream_id": 5, "n": 1}, timeout=5),
        requests.post(f"{app}/api/tasks", data=b"{", timeout=5, headers=JSON),
        requests.get(f"{app}/api/tasks", params={"limit": "x"}, timeout=5),
        requests.get(f"{app}/api/tasks", params={"state": "nope"}, timeout=5),
        submit(app, [1]),
    ]
    for response in answers:
        assert response.status_code == 400
        error = strictly(answer_models.Error, response)
        assert error.errors and error.errors[0].error == error.error
        assert error.errors[0].field == error.field
    assert [e["field"] for e in answers[0].json()["errors"]] == ["n", "upstream_id"]


JSON = {"Content-Type": "application/json"}


# -- the form: the same model, every problem beside its field --------------------------------


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match
    return match.group(1)


def test_the_form_shows_the_models_problems_each_beside_its_field(
    make_app: Callable[..., Flask],
) -> None:
    client = make_app(luma_api_flavor="luma").test_client()
    page = client.get("/tasks/new", headers={"Accept": "text/html"}).get_data(as_text=True)
    response = client.post(
        "/tasks/new",
        data={
            "csrf_token": _csrf(page),
            "user_prompt": "a fox",
            "image_url": "QUFB" * 20,  # base64: not on Luma's own API
            "image_end_url": "https://ok.example/end.png",
            "resolution": "8k",
            "duration": "long",
        },
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    for field in ("image_url", "resolution", "duration"):
        assert f'id="{field}-error"' in page, field
    assert "takes no base64 images" in page
    assert "fix the 3 fields marked below" in page
    assert "image_end_url-error" not in page


def test_the_form_and_the_api_give_the_same_words(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    page = client.get("/tasks/new", headers={"Accept": "text/html"}).get_data(as_text=True)
    form = {"user_prompt": "a fox", "source_task_id": "src-1", "duration": "5s"}
    response = client.post("/tasks/new", data={"csrf_token": _csrf(page), **form})
    api = client.post("/api/tasks", json=form)
    assert response.status_code == api.status_code == 400
    # the same words, the form's label in place of the field's name (issue 22)
    assert api.json is not None
    assert pages.labelled(api.json["error"]) in response.get_data(as_text=True)


# -- the answers are what their models say ---------------------------------------------------


def _tasks_in_every_shape(db: Database) -> None:
    """Tasks as the service leaves them: queued, running with progress, done with archived
    media, failed, an extend with base64 images, events with odd payloads."""
    now = utcnow()
    generate = {"user_prompt": "a fox", "options": {"loop": True, "duration": "5s"}}
    extend = {
        "user_prompt": "on",
        "source_task_id": "src-1",
        "expand_prompt": True,
        "image_url": PNG_BASE64 * 40,
        "image_end_url": PNG_BASE64,
    }
    shapes: list[tuple[dict[str, Any], str, dict[str, Any], list[Any]]] = [
        (generate, "queued", {}, []),
        (generate, "processing", {"progress": 40, "estimate_wait_seconds": 12}, [{"a": [1]}]),
        (
            generate,
            "completed",
            {
                "progress": 100,
                "upstream_id": "up-1",
                "video_url": "https://cdn.example/v.mp4",
                "media_path": "1/video.mp4",
                "thumbnail_path": "1/thumb.jpg",
                "completed_at": now + timedelta(seconds=3),
            },
            ["plain text", None, 1.5, [None, True]],
        ),
        (extend, "failed", {"failure_reason": "moderation", "upstream_state": "failed"}, []),
    ]
    for new, state, fields, payloads in shapes:
        task = make_task(db, state, **new, **fields)
        add_callbacks(db, task.id, payloads)


def test_every_task_answer_is_exactly_its_model(db: Database, live: Any) -> None:
    _tasks_in_every_shape(db)
    app = live().url
    page = strictly(answer_models.TaskPage, requests.get(f"{app}/api/tasks", timeout=5))
    assert len(page.tasks) == 4
    assert {task.state for task in page.tasks} == {"queued", "processing", "completed", "failed"}
    for task in page.tasks:
        detail = strictly(
            answer_models.TaskDetail, requests.get(f"{app}/api/tasks/{task.id}", timeout=5)
        )
        assert detail.model_dump(exclude={"events"}) == task.model_dump()
    done = next(t for t in page.tasks if t.state == "completed")
    assert done.media_url == f"/media/{done.id}/video" and done.progress == 100


def test_submit_import_and_account_answers_are_their_models(
    live: Any, upstream: ScriptedUpstream
) -> None:
    upstream.then(Reply(201, raw_task("up-1")))
    app = live(luma_api_base=upstream.url).url
    strictly(answer_models.TaskDetail, submit(app, {"user_prompt": "a fox", "loop": False}))
    upstream.then(Reply(200, raw_task("up-made-elsewhere", "completed")))
    imported = requests.post(
        f"{app}/api/tasks/import", json={"upstream_id": "up-made-elsewhere"}, timeout=10
    )
    assert imported.status_code == 201
    strictly(answer_models.TaskDetail, imported)
    luma = live(luma_api_flavor="luma", luma_api_base=upstream.url).url
    account = requests.get(f"{luma}/api/account", timeout=5)
    assert strictly(answer_models.Account, account).upstream == "luma"
    strictly(answer_models.Error, requests.get(f"{app}/api/account", timeout=5))


# -- the document is generated from the models -----------------------------------------------


def test_the_openapi_document_is_valid_and_generated_from_the_models() -> None:
    validate_openapi(SPEC)  # OpenAPI 3.1, every $ref resolvable
    components = SPEC["components"]["schemas"]
    for model in (answer_models.Task, answer_models.TaskDetail, answer_models.Event, bodies.Extend):
        assert set(components[model.__name__]["properties"]) == set(model.model_fields)
    assert set(components["Generate"]["properties"]) == set(bodies.Generate.model_fields)
    assert set(components["Error"]["properties"]) == {"error", "field", "errors"}
    submit_body = SPEC["paths"]["/api/tasks"]["post"]["requestBody"]["content"]
    one_of = submit_body["application/json"]["schema"]["oneOf"]
    assert one_of == [components["Generate"], components["Extend"]]  # what the proxy offers
    luma = SPECS["luma"]["paths"]["/api/tasks"]["post"]["requestBody"]["content"]
    every_kind = [components[model.__name__] for model in bodies.SUBMITS.values()]
    assert luma["application/json"]["schema"]["oneOf"] == every_kind
    for model in bodies.SUBMITS.values():  # every kind's body, as its model checks it
        assert set(components[model.__name__]["properties"]) == set(model.model_fields)


def test_unsafe_routes_document_403_415_and_429() -> None:
    for path, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            answers = operation["responses"]
            assert {"401", "429", "503"} <= set(answers), (method, path)
            if method == "post":
                assert {"403", "415"} <= set(answers), (method, path)
                assert "application/json" in operation["requestBody"]["content"]
            for status, answer in answers.items():
                assert answer["description"], (method, path, status)


def test_the_cli_and_the_api_check_with_the_same_rules() -> None:
    with pytest.raises(validate.ValidationError) as refused:
        validate.new_task({"user_prompt": "a fox", "image_url": "QUFB" * 20}, "luma")
    assert refused.value.field == "image_url"
    assert validate.new_task({"user_prompt": " a fox "}).user_prompt == "a fox"
    assert validate.check_upstream_id(" up-1 ") == "up-1"
    with pytest.raises(validate.ValidationError, match="upstream_id must not be empty"):
        validate.check_upstream_id("  ")


@pytest.mark.parametrize(
    "value",
    [
        "up-1",
        " up-1 ",
        "\x0bc",
        "\x1cc\x1f",
        "a" * 128,
        " " + "a" * 128 + "\t",
        "a" * 129,
        "a b",
        "",
        " ",
    ],
)
def test_the_schema_and_the_check_agree_on_task_ids(value: str) -> None:
    """What /api/openapi.json says of an id is what the server does: spaces around an id are
    dropped (the CLI's, a paste's) and its length is counted without them. schemathesis
    found the difference (a vertical tab before an id was accepted, the schema refused it)."""
    pattern = SPEC["components"]["schemas"]["Import"]["properties"]["upstream_id"]["pattern"]
    try:
        validate.check_upstream_id(value)
        accepted = True
    except validate.ValidationError:
        accepted = False
    assert bool(re.search(pattern, value)) == accepted


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_name", "m" * 64),
        ("model_name", "m" * 64 + " "),
        ("model_name", " m "),
        ("duration", "5s"),
        ("duration", " 5s\t"),
        ("duration", "5 s"),
        ("resolution", "720p"),
        ("resolution", " 720p"),
        ("aspect_ratio", "16:9\n"),
    ],
)
def test_the_schema_and_the_check_agree_on_a_generation_option(field: str, value: str) -> None:
    """The same agreement for the options a spaced or over-long value could slip past."""
    prop = SPEC["components"]["schemas"]["Generate"]["properties"][field]
    try:
        validate.new_task({"user_prompt": "a fox", field: value})
        accepted = True
    except validate.ValidationError:
        accepted = False
    in_schema = value in prop["enum"] if "enum" in prop else bool(re.search(prop["pattern"], value))
    in_schema = in_schema and len(value) <= prop.get("maxLength", len(value))
    assert in_schema == accepted
