"""Bad input never gets a 5xx: the OpenAPI document drives schemathesis against the live app,
and hypothesis throws arbitrary bodies at the callback route."""

from __future__ import annotations

import json

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.scripted import ScriptedUpstream
from tracker.web.openapi import SPEC

schema = schemathesis.openapi.from_dict(SPEC)


@pytest.fixture
def app_url(live, upstream: ScriptedUpstream) -> str:  # type: ignore[no-untyped-def]
    return live(luma_api_base=upstream.url).url


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_and_never_500s(case, app_url: str) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(base_url=app_url)


def test_openapi_document_is_served(app_url: str) -> None:
    served = requests.get(f"{app_url}/api/openapi.json", timeout=5).json()
    assert served["openapi"].startswith("3.")
    assert "/api/tasks" in served["paths"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["id", "task_id", "state", "status", "data", "video", "failure_reason"])
            | st.text(max_size=8),
            children,
            max_size=6,
        )
    ),
    max_leaves=25,
)


@given(body=json_values | st.binary(max_size=300))
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_callback_route_never_500s(app_url: str, upstream: ScriptedUpstream, body: object) -> None:
    if not upstream.posts():  # one real task, whose own callback URL is fuzzed too
        requests.post(f"{app_url}/api/tasks", json={"user_prompt": "fuzz me"}, timeout=5)
    real_hook = upstream.posts()[0].body["notify_hook"]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    targets = [real_hook] + [
        f"{app_url}/callbacks/luma/{token}"
        for token in ("unknown-token", "x" * 300, "%00", "..%2F..%2Fapi")
    ]
    for url in targets:
        response = requests.post(
            url, data=data, headers={"Content-Type": "application/json"}, timeout=5
        )
        assert response.status_code < 500
        assert response.status_code == (200 if url == real_hook else 404)
    task = requests.get(f"{app_url}/api/tasks", timeout=5).json()["tasks"][0]
    # random bodies may finish the task, never move it back or make it something else
    assert task["state"] in ("pending", "processing", "completed", "failed")
