"""The simulator speaking Luma's own API (upstream.md, "Luma's own API"), over real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from lumasim.simulator import Simulator
from tests.support.receiver import Receiver
from tests.support.waiting import wait_for


@pytest.fixture
def luma() -> Iterator[Simulator]:
    simulator = Simulator(processing_after=0.15, complete_after=0.4, flavor="luma").start()
    yield simulator
    simulator.stop()


def create(sim: Simulator, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{sim.url}/generations", json=body, timeout=5)


def test_a_generation_is_201_and_goes_queued_dreaming_completed_with_assets(
    luma: Simulator,
) -> None:
    answer = create(luma, {"prompt": "a cat surfing a wave", "model": "ray-2"})
    assert answer.status_code == 201
    made = answer.json()
    assert made["state"] == "queued" and made["assets"] is None
    assert made["generation_type"] == "video" and made["model"] == "ray-2"
    assert made["request"]["prompt"] == "a cat surfing a wave"
    seen: set[str] = set()

    def done() -> dict[str, Any] | None:
        got = requests.get(f"{luma.url}/generations/{made['id']}", timeout=5).json()
        seen.add(got["state"])
        return got if got["state"] == "completed" else None

    final = wait_for(done)
    assert seen <= {"queued", "dreaming", "completed"}
    video = requests.get(final["assets"]["video"], timeout=5)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    assert requests.get(final["assets"]["image"], timeout=5).status_code == 200


def test_unknown_ids_are_404_with_detail_and_reseller_routes_do_not_exist(luma: Simulator) -> None:
    missing = requests.get(f"{luma.url}/generations/nope", timeout=5)
    assert missing.status_code == 404 and missing.json() == {"detail": "Generation not found"}
    assert requests.post(f"{luma.url}/luma/tasks", json={"ids": []}, timeout=5).status_code == 404
    assert requests.post(f"{luma.url}/luma/generations", json={}, timeout=5).status_code == 404


def test_refusals_in_lumas_words(luma: Simulator) -> None:
    def refused(body: dict[str, Any]) -> str:
        answer = create(luma, body)
        assert answer.status_code == 400
        return answer.json()["detail"]

    assert refused({"user_prompt": "the proxy's words"}) == "Prompt is required"
    assert refused({"prompt": "ab", "model": "ray-2"}).startswith("Prompt is too short")
    assert refused({"prompt": "a fox", "model": "ray-v2"}).startswith("Invalid model")
    image = {"type": "image", "url": "data:image/png;base64,AAAA"}
    assert "URL" in refused({"prompt": "a fox", "model": "ray-2", "keyframes": {"frame0": image}})
    source = create(luma, {"prompt": "a river", "model": "ray-2"}).json()["id"]
    frame = {"frame0": {"type": "generation", "id": source}}
    assert "completed" in refused({"prompt": "go on", "model": "ray-2", "keyframes": frame})
    assert refused({"prompt": "go on", "model": "ray-2", "keyframes": frame, "loop": True}) == (
        "Loop is not supported for extend"
    )
    unknown = {"frame0": {"type": "generation", "id": "nope"}}
    assert (
        refused({"prompt": "go on", "model": "ray-2", "keyframes": unknown})
        == "Generation not found"
    )
    luma.set_state(source, "completed")
    extended = create(luma, {"prompt": "go on", "model": "ray-2", "keyframes": frame})
    assert extended.status_code == 201
    assert luma.tasks[extended.json()["id"]].source_id == source


def test_callbacks_post_the_generation_at_dreaming_and_completed(
    luma: Simulator,
    receiver: Receiver,
) -> None:
    hook = f"{receiver.url}/callbacks/luma/tok"
    made = create(luma, {"prompt": "a kite", "model": "ray-2", "callback_url": hook}).json()
    wait_for(lambda: receiver.states() == ["dreaming", "completed"])
    final = receiver.got[-1][1]
    assert final["id"] == made["id"] and final["assets"]["video"].startswith(luma.url)
    failing = create(luma, {"prompt": "please fail", "model": "ray-2", "callback_url": hook}).json()
    wait_for(
        lambda: any(b["id"] == failing["id"] and b["state"] == "failed" for _, b in receiver.got)
    )


def test_credits_answer_the_balance_in_cents(luma: Simulator) -> None:
    start = requests.get(f"{luma.url}/credits", timeout=5).json()["credit_balance"]
    create(luma, {"prompt": "a heron", "model": "ray-2"})
    assert requests.get(f"{luma.url}/credits", timeout=5).json()["credit_balance"] < start


@pytest.mark.slow  # starts a process
def test_the_cli_speaks_luma_with_flavor() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tracker = os.path.join(os.path.dirname(sys.executable), "tracker")
    command = [tracker, "simulate", "--port", str(port), "--flavor", "luma"]
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        line = child.stderr.readline() if child.stderr else ""
        assert "Luma's own API" in line
        answer = requests.post(
            f"http://127.0.0.1:{port}/generations",
            json={"prompt": "a fox", "model": "ray-2"},
            timeout=5,
        )
        assert answer.status_code == 201 and answer.json()["state"] == "queued"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=5) == 0
    finally:
        if child.poll() is None:
            child.kill()
    bad = subprocess.run([tracker, "simulate", "--flavor", "kling"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--flavor" in bad.stderr
