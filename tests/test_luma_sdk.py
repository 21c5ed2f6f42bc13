"""Luma's official SDK as the contract of the `luma` dialect (issue 20, items 1 and 2).

`lumaai` is generated from Luma's OpenAPI document, so its types say what the real API takes
and answers. Here, with the SDK's own types and client (a test dependency only: its client
retries POSTs on its own, which could pay twice):
- every create body the `luma` dialect builds, for every operation and option, validates as
  the SDK's `GenerationCreateParams` and comes out of the validation unchanged (no key
  dropped as unknown, every list consumed);
- every 2xx answer of the simulator validates as the SDK's models (`Generation`,
  `GenerationListResponse`, `CreditGetResponse`);
- the SDK's own client, pointed at the simulator, creates, reads and pays as it would with
  Luma.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from lumaai import LumaAI
from lumaai.types import (
    CreditGetResponse,
    Generation,
    GenerationCreateParams,
    GenerationListResponse,
)
from pydantic import TypeAdapter, ValidationError

from lumasim.simulator import Simulator
from tracker.settings import LUMA_MODELS
from tracker.tasks.store import NewTask
from tracker.upstream import dialects
from tracker.upstream.operations import operation_for

CREATE = TypeAdapter(GenerationCreateParams)
HOOK = "https://tracker.example/callbacks/luma/token"
OPTIONS = {
    "aspect_ratio": [None, "1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"],
    "resolution": [None, "540p", "720p", "1080p", "4k"],
    "duration": [None, "5s", "9s"],
    "loop": [None, True, False],
    "model_name": [None, "ray-2", "ray-flash-2", "ray-v2"],
}
IMAGE, END = "https://img.example/a.png", "https://img.example/b.png"


def _validated(body: dict[str, Any]) -> dict[str, Any]:
    """The body as the SDK's type reads it, every iterable consumed into a list."""
    read = CREATE.validate_python(body)
    return {key: list(value) if key == "concepts" else value for key, value in read.items()}


def _generations() -> Iterator[NewTask]:
    names = list(OPTIONS)
    for values in itertools.product(*OPTIONS.values()):
        options = {name: value for name, value in zip(names, values, strict=True) if value}
        yield NewTask("generate", "a fox", options=options, upstream="luma")
    for image, end in ((IMAGE, None), (None, END), (IMAGE, END)):
        yield NewTask("generate", "a fox", image_url=image, image_end_url=end, upstream="luma")


def _extends() -> Iterator[NewTask]:
    for end in (None, END):
        yield NewTask("extend", "on", source_task_id="gen-1", image_end_url=end, upstream="luma")


@pytest.mark.parametrize("model", LUMA_MODELS)
@pytest.mark.parametrize("hook", [HOOK, None])
def test_every_create_body_is_what_the_sdk_takes(model: str, hook: str | None) -> None:
    luma = dialects.get("luma")
    bodies = 0
    for task in itertools.chain(_generations(), _extends()):
        operation = operation_for(task)
        assert luma.unsupported(operation) is None, task
        body = luma.request(operation, hook, model=model).body
        assert _validated(body) == body, body  # nothing dropped, nothing unknown
        bodies += 1
    assert bodies > 1000  # every option with every other


@pytest.mark.parametrize(
    "broken",
    [
        lambda body: {key: value for key, value in body.items() if key != "model"},
        lambda body: body | {"model": "ray-1-6"},
        lambda body: body | {"aspect_ratio": "2:1"},
    ],
    ids=["no model", "ray-1-6", "an aspect ratio Luma has not"],
)
def test_the_contract_sees_what_luma_would_refuse(broken: Any) -> None:
    """The check above fails for the bodies the tracker used to send (no `model`, ray-1-6)."""
    body = dialects.get("luma").request(operation_for(NewTask("generate", "a fox")), HOOK).body
    assert _validated(body) == body
    with pytest.raises(ValidationError):
        _validated(broken(body))


@pytest.fixture
def luma() -> Iterator[Simulator]:
    simulator = Simulator(processing_after=0.1, complete_after=0.3, flavor="luma").start()
    yield simulator
    simulator.stop()


def test_every_answer_of_the_simulator_is_what_the_sdk_reads(luma: Simulator) -> None:
    made = requests.post(
        f"{luma.url}/generations",
        json={"prompt": "a heron takes off", "model": "ray-2", "callback_url": None},
        timeout=5,
    )
    assert made.status_code == 201
    Generation.model_validate(made.json(), strict=False)
    generation_id = made.json()["id"]
    seen = set()
    for _ in range(50):
        answer = requests.get(f"{luma.url}/generations/{generation_id}", timeout=5)
        assert answer.status_code == 200
        seen.add(Generation.model_validate(answer.json()).state)
        if "completed" in seen:
            break
        time.sleep(0.05)
    assert "completed" in seen
    credits = requests.get(f"{luma.url}/credits", timeout=5)
    assert credits.status_code == 200
    CreditGetResponse.model_validate(credits.json())
    for _ in range(3):  # three more, to page through
        requests.post(
            f"{luma.url}/generations", json={"prompt": "a kite", "model": "ray-2"}, timeout=5
        )
    first = requests.get(f"{luma.url}/generations", params={"limit": 3}, timeout=5)
    assert first.status_code == 200
    page = GenerationListResponse.model_validate(first.json())
    assert (page.count, page.has_more) == (3, True) and page.generations[-1].id != generation_id
    last = GenerationListResponse.model_validate(
        requests.get(f"{luma.url}/generations?limit=3&offset=3", timeout=5).json()
    )
    assert [g.id for g in last.generations] == [generation_id] and last.has_more is False


@pytest.mark.slow  # the SDK's client asks the platform (`uname -p`) for its headers
def test_the_sdks_own_client_runs_against_the_simulator(luma: Simulator) -> None:
    client = LumaAI(auth_token="sim-key", base_url=luma.url, max_retries=0, timeout=5)
    try:
        made = client.generations.create(prompt="a heron takes off", model="ray-flash-2")
        assert made.id and made.model == "ray-flash-2"
        assert client.generations.get(made.id).id == made.id
        assert [g.id for g in client.generations.list(limit=10).generations] == [made.id]
        assert client.credits.get().credit_balance >= 0
    finally:
        client.close()
