"""Webhook benchmarks (issue 11): `python -m bench webhooks` (never run by pytest).

(a) Fan-out: 1,000 tasks complete in one transaction -> 1,000 signed `task.completed`
    deliveries sent by the worker's sender (8 threads) to a local receiver that verifies every
    signature with `standardwebhooks` (in its own process); time and rate against a bare
    sender's floor (the same receiver, threads and signing, no database), alternating, median
    of three. SQLite.
(b) A receiver that hangs: 20 tasks go pending -> completed -> archived through a real
    `tracker worker` against the simulator, with every event sent to a receiver that never
    answers (each attempt waits out the 10 s timeout), against a receiver that answers at once.
(c) `?wait=`: callbacks a second through the Procfile's gunicorn command, with 32 clients
    holding `GET /api/tasks/<id>?wait=60` against none; alternating, median of three.
(d) Receivers that trickle (issue 23): 8 tasks' own notify_url point at receivers that send one
    header line every 2 s and never finish; 200 more events go to the operator's target
    (TRACKER_NOTIFY_URL). How long the operator's events take, against none trickling, and how
    long each trickled attempt lasted (the whole-attempt limit is 10 s).

Results are printed and written to docs/benchmarks.md under "## Webhooks".
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import func, select

from bench import machine
from bench.report import replace_section

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET = "whsec_" + base64.b64encode(b"bench-notify-secret-0123456789abc").decode()
FANOUT = 1_000
THREADS = 8
PORT_RECEIVER, PORT_WEB = 9510, 9520


# -- the receiver (its own process) -----------------------------------------------------------


def _receiver(port: int, mode: str) -> None:
    from standardwebhooks.webhooks import Webhook

    hook = Webhook(SECRET)
    counts = {"verified": 0, "bad": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if mode == "hang":
                time.sleep(3600)
            try:
                hook.verify(raw, dict(self.headers.items()))
                key = "verified"
            except Exception:
                key = "bad"
            with lock:
                counts[key] += 1
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            body = json.dumps(counts).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def start_receiver(port: int, mode: str = "ok") -> multiprocessing.Process:
    proc = multiprocessing.Process(target=_receiver, args=(port, mode), daemon=True)
    proc.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except requests.RequestException:
            time.sleep(0.05)
    raise RuntimeError("the receiver did not start")


def counts(port: int) -> dict[str, int]:
    answer: dict[str, int] = requests.get(f"http://127.0.0.1:{port}/", timeout=5).json()
    return answer


# -- (a) fan-out -------------------------------------------------------------------------------


def _database(folder: Path) -> Any:
    from tracker.db import Database
    from tracker.dbschema import upgrade

    url = f"sqlite:///{folder / 'tracker.db'}"
    upgrade(url)
    return Database(url)


def fanout_tracker(folder: Path, url: str) -> float:
    """Seconds from the commit that completes 1,000 tasks to the last delivery's success."""
    from tracker.flows.notify import Sender
    from tracker.settings import Settings
    from tracker.tasks import store, webhooks
    from tracker.tasks.models import Delivery, Task
    from tracker.tasks.store import NewTask

    db = _database(folder)
    settings = Settings(database_url=db.url, notify_url=url, notify_secrets=(SECRET,))
    webhooks.configure(None)  # no events while the tasks are made
    ids = [store.create(db, NewTask(kind="generate", user_prompt="b")).id for _ in range(FANOUT)]
    webhooks.configure(settings)
    sender = Sender(settings, db, "bench-sender", threads=THREADS)
    with db.write() as session:
        for task in session.scalars(select(Task).where(Task.id.in_(ids))):
            task.video_url = "https://cdn.example/v.mp4"
            store.set_state(session, task, "completed")
    started = time.monotonic()
    thread = threading.Thread(target=sender.run_forever)
    thread.start()
    while True:
        with db.read() as session:
            done = session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.state == "succeeded")
            )
        if done >= FANOUT:
            break
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    sender.stopping.set()
    thread.join()
    sender.close()
    webhooks.configure(None)
    db.dispose()
    return elapsed


def fanout_floor(url: str) -> float:
    """The same 1,000 signed POSTs from the same number of threads, no database."""
    from tracker import signing

    local = threading.local()
    body = json.dumps(
        {
            "type": "task.completed",
            "timestamp": "x",
            "data": {"id": 1}
            | {
                k: None
                for k in ("upstream_id", "video_url", "media_url", "failure_reason", "progress")
            },
        }
    )

    def post(n: int) -> int:
        session = getattr(local, "s", None) or requests.Session()
        local.s = session
        headers = signing.headers((SECRET,), f"msg_{n}", body, time.time())
        return session.post(url, data=body.encode(), headers=headers, timeout=10).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        statuses = list(pool.map(post, range(FANOUT)))
    assert all(s == 204 for s in statuses)
    return time.monotonic() - started


