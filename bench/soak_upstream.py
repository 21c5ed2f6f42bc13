"""The soak's busy upstream, run as its own process: `python -m bench.soak_upstream`.

The simulator (the proxy's dialect, or Luma's with --flavor luma; a distinct video per task)
with the habits of a busy day: videos done in 2-10 s, callbacks lost for a share of the tasks
(never sent at all), a share of the queries failing, 429 bursts with `Retry-After` on
creates, and windows in which it answers 503 to everything. It writes its own log (JSON
lines): every create it took with the prompt that asked for it, and every callback it sent
(or lost) with the answer it got. The soak's report counts from that log, not from the
tracker's word.

Its own process, not a thread of the benchmark: the soak's submitter and receiver would
otherwise share its interpreter lock, and the upstream's latency would be theirs.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from lumasim.simulator import Simulator
from lumasim.tasks import RequestRecord, SimTask

Answer = Callable[..., Iterable[bytes]]


class JsonLog:
    """Lines of JSON appended by many threads; each flushed, so a kill loses none written."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, **fields: Any) -> None:
        line = json.dumps({"t": time.time(), **fields}, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every whole line of a JsonLog (a line cut by a kill is skipped)."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


class BusyUpstream(Simulator):
    """The simulator with durations drawn per task and callbacks lost for a share of tasks."""

    def __init__(
        self, *, key: str, log: JsonLog, lost_share: float, rng: random.Random, **kwargs: Any
    ) -> None:
        super().__init__(api_key=key, distinct_media=True, **kwargs)
        self._log, self._rng, self._lost_share = log, rng, lost_share
        self._lost: set[str] = set()
        self._rng_lock = threading.Lock()
        send = self._callbacks.post

        def post(task: SimTask, body: dict[str, Any]) -> int:
            if task.id in self._lost:  # lost on the way: the tracker never hears of it
                self._log.write(ev="lost", id=task.id, state=body.get("state"))
                return 200
            status = send(task, body)
            self._log.write(ev="callback", id=task.id, status=status, body=body)
            return status

        self._callbacks.post = post  # type: ignore[method-assign]

    def _durations(self) -> tuple[float, float]:
        with self._rng_lock:
            done = self._rng.uniform(2.0, 10.0)
            return done * self._rng.uniform(0.2, 0.5), done

    def _new_task(
        self,
        body: dict[str, Any],
        prompt: str,
        hook: str | None,
        source: SimTask | None,
        record: RequestRecord,
        output: str = "mp4",
    ) -> SimTask:
        # decided before the task exists, so its first callback (due in 0.4 s at the
        # earliest) cannot go out before the decision: the pre-drawn id keeps the order
        with self._rng_lock:
            lost = self._rng.random() < self._lost_share
        task = super()._new_task(body, prompt, hook, source, record, output)
        if lost:
            self._lost.add(task.id)
        done_in = task.done_at - task.created_mono
        self._log.write(
            ev="create", id=task.id, prompt=prompt, lost=lost, done=time.time() + done_in
        )
        return task


class Chaos:
    """WSGI middleware: outage windows (503 to everything), failing queries, 429 bursts."""

    def __init__(
        self,
        app: Answer,
        *,
        rng: random.Random,
        log: JsonLog,
        outages: list[tuple[float, float]],
        query_fail: float,
        burst_every: float,
        burst_for: float,
    ) -> None:
        self.app, self.rng, self.log, self.outages = app, rng, log, outages
        self.query_fail, self.burst_every, self.burst_for = query_fail, burst_every, burst_for
        self.started = time.time()
        self.lock = threading.Lock()

    def _fault(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        now = time.time()
        if any(start <= now < end for start, end in self.outages):
            return "503 Service Unavailable", {"Retry-After": "5"}
        # both dialects: every POST makes a generation but the proxy's batch query
        create = method == "POST" and path != "/luma/tasks"
        if create and self.burst_every and (now - self.started) % self.burst_every < self.burst_for:
            return "429 Too Many Requests", {"Retry-After": "2"}
        query = (method == "GET" and "/generations" in path) or (
            method == "POST" and path == "/luma/tasks"
        )
        with self.lock:
            failing = query and self.rng.random() < self.query_fail
        return ("500 Internal Server Error", {}) if failing else None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        fault = self._fault(environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""))
        if fault is None:
            return self.app(environ, start_response)
        status, headers = fault
        self.log.write(ev="fault", status=int(status[:3]), path=environ.get("PATH_INFO", ""))
        body = json.dumps({"detail": status[4:]}).encode()
        start_response(status, [("Content-Type", "application/json"), *headers.items()])
        return [body]


def _window(text: str) -> tuple[float, float]:
    start, _, seconds = text.partition("+")
    return float(start), float(start) + float(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_upstream")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lost", type=float, default=0.2, help="share of tasks whose callbacks")
    parser.add_argument("--query-fail", type=float, default=0.05)
    parser.add_argument("--burst-every", type=float, default=30.0, help="seconds; 0: no bursts")
    parser.add_argument("--burst-for", type=float, default=3.0)
    parser.add_argument("--outage", action="append", default=[], help="EPOCH+SECONDS of 503s")
    parser.add_argument("--flavor", choices=("proxy", "luma"), default="proxy")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    log = JsonLog(args.log)
    upstream = BusyUpstream(
        key=args.key,
        log=log,
        lost_share=args.lost,
        rng=random.Random(args.seed),
        flavor=args.flavor,
    )
    app = Chaos(
        upstream,
        rng=random.Random(args.seed + 1),
        log=log,
        outages=[_window(text) for text in args.outage],
        query_fail=args.query_fail,
        burst_every=args.burst_every,
        burst_for=args.burst_for,
    )
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    upstream.url = f"http://127.0.0.1:{args.port}"  # the links it hands out name this server
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"ready {upstream.url}", flush=True)
    server.serve_forever(poll_interval=0.1)
    upstream.stop()
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
