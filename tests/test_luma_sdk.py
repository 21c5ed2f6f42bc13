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
  Luma, and runs every other operation it has (upscale, audio, modify, reframe, image
  create and reframe), each answer and each state on the way to completed validated, the
  echoed `request` exactly the operation's own model of the SDK's union.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import requests
from lumaai import APIResponse, LumaAI
from lumaai.types import (
    CreditGetResponse,
    Generation,
    GenerationAudioParams,
    GenerationCreateParams,
    GenerationListResponse,
    GenerationUpscaleParams,
)
from lumaai.types.generation import (
    RequestAudioGenerationRequest,
    RequestGenerationRequest,
    RequestImageGenerationRequest,
    RequestModifyVideoRequest,
    RequestReframeImageRequest,
    RequestReframeVideoRequest,
    RequestUpscaleVideoGenerationRequest,
)
from lumaai.types.generations import ImageCreateParams, VideoModifyParams, VideoReframeParams
from pydantic import BaseModel, TypeAdapter, ValidationError

from lumasim.simulator import Simulator
from tests.support.receiver import Receiver
from tests.support.waiting import wait_for
from tracker.settings import LUMA_MODELS
from tracker.tasks.store import NewTask
from tracker.upstream import dialects
from tracker.upstream.luma import IMAGE_MODELS, MODES
from tracker.upstream.operations import FROM_VIDEO, operation_for

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


# each path of the luma dialect, and the SDK's params type of the call that POSTs there
PARAMS = {
    "/generations": CREATE,
    "/generations/gen-1/upscale": TypeAdapter(GenerationUpscaleParams),
    "/generations/gen-1/audio": TypeAdapter(GenerationAudioParams),
    "/generations/video/modify": TypeAdapter(VideoModifyParams),
    "/generations/video/reframe": TypeAdapter(VideoReframeParams),
    "/generations/image": TypeAdapter(ImageCreateParams),
}
LISTS = ("concepts", "image_ref", "style_ref")  # the SDK's Iterables


def _validated(body: dict[str, Any], path: str = "/generations") -> dict[str, Any]:
    """The body as the SDK's type for its path reads it, every iterable consumed into a list."""
    read = PARAMS[path].validate_python(body)
    return {key: list(value) if key in LISTS else value for key, value in read.items()}


def _refused(body: dict[str, Any], path: str) -> bool:
    """The SDK's type refuses the body, or reads it as something else (a key it drops)."""
    try:
        return _validated(body, path) != body
    except ValidationError:
        return True


def _generations() -> Iterator[NewTask]:
    names = list(OPTIONS)
    for values in itertools.product(*OPTIONS.values()):
        options = {name: value for name, value in zip(names, values, strict=True) if value}
        yield NewTask("generate", "a fox", options=options, upstream="luma")
    for image, end in ((IMAGE, None), (None, END), (IMAGE, END)):
        yield NewTask("generate", "a fox", image_url=image, image_end_url=end, upstream="luma")


def _extends() -> Iterator[NewTask]:
    for end, model in itertools.product((None, END), OPTIONS["model_name"]):
        options = {"model_name": model} if model else {}
        yield NewTask("extend", "on", source_task_id="gen-1", image_end_url=end, options=options)


def _each(kind: str, prompt: str = "", **choices: list[Any]) -> Iterator[NewTask]:
    """A task of `kind` for every combination of its options (None: left out)."""
    names = list(choices)
    for values in itertools.product(*choices.values()):
        options = {name: value for name, value in zip(names, values, strict=True) if value}
        source = "gen-1" if "source_video_url" not in options else None
        yield NewTask(kind, prompt, source_task_id=source, options=options, upstream="luma")


def _others() -> Iterator[NewTask]:
    """Every other operation of Luma's API, with every option (the SDK's values)."""
    video = [None, "https://cdn.example/v.mp4"]  # None: the source task's, read at dispatch
    models = OPTIONS["model_name"]
    yield from _each("upscale", resolution=OPTIONS["resolution"])
    for prompt in ("", "rain on leaves"):
        yield from _each("audio", prompt, negative_prompt=[None, "music"])
        yield from _each(
            "modify",
            prompt,
            mode=list(MODES),
            source_video_url=video,
            first_frame_url=[None, IMAGE],
            model_name=models,
        )
        ratios = OPTIONS["aspect_ratio"][1:]
        yield from _each(
            "reframe", prompt, aspect_ratio=ratios, source_video_url=video, model_name=models
        )
    for image, style in itertools.product((None, IMAGE), (None, END)):
        yield from (
            replace(task, image_url=image)
            for task in _each(
                "image",
                "a kite",
                model_name=[None, *IMAGE_MODELS],
                aspect_ratio=OPTIONS["aspect_ratio"],
                style_url=[None, style],
            )
        )