def bench_fanout() -> list[str]:
    receiver = start_receiver(PORT_RECEIVER)
    url = f"http://127.0.0.1:{PORT_RECEIVER}/hook"
    floor, tracker = [], []
    try:
        for run in range(3):
            floor.append(fanout_floor(url))
            with tempfile.TemporaryDirectory() as folder:
                tracker.append(fanout_tracker(Path(folder), url))
            print(f"  run {run + 1}: floor {floor[-1]:.2f} s, tracker {tracker[-1]:.2f} s")
        got = counts(PORT_RECEIVER)
    finally:
        receiver.kill()
    f, t = statistics.median(floor), statistics.median(tracker)
    return [
        f"(a) {FANOUT} tasks completing in one transaction, {THREADS} sender threads, the",
        "receiver in its own process verifying each signature; median of three alternating runs:",
        "",
        "| sender | time | deliveries/s | of the floor |",
        "|---|---|---|---|",
        f"| bare sender (signing, no database) | {f:.2f} s | {FANOUT / f:.0f} | 1.00 |",
        f"| tracker worker (claim, lease, send, record) | {t:.2f} s | {FANOUT / t:.0f} | "
        f"{f / t:.2f} |",
        "",
        f"The receiver verified {got['verified']} signatures and refused {got['bad']}.",
    ]


# -- (b) a receiver that hangs -------------------------------------------------------------------


def _follow(url: str, hang_port: int | None) -> float:
    """Seconds until 20 tasks are completed and archived by a `tracker worker`."""
    from lumasim.simulator import Simulator
    from tracker.tasks import store
    from tracker.tasks.models import Task
    from tracker.tasks.store import NewTask

    sim = Simulator(processing_after=0.2, complete_after=0.5, callbacks=False).start()
    with tempfile.TemporaryDirectory() as folder:
        db = _database(Path(folder))
        ids = [
            store.create(db, NewTask(kind="generate", user_prompt="a hanging receiver")).id
            for _ in range(20)
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "LUMA_"))}
        env.update(
            DATABASE_URL=db.url,
            LUMA_API_BASE=sim.url or "",
            LUMA_API_KEY="sk-bench-key",
            TRACKER_MEDIA_DIR=str(Path(folder) / "media"),
            TRACKER_MEDIA_ALLOW_PRIVATE="1",
            TRACKER_POLL_AFTER="0.2",
            TRACKER_WORKER_INTERVAL="0.05",
            TRACKER_MAX_IN_FLIGHT="20",
            TRACKER_SUBMITS_PER_MINUTE="100",
            TRACKER_NOTIFY_URL=url,
            TRACKER_NOTIFY_SECRET=SECRET,
        )
        started = time.monotonic()
        proc = subprocess.Popen(
            [str(BIN / "tracker"), "worker"], env=env, stderr=subprocess.DEVNULL
        )
        try:
            while True:
                with db.read() as session:
                    archived = session.scalar(
                        select(func.count())
                        .select_from(Task)
                        .where(Task.id.in_(ids), Task.media_path.is_not(None))
                    )
                if archived == len(ids):
                    break
                if time.monotonic() - started > 300:
                    raise RuntimeError("not archived within 300 s")
                time.sleep(0.05)
            return time.monotonic() - started
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            db.dispose()
            sim.stop()


def bench_hanging() -> list[str]:
    fast = start_receiver(PORT_RECEIVER + 1)
    hang = start_receiver(PORT_RECEIVER + 2, "hang")
    times: dict[str, list[float]] = {"fast": [], "hang": []}
    try:
        for _ in range(3):
            times["fast"].append(_follow(f"http://127.0.0.1:{PORT_RECEIVER + 1}/h", None))
            times["hang"].append(_follow(f"http://127.0.0.1:{PORT_RECEIVER + 2}/h", PORT_RECEIVER))
            print(f"  fast {times['fast'][-1]:.2f} s, hanging {times['hang'][-1]:.2f} s")
    finally:
        fast.kill()
        hang.kill()
    f, h = statistics.median(times["fast"]), statistics.median(times["hang"])
    return [
        "(b) 20 tasks sent, polled to completed and archived by one `tracker worker` (the",
        "simulator, no upstream callbacks), every event (80) sent to a receiver; median of three",
        "alternating runs:",
        "",
        "| receiver | all 20 archived after |",
        "|---|---|",
        f"| answers at once | {f:.2f} s |",
        f"| never answers (each attempt waits out the 10 s timeout) | {h:.2f} s |",
    ]


# -- (d) receivers that trickle -------------------------------------------------------------------

TRICKLERS, OPERATOR_EVENTS = 8, 200


