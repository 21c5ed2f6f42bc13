"""The luma simulator's operations beside create, over real HTTP: upscale and audio (which keep
the generation's id), modify and reframe, images, and Luma's refusals of what its SDK would
not send.

Why beside test_luma_sdk.py: that file runs the SDK's own client (slow: it spawns `uname`);
these read the simulator's behaviour with plain requests, every 2xx answer still read as
the SDK's `Generation`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from lumaai.types import Generation

from lumasim.simulator import Simulator
from tests.support.receiver import Receiver
from tests.support.waiting import wait_for

MEDIA = {"url": "https://media.example/source.mp4"}
MODIFY = {"generation_type": "modify_video", "media": MEDIA, "mode": "flex_1", "model": "ray-2"}
REFRAME = {"generation_type": "reframe_video", "media": MEDIA, "aspect_ratio": "9:16"}
REFRAME["model"] = "ray-flash-2"
IMAGE = {"model": "photon-1", "prompt": "a lighthouse at dusk"}


@pytest.fixture
def luma() -> Iterator[Simulator]:
    simulator = Simulator(processing_after=0.1, complete_after=0.3, flavor="luma").start()
    yield simulator
    simulator.stop()


def post(sim: Simulator, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{sim.url}/generations{path}", json=body, timeout=5)


def made(answer: requests.Response) -> dict[str, Any]:
    """A 201 whose body the SDK reads as its Generation."""
    assert answer.status_code == 201, answer.text
    Generation.model_validate(answer.json())
    body: dict[str, Any] = answer.json()
    return body


def completed(sim: Simulator, generation_id: str) -> dict[str, Any]:
    """GET until completed; every state on the way is a Generation the SDK reads."""

    def done() -> dict[str, Any] | None:
        got = requests.get(f"{sim.url}/generations/{generation_id}", timeout=5)
        assert got.status_code == 200
        state = Generation.model_validate(got.json()).state
        return got.json() if state == "completed" else None

    final: dict[str, Any] = wait_for(done)
    return final


def a_video(sim: Simulator, **extra: Any) -> dict[str, Any]:
    created = made(post(sim, "", {"prompt": "a heron takes off", "model": "ray-2", **extra}))
    return completed(sim, created["id"])


def test_upscale_and_audio_keep_the_id_and_hand_out_a_new_video(
    luma: Simulator, receiver: Receiver
) -> None:
    source = a_video(luma, callback_url=f"{receiver.url}/callbacks/first")
    wait_for(lambda: receiver.states() == ["dreaming", "completed"])
    videos = [source["assets"]["video"]]
    for path, body, echoed in (
        ("upscale", {"resolution": "1080p"}, "upscale_video"),
        ("audio", {"prompt": "waves", "negative_prompt": "music"}, "add_audio"),
    ):
        hook = f"{receiver.url}/callbacks/{path}"
        rerun = made(post(luma, f"/{source['id']}/{path}", body | {"callback_url": hook}))
        assert rerun["id"] == source["id"] and rerun["state"] == "dreaming"
        assert rerun["assets"] is None and rerun["model"] == "ray-2"
        assert rerun["request"] == {"generation_type": echoed, "callback_url": hook} | body
        final = completed(luma, source["id"])
        assert final["request"] == rerun["request"]  # GET shows the latest request
        assert final["assets"]["video"].split("?")[0] not in [v.split("?")[0] for v in videos]
        videos.append(final["assets"]["video"])
        video = requests.get(final["assets"]["video"], timeout=5)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        # its callbacks first: the next rerun leaves what is still due of this one unsent
        wait_for(lambda: len(receiver.got) == 2 * len(videos))
    assert [(path.rsplit("/", 1)[1], body["state"]) for path, body in receiver.got] == [
        ("first", "dreaming"),
        ("first", "completed"),
        ("upscale", "dreaming"),
        ("upscale", "completed"),
        ("audio", "dreaming"),
        ("audio", "completed"),
    ]
    # the same file (a link is signed afresh each time: its expiry may be a second later)
    assert receiver.got[3][1]["assets"]["video"].split("?")[0] == videos[1].split("?")[0]
    assert list(luma.tasks) == [source["id"]] and luma.creates == 3


def test_reruns_need_a_completed_video_generation(luma: Simulator) -> None:
    missing = post(luma, "/nope/upscale", {})
    assert missing.status_code == 404 and missing.json() == {"detail": "Generation not found"}
    queued = made(post(luma, "", {"prompt": "a kite", "model": "ray-2"}))
    early = post(luma, f"/{queued['id']}/audio", {"prompt": "wind"})
    assert early.status_code == 400 and "completed" in early.json()["detail"]
    image = completed(luma, made(post(luma, "/image", IMAGE))["id"])
    upscaled = post(luma, f"/{image['id']}/upscale", {"resolution": "4k"})
    assert upscaled.status_code == 400 and "video" in upscaled.json()["detail"]
    video = completed(luma, queued["id"])
    for path, body in (("upscale", {"resolution": "8k"}), ("audio", {"prompt": 5})):
        refused = post(luma, f"/{video['id']}/{path}", body)
        assert refused.status_code == 400 and set(refused.json()) == {"detail"}
    unchanged = completed(luma, video["id"])
    assert unchanged["request"] == video["request"] and luma.tasks[video["id"]].revision == 0
    assert luma.creates == 2  # refusals are not creates


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/video/modify", MODIFY | {"mode": "flex_9"}, "Invalid mode: flex_9"),
        ("/video/modify", {k: v for k, v in MODIFY.items() if k != "model"}, "model is required"),
        ("/video/modify", {k: v for k, v in MODIFY.items() if k != "mode"}, "mode is required"),
        ("/video/modify", MODIFY | {"media": {}}, "media.url is required"),
        ("/video/modify", MODIFY | {"media": {"url": "data:video/mp4;base64,AA"}}, "URL"),
        ("/video/modify", MODIFY | {"generation_type": "video"}, "Invalid generation_type"),
        ("/video/modify", {k: v for k, v in MODIFY.items() if k != "generation_type"}, "required"),
        ("/video/reframe", REFRAME | {"aspect_ratio": "2:1"}, "Invalid aspect_ratio: 2:1"),
        ("/video/reframe", REFRAME | {"model": "ray-1-6"}, "Invalid model: ray-1-6"),
        ("/video/reframe", REFRAME | {"x_start": "0"}, "x_start must be an integer"),
        ("/video/reframe", REFRAME | {"first_frame": {"url": 1}}, "first_frame.url"),
        ("/image", IMAGE | {"model": "photon-2"}, "Invalid model: photon-2"),
        ("/image", {"prompt": "a lighthouse"}, "model is required"),
        ("/image", IMAGE | {"model": "ray-2"}, "Invalid model: ray-2"),
        ("/image", IMAGE | {"format": "gif"}, "Invalid format: gif"),
        ("/image", IMAGE | {"image_ref": {"url": "x"}}, "image_ref must be a list"),
        ("/image", IMAGE | {"generation_type": "video"}, "Invalid generation_type"),
        ("/image/reframe", {"generation_type": "reframe_image", "model": "photon-1"}, "aspect"),
    ],
)
def test_luma_refuses_what_its_sdk_would_not_send(
    luma: Simulator, path: str, body: dict[str, Any], words: str
) -> None:
    answer = post(luma, path, body)
    assert answer.status_code == 400
    assert list(answer.json()) == ["detail"] and words in answer.json()["detail"]
    assert not luma.tasks and luma.creates == 0


@pytest.mark.parametrize("name", ["modify", "reframe"])
def test_modify_and_reframe_are_new_video_generations(luma: Simulator, name: str) -> None:
    balance = luma.credit_balance
    body = (MODIFY if name == "modify" else REFRAME) | {"prompt": "in the snow"}
    first = made(post(luma, f"/video/{name}", body))
    second = made(post(luma, f"/video/{name}", body))
    assert first["id"] != second["id"] and first["state"] == "queued"
    assert first["request"] == body and first["model"] == body["model"]
    final = completed(luma, first["id"])
    assert final["generation_type"] == "video" and final["assets"]["video"]
    assert requests.get(final["assets"]["video"], timeout=5).content[4:8] == b"ftyp"
    assert luma.creates == 2 and luma.credit_balance < balance


@pytest.mark.parametrize(
    ("options", "mimetype", "magic"),
    [
        ({}, "image/jpeg", b"\xff\xd8\xff"),
        ({"format": "jpg"}, "image/jpeg", b"\xff\xd8\xff"),
        ({"format": "png", "aspect_ratio": "1:1"}, "image/png", b"\x89PNG\r\n\x1a\n"),
    ],
)
def test_an_image_is_an_image_the_simulator_serves(
    luma: Simulator, options: dict[str, Any], mimetype: str, magic: bytes
) -> None:
    refs = [{"url": "https://img.example/a.jpg", "weight": 0.5}]
    body = IMAGE | options | {"image_ref": refs, "style_ref": refs, "character_ref": {}}
    image = made(post(luma, "/image", body))
    assert image["generation_type"] == "image" and image["model"] == "photon-1"
    assert image["request"] == {"generation_type": "image"} | body
    final = completed(luma, image["id"])
    assert final["generation_type"] == "image" and final["assets"]["video"] is None
    served = requests.get(final["assets"]["image"], timeout=5)
    assert served.status_code == 200 and served.headers["Content-Type"] == mimetype
    assert served.content.startswith(magic)


def test_a_sync_image_answers_once_completed(luma: Simulator) -> None:
    image = made(post(luma, "/image", IMAGE | {"sync": True, "sync_timeout": 5}))
    assert image["state"] == "completed" and image["assets"]["image"]
    short = made(post(luma, "/image", IMAGE | {"sync": True, "sync_timeout": 0.01}))
    assert short["state"] in ("queued", "dreaming")  # the wait ran out first


def test_every_kind_of_create_is_the_create_route_for_faults_and_counts(luma: Simulator) -> None:
    video = a_video(luma)
    luma.fail_next("create", status=503)
    assert post(luma, "/image", IMAGE).status_code == 503
    assert len(luma.tasks) == 1 and luma.creates == 1  # refused before any work
    luma.fail_next("create", status=500, after=True)  # the ambiguous kind: done, then a 500
    assert post(luma, f"/{video['id']}/upscale", {}).status_code == 500
    assert luma.tasks[video["id"]].revision == 1 and luma.creates == 2
    made(post(luma, "/video/modify", MODIFY))
    made(post(luma, "/video/reframe", REFRAME))
    routes = [r.route for r in luma.requests if r.method == "POST"]
    assert routes == ["create"] * 5 and luma.creates == 4