def _sent(operation: Any) -> Any:
    """As dispatch sends it: a modify or reframe of a source task with its video read."""
    if isinstance(operation, FROM_VIDEO) and not operation.video_url:
        return replace(operation, video_url="https://cdn.example/source.mp4")
    return operation


@pytest.mark.parametrize("model", LUMA_MODELS)
@pytest.mark.parametrize("hook", [HOOK, None])
def test_every_create_body_is_what_the_sdk_takes(model: str, hook: str | None) -> None:
    luma = dialects.get("luma")
    bodies: dict[str, int] = {}
    for task in itertools.chain(_generations(), _extends(), _others()):
        operation = operation_for(task)
        assert luma.unsupported(operation) is None, task
        sent = luma.request(_sent(operation), hook, model=model)
        assert _validated(sent.body, sent.path) == sent.body, sent  # nothing dropped or unknown
        bodies[sent.path] = bodies.get(sent.path, 0) + 1
    assert set(bodies) == set(PARAMS)  # every operation
    assert bodies["/generations"] > 1000  # every option with every other


@pytest.mark.parametrize(
    "broken",
    [
        lambda body: {key: value for key, value in body.items() if key != "model"},
        lambda body: body | {"model": "ray-1-6"},
        lambda body: body | {"aspect_ratio": "2:1"},
    ],
    ids=["no model", "ray-1-6", "an aspect ratio Luma has not"],
)
@pytest.mark.parametrize(
    "task",
    [
        NewTask("generate", "a fox"),
        NewTask("modify", "", options={"mode": "flex_1", "source_video_url": IMAGE}),
        NewTask("reframe", "", options={"aspect_ratio": "1:1", "source_video_url": IMAGE}),
    ],
    ids=["generate", "modify", "reframe"],
)
def test_the_contract_sees_what_luma_would_refuse(broken: Any, task: NewTask) -> None:
    """The check above fails for the bodies the tracker used to send (no `model`, ray-1-6)."""
    sent = dialects.get("luma").request(operation_for(task), HOOK)
    assert not _refused(sent.body, sent.path)
    assert _refused(broken(sent.body), sent.path)


@pytest.mark.parametrize(
    ("task", "broken"),
    [
        (NewTask("image", "a kite"), {"model": "ray-2"}),
        (NewTask("upscale", "", source_task_id="gen-1"), {"resolution": 1080}),
        (NewTask("audio", "", source_task_id="gen-1"), {"generation_type": "audio"}),
        (NewTask("modify", "", options={"mode": "x", "source_video_url": IMAGE}), {}),
    ],
    ids=["an image with a video model", "a resolution as a number", "a wrong type", "no mode"],
)
def test_the_contract_sees_a_wrong_value_of_any_operation(
    task: NewTask, broken: dict[str, Any]
) -> None:
    sent = dialects.get("luma").request(operation_for(task), HOOK)
    assert _refused(sent.body | broken, sent.path)


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