def _trickler(ports: Any, count: int) -> None:
    """`count` raw servers on 127.0.0.1: a status line, then a header line every 2 s, for 60 s."""
    import socket

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                for n in range(30):
                    time.sleep(2)
                    conn.sendall(b"X-Slow-%d: still here\r\n" % n)
            except OSError:
                return  # the sender hung up

    def accept(server: socket.socket) -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    servers = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    for server in servers:
        threading.Thread(target=accept, args=(server,), daemon=True).start()
    ports.put([server.getsockname()[1] for server in servers])
    threading.Event().wait()


def _trickled_run(
    folder: Path, url: str, slow_urls: list[str]
) -> tuple[float, float, list[int], int]:
    """Seconds until the operator's events all succeeded, and until every trickled delivery had
    an attempt recorded; each trickled attempt's milliseconds; how many were timeouts."""
    from tracker.flows.notify import Sender
    from tracker.settings import Settings
    from tracker.tasks import store, webhooks
    from tracker.tasks.models import Delivery, Task
    from tracker.tasks.store import NewTask

    db = _database(folder)
    settings = Settings(
        database_url=db.url,
        notify_url=url,
        notify_secrets=(SECRET,),
        notify_allow_private=True,
        notify_retry_schedule=(600.0,),
    )
    webhooks.configure(None)
    slow = [
        store.create(db, NewTask(kind="generate", user_prompt="d", notify_url=u)).id
        for u in slow_urls
    ]
    rest = [store.create(db, NewTask(kind="generate", user_prompt="d")).id for _ in range(200)]
    webhooks.configure(settings)
    sender = Sender(settings, db, "bench-sender", threads=THREADS)
    with db.write() as session:  # the trickled events first: they are claimed first
        for task_id in [*slow, *rest[: OPERATOR_EVENTS - len(slow)]]:
            task = session.get(Task, task_id)
            assert task is not None
            store.set_state(session, task, "completed")
    started = time.monotonic()
    thread = threading.Thread(target=sender.run_forever)
    thread.start()
    operator, ended = 0.0, 0.0
    while time.monotonic() - started < 120:
        with db.read() as session:
            rows = session.execute(select(Delivery.target_kind, Delivery.state, Delivery.attempts))
            done = [(kind, state, attempts) for kind, state, attempts in rows]
        if not operator and all(s == "succeeded" for k, s, _a in done if k == "global"):
            operator = time.monotonic() - started
        if all(a for k, _s, a in done if k == "task"):
            ended = time.monotonic() - started
            if operator:
                break
        time.sleep(0.05)
    sender.stopping.set()
    thread.join()
    sender.close()
    webhooks.configure(None)
    db.dispose()
    if not operator or not ended:
        raise RuntimeError("the events were not all sent within 120 s")
    timeouts = sum("no answer within" in a[0]["response"] for k, _s, a in done if k == "task")
    return operator, ended, [a[0]["latency_ms"] for k, _s, a in done if k == "task"], timeouts


def bench_trickle() -> list[str]:
    receiver = start_receiver(PORT_RECEIVER + 3)
    url = f"http://127.0.0.1:{PORT_RECEIVER + 3}/hook"
    ports: Any = multiprocessing.Queue()
    trickler = multiprocessing.Process(target=_trickler, args=(ports, TRICKLERS), daemon=True)
    trickler.start()
    slow_urls = [f"http://127.0.0.1:{port}/hook" for port in ports.get(timeout=30)]
    try:
        with tempfile.TemporaryDirectory() as folder:
            calm, _, _, _ = _trickled_run(Path(folder), url, [])
        with tempfile.TemporaryDirectory() as folder:
            busy, ended, attempts, timeouts = _trickled_run(Path(folder), url, slow_urls)
    finally:
        receiver.kill()
        trickler.kill()
    print(f"  none trickling {calm:.2f} s, {TRICKLERS} trickling {busy:.2f} s")
    return [
        f"(d) {OPERATOR_EVENTS} events to the operator's target (TRACKER_NOTIFY_URL); in the",
        f"second run {TRICKLERS} of them also go to tasks' own receivers (all on 127.0.0.1) that",
        "send a header line every 2 s and never finish; one run each:",
        "",
        "| tasks' receivers | the operator's events all sent after |",
        "|---|---|",
        f"| none trickling | {calm:.2f} s |",
        f"| {TRICKLERS} trickling | {busy:.2f} s |",
        "",
        f"Each trickled attempt lasted {min(attempts) / 1000:.1f} to {max(attempts) / 1000:.1f} s;",
        f"{timeouts} of {TRICKLERS} were recorded as timeouts (no answer within 10 s), all",
        f"{TRICKLERS} after {ended:.1f} s (one host has at most 4 attempts at once: the second",
        "four begin as the first four end).",
    ]


# -- (c) ?wait= against callbacks ----------------------------------------------------------------


