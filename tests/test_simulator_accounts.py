"""The simulator with several API keys, each its own upstream account, over real HTTP.

Why: the tracker may hold several keys and must never mix them; these tests pin what the
simulator promises the tests and benchmarks that check it: another key's id is an unknown
id, lists and batches are the key's own, balances are separate, a revoked key is a 401
until restored, and creates are counted per key. Both voices, proxy and luma.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from lumasim.simulator import Simulator
from tests.support.waiting import wait_for

VIDEO = {"prompt": "a heron at dawn", "model": "ray-2"}


@pytest.fixture(params=["proxy", "luma"])
def sim(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    simulator = Simulator(
        api_keys=["A", "B"],
        flavor=request.param,
        processing_after=0.05,
        complete_after=0.15,
        balances={"A": 1_000},
    ).start()
    yield simulator
    simulator.stop()


def call(sim: Simulator, method: str, path: str, key: str, body: Any = None) -> requests.Response:
    """A request as the tracker makes it: the dialect's prefix, Bearer <key>."""
    prefix = "/luma" if sim.flavor == "proxy" else ""
    headers = {"Authorization": f"Bearer {key}"}
    return requests.request(
        method, f"{sim.url}{prefix}{path}", json=body, headers=headers, timeout=5
    )


def create(sim: Simulator, key: str) -> str:
    body = {"user_prompt": VIDEO["prompt"]} if sim.flavor == "proxy" else VIDEO
    answer = call(sim, "POST", "/generations", key, body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def completed(sim: Simulator, key: str, task_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        got: dict[str, Any] = call(sim, "GET", f"/generations/{task_id}", key).json()
        return got if got["state"] == "completed" else None

    result: dict[str, Any] = wait_for(done)
    return result


def same_as_unknown(sim: Simulator, method: str, path: str, key: str, body: Any = None) -> None:
    """Another account's id answers exactly as an id nobody made."""
    task_id = create(sim, "A")
    completed(sim, "A", task_id)
    theirs = call(sim, method, path.format(id=task_id), key, body)
    unknown = call(sim, method, path.format(id=uuid.uuid4()), key, body)
    assert theirs.status_code == unknown.status_code and theirs.status_code in (400, 404)
    assert theirs.json() == unknown.json()
    assert call(sim, method, path.format(id=task_id), "A", body).status_code in (200, 201)


def test_an_id_of_one_key_is_unknown_to_another(sim: Simulator) -> None:
    mine = create(sim, "A")
    assert call(sim, "GET", f"/generations/{mine}", "B").status_code == 404
    final = completed(sim, "A", mine)
    same_as_unknown(sim, "GET", "/generations/{id}", "B")
    if sim.flavor == "proxy":
        same_as_unknown(sim, "POST", "/generations/{id}/extend", "B", {"user_prompt": "more"})
        same_as_unknown(sim, "GET", "/generations/{id}/download_video_url", "B")
        link = final["video"]["url"]
    else:
        same_as_unknown(sim, "POST", "/generations/{id}/upscale", "B", {"resolution": "1080p"})
        same_as_unknown(sim, "POST", "/generations/{id}/audio", "B", {"prompt": "waves"})
        theirs = call(sim, "POST", "/generations", "B", _extend(mine))  # A's, as a keyframe
        unknown = call(sim, "POST", "/generations", "B", _extend(str(uuid.uuid4())))
        assert theirs.status_code == unknown.status_code == 400
        assert theirs.json() == unknown.json() == {"detail": "Generation not found"}
        assert call(sim, "POST", "/generations", "A", _extend(mine)).status_code == 201
        link = final["assets"]["video"]
    assert requests.get(link, timeout=5).content[4:8] == b"ftyp"  # a file needs no key


def _extend(task_id: str) -> dict[str, Any]:
    """Luma's extend: a create whose first keyframe is the generation to go on from."""
    return VIDEO | {"keyframes": {"frame0": {"type": "generation", "id": task_id}}}


def test_lists_and_batches_show_only_the_keys_own(sim: Simulator) -> None:
    a_ids = [create(sim, "A") for _ in range(3)]
    b_ids = [create(sim, "B") for _ in range(2)]
    if sim.flavor == "proxy":
        for key, own in (("A", a_ids), ("B", b_ids)):
            answer = call(sim, "POST", "/tasks", key, {"ids": a_ids + b_ids})
            assert answer.status_code == 200
            assert [raw["id"] for raw in answer.json()] == own
        sim.batch_shape = "wrapped"
        wrapped = call(sim, "POST", "/tasks", "B", {"ids": a_ids + b_ids}).json()
        assert [entry["task_id"] for entry in wrapped["data"]] == b_ids
        return
    listed = call(sim, "GET", "/generations?limit=100", "A").json()
    assert [g["id"] for g in listed["generations"]] == a_ids[::-1]
    assert listed["count"] == 3 and listed["has_more"] is False
    page = call(sim, "GET", "/generations?limit=1&offset=1", "B").json()
    assert [g["id"] for g in page["generations"]] == [b_ids[0]] and page["has_more"] is False


def test_balances_are_separate(sim: Simulator) -> None:
    assert sim.balance("A") == 1_000 and sim.balance("B") == 100_000
    assert sim.credit_balance == 1_000  # the first key's, as with one key
    sim.set_balance("B", 500)
    create(sim, "A")
    if sim.flavor == "luma":  # the proxy sells no credits: creates there cost nothing here
        assert call(sim, "GET", "/credits", "A").json() == {"credit_balance": 960}
        assert call(sim, "GET", "/credits", "B").json() == {"credit_balance": 500}
        sim.credit_balance = 7
        assert call(sim, "GET", "/credits", "A").json() == {"credit_balance": 7}
    assert sim.balance("B") == 500
    with pytest.raises(ValueError, match="not one of"):
        sim.set_balance("C", 1)


def test_a_revoked_key_is_a_401_until_restored(sim: Simulator) -> None:
    mine = create(sim, "A")
    unknown_key = call(sim, "GET", f"/generations/{mine}", "nobody's")
    assert unknown_key.status_code == 401
    revoked = requests.post(f"{sim.url}/_sim/keys/A/revoke", timeout=5)  # no key needed
    assert revoked.status_code == 200 and revoked.json() == {"revoked": True}
    for method, path in (("GET", f"/generations/{mine}"), ("POST", "/generations")):
        answer = call(sim, method, path, "A", {"prompt": "x"})
        assert answer.status_code == 401 and answer.json() == unknown_key.json()
    create(sim, "B")  # the other account goes on
    restored = requests.post(f"{sim.url}/_sim/keys/A/restore", timeout=5)
    assert restored.status_code == 200 and restored.json() == {"revoked": False}
    assert call(sim, "GET", f"/generations/{mine}", "A").status_code == 200  # its tasks kept
    sim.revoke("B")
    assert call(sim, "GET", "/generations/x", "B").status_code == 401
    sim.restore("B")
    create(sim, "B")
    missing = requests.post(f"{sim.url}/_sim/keys/C/revoke", timeout=5)
    assert missing.status_code == 404 and missing.json() == {"detail": "Unknown key"}
    with pytest.raises(ValueError, match="not one of"):
        sim.revoke("C")


def test_creates_and_in_flight_are_counted_per_key(sim: Simulator) -> None:
    sim.set_state(create(sim, "A"), "processing")  # held: in flight until it finishes
    first = create(sim, "A")
    create(sim, "B")
    assert sim.creates_by_key == {"A": 2, "B": 1} and sim.creates == 3
    assert sim.in_flight("A") == 2 and sim.in_flight() == 3
    completed(sim, "A", first)
    wait_for(lambda: sim.in_flight("B") == 0)
    assert sim.in_flight("A") == 1
    assert [r.key for r in sim.requests if r.route == "create"] == ["A", "A", "B"]


def test_one_key_or_none_is_as_before() -> None:
    plain = Simulator(flavor="luma", credit_balance=50).start()
    keyed = Simulator(api_key="K", api_keys=["K", "L"])
    try:
        assert keyed.api_key == "K" and keyed.api_keys == ("K", "L")  # once each, in order
        answer = requests.post(f"{plain.url}/generations", json=VIDEO, timeout=5)
        assert answer.status_code == 201 and plain.creates_by_key == {"": 1}
        assert requests.get(f"{plain.url}/credits", timeout=5).json() == {"credit_balance": 10}
        with pytest.raises(ValueError, match="takes no API key"):
            plain.revoke("")
        assert requests.post(f"{plain.url}/_sim/keys/x/revoke", timeout=5).status_code == 404
    finally:
        plain.stop()
    with pytest.raises(ValueError, match="balances for keys"):
        Simulator(api_keys=["A"], balances={"B": 1})
    with pytest.raises(TypeError, match="list of keys"):
        Simulator(api_keys="AB")


@pytest.mark.slow  # starts a process
def test_tracker_simulate_takes_two_keys() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tracker = os.path.join(os.path.dirname(sys.executable), "tracker")
    command = [tracker, "simulate", "--port", str(port), "--flavor", "luma"]
    command += ["--key", "A", "--key", "B", "--no-callbacks"]
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    base = f"http://127.0.0.1:{port}"
    try:
        line = child.stderr.readline() if child.stderr else ""
        assert "2 API key(s)" in line
        made = {}
        for key in ("A", "B"):
            auth = {"Authorization": f"Bearer {key}"}
            answer = requests.post(f"{base}/generations", json=VIDEO, headers=auth, timeout=5)
            assert answer.status_code == 201
            made[key] = answer.json()["id"]
        auth = {"Authorization": "Bearer B"}
        theirs = requests.get(f"{base}/generations/{made['A']}", headers=auth, timeout=5)
        assert theirs.status_code == 404
        assert requests.get(f"{base}/credits", timeout=5).status_code == 401  # no key
        assert requests.post(f"{base}/_sim/keys/B/revoke", timeout=5).status_code == 200
        assert requests.get(f"{base}/credits", headers=auth, timeout=5).status_code == 401
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=5) == 0
    finally:
        if child.poll() is None:
            child.kill()