MEDIA, FRAME = {"url": "https://media.example/source.mp4"}, {"url": "https://media.example/a.jpg"}
CROP = {"grid_position_x": 0, "grid_position_y": 0, "resized_width": 320, "resized_height": 180}
CROP |= {"x_start": 0, "x_end": 320, "y_start": 0, "y_end": 568}
REFS = [FRAME | {"weight": 0.8}]
# the SDK's operations beside create, the options its own client is given, and the request
# model of the SDK's union each generation must echo (upscale and audio: of a completed video)
OTHERS: dict[str, tuple[dict[str, Any], type[BaseModel]]] = {
    "upscale": (
        {"generation_type": "upscale_video", "resolution": "4k"},
        RequestUpscaleVideoGenerationRequest,
    ),
    "audio": (
        {"generation_type": "add_audio", "prompt": "surf", "negative_prompt": "music"},
        RequestAudioGenerationRequest,
    ),
    "modify": (
        {"generation_type": "modify_video", "mode": "reimagine_3", "model": "ray-2"}
        | {"media": MEDIA, "first_frame": FRAME, "prompt": "in snow"},
        RequestModifyVideoRequest,
    ),
    "reframe": (
        {"generation_type": "reframe_video", "aspect_ratio": "9:16", "model": "ray-flash-2"}
        | {"media": MEDIA, "first_frame": FRAME, "prompt": "taller"}
        | CROP,
        RequestReframeVideoRequest,
    ),
    "image": (
        {"generation_type": "image", "model": "photon-1", "prompt": "a lighthouse"}
        | {"aspect_ratio": "3:4", "format": "png", "image_ref": REFS, "style_ref": REFS},
        RequestImageGenerationRequest,
    ),
    "image reframe": (
        {"generation_type": "reframe_image", "aspect_ratio": "16:9", "model": "photon-flash-1"}
        | {"media": FRAME, "format": "jpg"}
        | CROP,
        RequestReframeImageRequest,
    ),
}


def _call(client: LumaAI, name: str, source: str, **options: Any) -> APIResponse[Generation]:
    """The SDK client's own method for operation `name`, as a raw response to read twice."""
    generations = client.generations.with_raw_response
    if name in ("upscale", "audio"):
        rerun: Callable[..., APIResponse[Generation]] = getattr(generations, name)
        return rerun(source, **options)
    video, image = (
        client.generations.video.with_raw_response,
        client.generations.image.with_raw_response,
    )
    methods: dict[str, Callable[..., APIResponse[Generation]]] = {
        "modify": video.modify,
        "reframe": video.reframe,
        "image": image.create,
        "image reframe": image.reframe,
    }
    return methods[name](**options)


def _read(raw: Any, request_type: type[BaseModel]) -> Generation:
    """The answer as the SDK's Generation, its `request` exactly the operation's own model.

    Why the exact type: the union is not discriminated, so an echo missing its
    generation_type, or with keys the model has not, could pass as another member.
    """
    generation = Generation.model_validate(raw)
    assert type(generation.request) is request_type, raw
    assert generation.request.model_extra == {}, raw  # nothing the model does not know
    return generation


def _until_completed(client: LumaAI, generation_id: str, request: type[BaseModel]) -> Generation:
    """The SDK's client GETs until completed; every state on the way is read and validated."""
    for _ in range(250):
        answer = client.generations.with_raw_response.get(generation_id)
        generation = _read(answer.json(), request)
        assert answer.parse().id == generation_id
        if generation.state == "completed":
            return generation
        assert generation.state in ("queued", "dreaming"), generation
        time.sleep(0.02)
    raise AssertionError(f"{generation_id} did not complete")


@pytest.mark.slow  # the SDK's client asks the platform (`uname -p`) for its headers
@pytest.mark.parametrize("name", list(OTHERS))
def test_the_sdks_own_client_runs_every_other_operation(
    luma: Simulator, receiver: Receiver, name: str
) -> None:
    options, request = OTHERS[name]
    client = LumaAI(auth_token="sim-key", base_url=luma.url, max_retries=0, timeout=5)
    try:
        source = client.generations.create(prompt="a heron takes off", model="ray-2")
        assert source.id
        before = _until_completed(client, source.id, RequestGenerationRequest)
        hook = f"{receiver.url}/callbacks/luma/{name}"
        answer = _call(client, name, source.id, **options, callback_url=hook)
        made = _read(answer.json(), request)
        assert made.id and answer.parse().id == made.id
        assert (made.id == source.id) is (name in ("upscale", "audio"))  # a rerun keeps it
        assert made.state in ("queued", "dreaming")
        done = _until_completed(client, made.id, request)
        assert done.assets is not None and before.assets is not None
        if request in (RequestImageGenerationRequest, RequestReframeImageRequest):
            assert done.generation_type == "image" and done.model and "photon" in done.model
            assert done.assets.image and done.assets.video is None
        else:
            assert done.generation_type == "video" and done.model in ("ray-2", "ray-flash-2")
            assert done.assets.video and done.assets.video != before.assets.video
        wait_for(lambda: "completed" in receiver.states())
        for _, body in receiver.got:  # the callbacks are Generations too
            assert _read(body, request).id == made.id
    finally:
        client.close()