def _callbacks_per_second(base: str, hooks: list[tuple[str, str]], seconds: float) -> float:
    stop = time.monotonic() + seconds
    done = [0]
    lock = threading.Lock()

    def client(n: int) -> None:
        session = requests.Session()
        i = n
        while time.monotonic() < stop:
            token, upstream_id = hooks[i % len(hooks)]
            body = {"id": upstream_id, "state": "processing", "progress": i % 100}
            session.post(f"{base}/callbacks/luma/{token}", json=body, timeout=10)
            with lock:
                done[0] += 1
            i += 7

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0] / seconds


def bench_wait() -> list[str]:
    from tracker.settings import Settings
    from tracker.tasks import claims, store
    from tracker.tasks.models import Task
    from tracker.tasks.store import NewTask
    from tracker.upstream.accounts import from_settings

    with tempfile.TemporaryDirectory() as folder:
        db = _database(Path(folder))
        settings = Settings(database_url=db.url, max_in_flight=1000, submits_per_minute=1000)
        for _ in range(100):
            store.create(db, NewTask(kind="generate", user_prompt="c"))
        claimed = claims.claim_for_dispatch(
            db, settings, limit=100, account=from_settings(settings)
        )
        hooks = []
        with db.write() as session:
            for task_id, token in claimed:
                task = session.get(Task, task_id)
                if task is None:
                    raise LookupError(task_id)
                task.upstream_id = f"up-{task_id}"
                store.set_state(session, task, "pending")
                hooks.append((token, f"up-{task_id}"))
        waited = claimed[0][0]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "LUMA_"))}
        env.update(DATABASE_URL=db.url, PORT=str(PORT_WEB), LUMA_API_KEY="sk-bench")
        web = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "wsgi:app",
                "-c",
                "gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{PORT_WEB}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{PORT_WEB}"
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    requests.get(f"{base}/healthz", timeout=1)
                    break
                except requests.RequestException:
                    time.sleep(0.1)
            results: dict[str, list[float]] = {"none": [], "32": []}
            for _ in range(3):
                results["none"].append(_callbacks_per_second(base, hooks, 5))
                stop_waiting = threading.Event()

                def waiter(stop_waiting: threading.Event = stop_waiting) -> None:
                    while not stop_waiting.is_set():
                        try:
                            answer = requests.get(f"{base}/api/tasks/{waited}?wait=60", timeout=70)
                        except requests.RequestException:
                            return  # the server stopped under a waiter still asleep in it
                        if answer.headers.get("X-Tracker-Wait") == "skipped":
                            time.sleep(1.0)  # past the cap: a polite client asks again later

                waiters = [threading.Thread(target=waiter, daemon=True) for _ in range(32)]
                for thread in waiters:
                    thread.start()
                time.sleep(1)
                results["32"].append(_callbacks_per_second(base, hooks, 5))
                stop_waiting.set()
                print(f"  none {results['none'][-1]:.0f}/s, 32 waiting {results['32'][-1]:.0f}/s")
                time.sleep(0.5)
        finally:
            # gunicorn's quick shutdown: its graceful one (SIGTERM) would wait out the waiters'
            # requests still asleep in ?wait=60
            web.send_signal(signal.SIGINT)
            try:
                web.wait(timeout=30)
            except subprocess.TimeoutExpired:
                web.kill()
                web.wait()
            db.dispose()
    none, busy = statistics.median(results["none"]), statistics.median(results["32"])
    return [
        "(c) callbacks over 100 tasks from 16 client threads, 5 s a run, under the Procfile's",
        "gunicorn command (gunicorn.conf.py), SQLite; median of three alternating runs:",
        "",
        "| clients holding `?wait=60` | callbacks/s |",
        "|---|---|",
        f"| none | {none:.0f} |",
        f"| 32 | {busy:.0f} ({busy / none:.2f} of none) |",
        "",
        "The clients are Python threads in one process on the same 2 cores, so the rate is the",
        "clients' as much as the server's (`python -m bench ingest` measures the route itself);",
        "what matters here is that 32 sleeping waiters take nothing from callbacks.",
    ]


def main(argv: list[str] | None = None) -> int:
    every = {"fanout", "hanging", "wait", "trickle"}
    parts = set(argv or []) or every
    lines = [
        "## Webhooks",
        "",
        f"`python -m bench webhooks`, {datetime.now(UTC):%Y-%m-%d}; {machine()}.",
        "The machine is shared: compare figures within one run only.",
        "",
    ]
    runs = (
        ("fanout", bench_fanout),
        ("hanging", bench_hanging),
        ("wait", bench_wait),
        ("trickle", bench_trickle),
    )
    for name, run in runs:
        if name in parts:
            print(f"- {name}", flush=True)
            lines += [*run(), ""]
    print("\n".join(lines))
    if parts == every:
        replace_section("## Webhooks", "\n".join(lines))
    return 0
