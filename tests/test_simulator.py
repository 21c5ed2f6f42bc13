"""The simulated upstream over real HTTP: the loop a newcomer sees, callbacks, faults, files.

The tracker's own client talks to it where it can, so a drift between what the simulator sends
and what the client understands fails here first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from lumasim.media import SAMPLE_JPG, SAMPLE_MP4
from lumasim.simulator import Simulator
from tests.support.receiver import Receiver
from tracker.upstream.client import (
    Answer,
    APIStatusError,
    APITimeoutError,
    LumaClient,
    RateLimitError,
)
from tracker.upstream.operations import Request


def create(client: LumaClient, body: dict[str, Any]) -> Answer:
    """A create with a body as given (the proxy's words), past the dialect's checks."""
    return client.send(Request("/luma/generations", body))


def extend(client: LumaClient, source: str, body: dict[str, Any]) -> Answer:
    return client.send(Request(f"/luma/generations/{source}/extend", body))


def wait_for(predicate: Callable[[], Any], timeout: float = 4.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


@pytest.fixture
def fast() -> Iterator[Simulator]:
    simulator = Simulator(processing_after=0.2, complete_after=0.5).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(fast: Simulator) -> Iterator[LumaClient]:
    assert fast.url
    luma = LumaClient(fast.url, "", read_timeout=3.0)
    yield luma
    luma.close()


def completed(client: LumaClient, upstream_id: str) -> Any:
    return wait_for(lambda: (u := client.query(upstream_id).update).state == "completed" and u)


def test_a_task_goes_pending_processing_completed_with_a_real_video(
    fast: Simulator, client: LumaClient
) -> None:
    answer = create(client, {"user_prompt": "a cat surfing a wave"})
    assert answer.status == 201 and answer.update.state == "pending"
    assert answer.body["video"] is None and answer.body["created_at"].endswith("Z")
    upstream_id = answer.update.upstream_id
    assert upstream_id in fast.tasks and fast.creates == 1
    assert wait_for(lambda: client.query(upstream_id).update.state == "processing")
    update = completed(client, upstream_id)
    video = requests.get(update.video_url, timeout=5)
    assert video.headers["Content-Type"] == "video/mp4"
    assert video.content == SAMPLE_MP4.read_bytes()
    assert requests.get(update.thumbnail_url, timeout=5).content == SAMPLE_JPG.read_bytes()
    fresh = client.download_url(upstream_id)
    assert fresh and requests.get(fresh, timeout=5).status_code == 200
    assert [u.state for u in client.query_many([upstream_id, "unknown"])] == ["completed"]
    fast.batch_shape = "wrapped"
    assert [u.video_url is not None for u in client.query_many([upstream_id])] == [True]
    fast.batch_shape = "none"
    with pytest.raises(APIStatusError) as refused:
        client.query_many([upstream_id])
    assert refused.value.status == 404
    assert fast.max_in_flight() == 1


def test_refusals_in_lumas_words(fast: Simulator, client: LumaClient) -> None:
    url = f"{fast.url}/luma/generations"
    cases = [
        ({}, "Prompt is required"),
        ({"user_prompt": "  "}, "Prompt is required"),
        ({"user_prompt": "ab"}, "Prompt is too short, minimum length is 3 characters"),
        ({"user_prompt": "x" * 5001}, "Prompt is too long, maximum length is 5000 characters"),
    ]
    for body, reason in cases:
        answer = requests.post(url, json=body, timeout=5)
        assert (answer.status_code, answer.json()) == (400, {"detail": reason})
    assert requests.post(url, data=b"not json", timeout=5).status_code == 400
    unknown = requests.get(f"{url}/nope", timeout=5)
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "Task not found"})
    with pytest.raises(APIStatusError) as missing:
        extend(client, "nope", {"user_prompt": "go on"})
    assert missing.value.status == 404
    source = create(client, {"user_prompt": "a river"}).update.upstream_id
    with pytest.raises(APIStatusError, match="completed"):
        extend(client, source, {"user_prompt": "go on"})
    completed(client, source)
    with pytest.raises(APIStatusError, match="Loop is not supported for extend"):
        extend(client, source, {"user_prompt": "go on", "loop": True})
    extended = extend(client, source, {"user_prompt": "go on"}).update.upstream_id
    assert fast.tasks[extended].source_id == source and fast.creates == 2


def test_an_api_key_is_required_when_set() -> None:
    simulator = Simulator(api_key="sk-sim").start()
    try:
        url = f"{simulator.url}/luma/generations"
        denied = requests.post(url, json={"user_prompt": "a cat"}, timeout=5)
        assert (denied.status_code, denied.json()) == (401, {"detail": "Invalid API key"})
        assert simulator.creates == 0
        allowed = LumaClient(simulator.url or "", "sk-sim")
        assert create(allowed, {"user_prompt": "a cat"}).status == 201
        allowed.close()
    finally:
        simulator.stop()


def test_a_prompt_with_fail_ends_failed(fast: Simulator, client: LumaClient) -> None:
    upstream_id = create(client, {"user_prompt": "please fail this one"}).update.upstream_id
    update = wait_for(lambda: (u := client.query(upstream_id).update).state == "failed" and u)
    assert update.failure_reason == "Frame moderation failed" and update.video_url is None
    fast.set_state(upstream_id, "failed", failure_reason="Contains blacklisted words")
    assert client.query(upstream_id).update.failure_reason == "Contains blacklisted words"
    with pytest.raises(APIStatusError):
        client.download_url(upstream_id)


def test_callbacks_reach_the_hook_on_processing_and_completed(
    fast: Simulator, client: LumaClient, receiver: Receiver
) -> None:
    hook = f"{receiver.url}/callbacks/luma/secret-token"
    upstream_id = create(client, {"user_prompt": "a kite", "notify_hook": hook}).update.upstream_id
    wait_for(lambda: receiver.states() == ["processing", "completed"])
    assert {path for path, _ in receiver.got} == {"/callbacks/luma/secret-token"}
    assert receiver.got[-1][1]["id"] == upstream_id and receiver.got[-1][1]["video"]["url"]
    fast.callbacks = False
    silent = create(client, {"user_prompt": "a quiet kite", "notify_hook": hook}).update
    completed(client, silent.upstream_id or "")
    time.sleep(0.1)
    assert len(receiver.got) == 2
    assert fast.send_callback(silent.upstream_id or "", {"anything": 1}) == 200
    assert receiver.got[-1][1] == {"anything": 1}


def test_a_callback_not_answered_200_is_retried_three_times(receiver: Receiver) -> None:
    simulator = Simulator(processing_after=0.05, complete_after=30).start()
    receiver.status = 503
    try:
        body = {"user_prompt": "a kite", "notify_hook": f"{receiver.url}/hook"}
        requests.post(f"{simulator.url}/luma/generations", json=body, timeout=5)
        wait_for(lambda: len(receiver.got) >= 4)
        time.sleep(0.3)
        assert receiver.states() == ["processing"] * 4
    finally:
        simulator.stop()


def test_fail_next_answers_as_configured(fast: Simulator, client: LumaClient) -> None:
    fast.fail_next("create", status=429, body={"detail": "slow down"}, headers={"Retry-After": "2"})
    with pytest.raises(RateLimitError) as limited:
        create(client, {"user_prompt": "a cat"})
    assert (limited.value.retry_after, limited.value.reason, fast.creates) == (2.0, "slow down", 0)

    fast.fail_next("create", status=500, after=True)  # the ambiguous case: created, then 500
    with pytest.raises(APIStatusError) as ambiguous:
        create(client, {"user_prompt": "a cat"})
    assert ambiguous.value.status == 500 and fast.creates == 1 and len(fast.tasks) == 1

    fast.fail_next("create", drop=True)  # dropped before creating
    with pytest.raises(APITimeoutError):
        create(client, {"user_prompt": "a cat"})
    assert fast.creates == 1 and fast.requests[-1].status == 0

    upstream_id = next(iter(fast.tasks))
    fast.fail_next("query", status=503, body="<html>Bad gateway</html>", times=2)
    for _ in range(2):
        page = requests.get(f"{fast.url}/luma/generations/{upstream_id}", timeout=5)
        assert page.status_code == 503 and page.headers["Content-Type"].startswith("text/html")
    assert client.query(upstream_id).update.state in ("pending", "processing")

    fast.fail_next("query", status=200, body={"id": upstream_id}, delay=0.3)
    started = time.monotonic()
    assert client.query(upstream_id).update.understood is False
    assert time.monotonic() - started >= 0.3


def test_presigned_links_serve_ranges_and_expire(fast: Simulator, client: LumaClient) -> None:
    upstream_id = create(client, {"user_prompt": "a cat"}).update.upstream_id or ""
    video_url = completed(client, upstream_id).video_url
    part = requests.get(video_url, headers={"Range": "bytes=0-99"}, timeout=5)
    assert part.status_code == 206 and part.content == SAMPLE_MP4.read_bytes()[:100]
    assert part.headers["Content-Range"].startswith("bytes 0-99/")
    assert requests.get(video_url.replace("sig=", "sig=0"), timeout=5).status_code == 403
    fast.link_ttl = -5
    expired = client.query(upstream_id).update.video_url
    assert expired and requests.get(expired, timeout=5).status_code == 403


def test_max_overlap_counts_concurrent_queries_of_one_task(
    fast: Simulator, client: LumaClient
) -> None:
    first = create(client, {"user_prompt": "one"}).update.upstream_id or ""
    second = create(client, {"user_prompt": "two"}).update.upstream_id or ""
    fast.latency = 0.2
    client.query(first)
    client.query(first)
    assert fast.max_overlap("query") == 1
    threads = [threading.Thread(target=client.query, args=(task,)) for task in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fast.max_overlap("query") == 1  # two tasks at once is not an overlap
    threads = [threading.Thread(target=client.query, args=(first,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fast.max_overlap("query") == 3
    assert fast.max_in_flight() == 2


@pytest.mark.slow
def test_main_serves_until_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "lumasim", "--port", str(port), "--key", "k"]
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        line = child.stderr.readline() if child.stderr else ""
        assert f"listening on http://127.0.0.1:{port}" in line
        answer = requests.get(f"http://127.0.0.1:{port}/luma/generations/x", timeout=5)
        assert answer.status_code == 401
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=5) == 0
    finally:
        if child.poll() is None:
            child.kill()
