"""The pool of upstream accounts (issue 21) kept busy: `python -m bench accounts` (never run
by pytest).

400 new generations go to 4 accounts of 10 slots each on the simulator (one upstream
account per key; each video 3 s, 1 s to processing), every account at
LUMA_ACCOUNT_<NAME>_SUBMITS_PER_MINUTE=1000 so that only the slots limit. A process of its
own (`Submitter`, as a web process would be) submits them one after the other with
`flows.submit.submit` (what POST /api/tasks calls after parsing: stored, then sent at once
while a slot is free), so the web's own cost is not in the figures, and the submits do not
share this process (the simulator's) with its interpreter lock. A real `tracker worker`
process sends the rest, the simulator calls back, and a real web process (the Procfile's
gunicorn, bound to 127.0.0.1) takes the callbacks: PUBLIC_BASE_URL points at it. Every other
setting is the tracker's default (TRACKER_WORKER_INTERVAL 1 s, TRACKER_POLL_AFTER 60 s:
callbacks, not polls), unless `--interval` says. SQLite in a temporary folder a run.

Every 0.2 s while tasks wait (queued > 0 in the database), busy = the generations the
simulator has in flight over every key (the upstream's truth) ÷ the pool's slots; the mean
is the figure (goal ≥ 0.9). The floor, in the same run: the same tasks a slot (400 ÷ 4 =
100) on ONE account of 10 slots. Also: wall time from the first submit to the last task
completed, throughput, creates per key against the tasks each account completed, and how
long a freed slot stays empty (the upstream finishing → the tracker knowing → the next
create on that key), busy while the submits go on and after them, and the worker's CPU.

`--quick`: 80 tasks on 2 accounts of 5 (floor: 40 on one of 5), printed, not written.
Otherwise the figures go to docs/benchmarks.md under "## Upstream accounts", newest run
first.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench import machine
from bench.report import add_run
from bench.serve import Web

ROOT = Path(__file__).resolve().parent.parent
TRACKER = str(Path(sys.executable).parent / "tracker")
HEADING = "## Upstream accounts"

PROCESSING_AFTER = 1.0  # the simulator's seconds to "processing"
COMPLETE_AFTER = 3.0  # and to "completed": each video takes 3 s upstream
SUBMITS_PER_MINUTE = 1000
SAMPLE_EVERY = 0.2
PASS_GAP = 0.5  # creates closer than this were sent back to back (one pass, or submits)
GOAL = 0.9
NAMES = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class Shape:
    """One run's pool: `accounts` accounts of `slots` slots, `tasks` new generations."""

    accounts: int
    slots: int
    tasks: int

    @property
    def cap(self) -> int:
        return self.accounts * self.slots

    @property
    def ideal_per_minute(self) -> float:
        return self.cap * 60 / COMPLETE_AFTER


@dataclass
class Result:
    shape: Shape
    samples: list[float] = field(default_factory=list)  # busy, upstream's count
    after_submits: list[bool] = field(default_factory=list)  # each sample: the submits done
    db_samples: list[float] = field(default_factory=list)  # busy, the tracker's own count
    wall: float = 0.0
    submit_seconds: float = 0.0
    worker_cpu: float = 0.0  # the worker process's CPU seconds (user + system)
    load: tuple[float, float] = (0.0, 0.0)  # the machine's 1-minute load average, start and end
    completed: int = 0
    states: dict[str, int] = field(default_factory=dict)
    creates_by_account: dict[str, int] = field(default_factory=dict)
    completed_by_account: dict[str, int] = field(default_factory=dict)
    sim_creates: int = 0
    distinct_ids: int = 0
    owners_match: bool = False
    idle: list[float] = field(default_factory=list)  # a freed slot, until its next create
    know: list[float] = field(default_factory=list)  # upstream done → tracker knows
    pace: list[float] = field(default_factory=list)  # between creates sent back to back
    problems: list[str] = field(default_factory=list)

    @property
    def busy(self) -> float:
        return statistics.fmean(self.samples) if self.samples else 0.0

    def busy_when(self, after: bool) -> tuple[float, int]:
        """Mean busy and samples while the submits went on (False) or after them (True)."""
        chosen = [b for b, a in zip(self.samples, self.after_submits, strict=True) if a is after]
        return (statistics.fmean(chosen) if chosen else float("nan")), len(chosen)

    @property
    def db_busy(self) -> float:
        return statistics.fmean(self.db_samples) if self.db_samples else 0.0

    @property
    def per_minute(self) -> float:
        return self.shape.tasks * 60 / self.wall if self.wall else 0.0

    @property
    def all_completed(self) -> bool:
        return self.completed == self.shape.tasks

    @property
    def creates_match(self) -> bool:
        """One create per task, each on the key of the account that completed it."""
        return (
            self.creates_by_account == self.completed_by_account
            and self.sim_creates == self.distinct_ids == self.shape.tasks
            and self.owners_match
        )


def cpu_seconds(pid: int) -> float:
    """A live process's CPU time so far (user + system)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def key_of(name: str) -> str:
    return f"bench-key-{name}-0123456789"


def pct(values: list[float], q: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class Submitter:
    """The submits, in a process of their own (as the web's would be): `flows.submit.submit`
    for each task, one after the other, once told to go; the seconds they took."""

    def __init__(self, env: dict[str, str], instance: Path, tasks: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_accounts", "--submit", str(tasks), str(instance)],
            cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        if self.stdout.readline().strip() != "ready":
            raise RuntimeError("the submitting process did not start")

    def go(self) -> None:
        self.stdin.write("go\n")
        self.stdin.flush()

    def wait(self) -> float:
        line = self.stdout.readline().strip()
        if self.proc.wait(timeout=600) != 0 or not line:
            raise RuntimeError(f"the submitting process failed ({self.proc.returncode})")
        return float(line)


def submit_all(tasks: int, instance: Path) -> None:
    """The submitting process: settings from the environment, then `tasks` submits."""
    from tracker import settings as settings_module
    from tracker.db import Database
    from tracker.flows import submit
    from tracker.flows.services import make_client, start
    from tracker.tasks.store import NewTask

    settings = start(settings_module.load(instance=instance))
    db = Database(settings.database_url)
    client = make_client(settings)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    for n in range(tasks):
        submit.submit(db, settings, client, NewTask(kind="generate", user_prompt=f"bench {n}"))
    print(f"{time.monotonic() - started:.3f}", flush=True)
    client.close()
    db.dispose()


def run(label: str, shape: Shape, workdir: Path, interval: float | None) -> Result:
    """One pool against its own simulator, database, web and worker processes."""
    from lumasim.simulator import Simulator
    from tracker.db import Database
    from tracker.dbschema import upgrade
    from tracker.tasks.models import Task, WorkerBeat
    from tracker.tasks.states import IN_FLIGHT_STATES, TaskState

    instance = workdir / label
    instance.mkdir()
    names = [f"acct{NAMES[i]}" for i in range(shape.accounts)]
    keys = {name: key_of(name) for name in names}
    sim = Simulator(
        api_keys=list(keys.values()),
        processing_after=PROCESSING_AFTER,
        complete_after=COMPLETE_AFTER,
        callbacks=True,
    ).start()
    url = f"sqlite:///{instance / 'tracker.db'}"
    upgrade(url)
    port = free_port()
    env = {
        "DATABASE_URL": url,
        "LUMA_API_BASE": sim.url or "",
        "LUMA_API_KEY": "",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TRACKER_MEDIA_DIR": "",
        "PROMETHEUS_MULTIPROC_DIR": str(instance / "metrics"),
    }
    for name in names:
        prefix = f"LUMA_ACCOUNT_{name.upper()}_"
        env[prefix + "KEY"] = keys[name]
        env[prefix + "MAX_IN_FLIGHT"] = str(shape.slots)
        env[prefix + "SUBMITS_PER_MINUTE"] = str(SUBMITS_PER_MINUTE)
    if interval is not None:
        env["TRACKER_WORKER_INTERVAL"] = str(interval)
    (instance / "metrics").mkdir()
    result = Result(shape, load=(os.getloadavg()[0], 0.0))
    web = Web("wsgi:app", url, port, ["--bind", f"127.0.0.1:{port}"], env)
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "LUMA_"))}
    worker_env.update(env)
    worker_log = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    worker = subprocess.Popen(
        [TRACKER, "worker"], cwd=instance, env=worker_env, stdout=worker_log, stderr=worker_log
    )
    db = Database(url)
    submitter: Submitter | None = None
    try:
        deadline = time.monotonic() + 30
        while True:  # the worker has registered its heartbeat: it is passing
            with db.read() as session:
                if session.scalar(select(func.count()).select_from(WorkerBeat)):
                    break
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tracker worker did not start")
            time.sleep(0.1)

        stop_sampling, submitted = threading.Event(), threading.Event()

        def sample() -> None:
            cap = shape.cap
            while not stop_sampling.wait(SAMPLE_EVERY):
                with db.read() as session:
                    queued = session.scalar(
                        select(func.count()).select_from(Task).where(Task.state == TaskState.QUEUED)
                    )
                    tracked = session.scalar(
                        select(func.count())
                        .select_from(Task)
                        .where(Task.state.in_(IN_FLIGHT_STATES))
                    )
                upstream = sum(sim.in_flight(key) for key in keys.values())
                if queued:
                    result.samples.append(upstream / cap)
                    result.db_samples.append((tracked or 0) / cap)
                    result.after_submits.append(submitted.is_set())

        sampler = threading.Thread(target=sample, name="sampler", daemon=True)
        submitter = Submitter(worker_env, instance, shape.tasks)
        started = time.monotonic()
        submitter.go()
        sampler.start()
        result.submit_seconds = submitter.wait()
        submitted.set()
        rounds = shape.tasks / shape.cap
        deadline = time.monotonic() + rounds * COMPLETE_AFTER * 4 + 60
        final = ("completed", "failed", "rejected", "timed_out")
        while time.monotonic() < deadline:
            with db.read() as session:
                done = session.scalar(
                    select(func.count()).select_from(Task).where(Task.state.in_(final))
                )
            if done == shape.tasks:
                break
            time.sleep(0.05)
        stop_sampling.set()
        sampler.join()
        with db.read() as session:
            rows = session.execute(
                select(Task.account, Task.state, Task.upstream_id, Task.completed_at)
            ).all()
        last = max((row.completed_at for row in rows if row.completed_at), default=None)
        offset = time.time() - time.monotonic()
        result.wall = (
            (last.timestamp() - offset - started)
            if last is not None
            else time.monotonic() - started
        )
        _tally(result, rows, sim, keys, offset)
    finally:
        if submitter is not None and submitter.proc.poll() is None:
            submitter.proc.kill()
            submitter.proc.wait()
        result.worker_cpu = cpu_seconds(worker.pid)
        result.load = (result.load[0], os.getloadavg()[0])
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        worker_log.seek(0)
        worker_text = worker_log.read().decode(errors="replace")
        worker_log.close()
        web_text = web.stop()
        db.dispose()
        sim.stop()
    for who, text in (("worker", worker_text), ("web", web_text)):
        if "Traceback" in text or " ERROR " in text:
            result.problems.append(f"the {who} logged a problem: {text[-1500:]}")
    return result


def _tally(result: Result, rows: Any, sim: Any, keys: dict[str, str], offset: float) -> None:
    """Counts, checks and the empty-slot times of a finished run."""
    by_key = {key: name for name, key in keys.items()}
    result.states = {}
    for row in rows:
        result.states[row.state] = result.states.get(row.state, 0) + 1
    result.completed = result.states.get("completed", 0)
    result.completed_by_account = {name: 0 for name in keys}
    for row in rows:
        if row.state == "completed":
            result.completed_by_account[row.account] += 1
    creates = sim.creates_by_key
    result.creates_by_account = {name: creates.get(key, 0) for name, key in keys.items()}
    result.sim_creates = sum(creates.values())
    ids = [row.upstream_id for row in rows if row.upstream_id]
    result.distinct_ids = len(set(ids))
    tasks = dict(sim.tasks)
    account_of = {row.upstream_id: row.account for row in rows if row.upstream_id}
    result.owners_match = len(tasks) == result.sim_creates and all(
        account_of.get(task_id) == by_key.get(task.owner) for task_id, task in tasks.items()
    )
    known = {  # the upstream id -> when the tracker knew it completed (monotonic)
        row.upstream_id: row.completed_at.timestamp() - offset
        for row in rows
        if row.completed_at is not None
    }
    every = sorted(task.created_mono for task in tasks.values())
    result.pace = [b - a for a, b in itertools.pairwise(every) if b - a < PASS_GAP]
    slots = result.shape.slots
    for key in keys.values():
        own = [task for task in tasks.values() if task.owner == key]
        creates_at = sorted(task.created_mono for task in own)
        finished = sorted(own, key=lambda task: task.done_at)
        # the i-th create beyond the first `slots` took the slot the (i - slots)-th finish freed
        for i in range(slots, len(creates_at)):
            freed = finished[i - slots]
            result.idle.append(creates_at[i] - freed.done_at)
            if freed.id in known:
                result.know.append(known[freed.id] - freed.done_at)


def report(started: datetime, pool: Result, floor: Result, interval: float | None) -> str:
    shape, one = pool.shape, floor.shape
    setting = f"TRACKER_WORKER_INTERVAL={interval:g}" if interval is not None else "defaults"
    loads = [value for r in (pool, floor) for value in r.load]
    lines = [
        HEADING,
        "",
        f"### {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"`python -m bench accounts` (issue 21), run {started:%Y-%m-%d %H:%M} UTC on "
        f"{machine()}. Other work shared the machine: its 1-minute load average went from "
        f"{min(loads):.1f} to {max(loads):.1f} during the run (2 CPUs). "
        f"{shape.tasks} new generations on {shape.accounts} accounts of {shape.slots} slots "
        f"against the simulator (one upstream account per key; each video {COMPLETE_AFTER:g} "
        f"s, {PROCESSING_AFTER:g} s to processing), every account at "
        f"LUMA_ACCOUNT_<NAME>_SUBMITS_PER_MINUTE={SUBMITS_PER_MINUTE}, so that only the slots "
        "limit. A process of its own submits them one after the other with "
        "`flows.submit.submit` (what POST /api/tasks calls: stored, then sent at once while a "
        "slot is free), as a web process would, without the web's own cost; a real `tracker "
        "worker` sends the rest; the simulator calls back to a real web process (the "
        "Procfile's gunicorn on 127.0.0.1; PUBLIC_BASE_URL points at it); SQLite in a "
        f"temporary folder. The worker's settings: {setting} (TRACKER_POLL_AFTER 60 s: the "
        "callbacks, not polls, tell the tracker). Busy is sampled every "
        f"{SAMPLE_EVERY:g} s while tasks wait (queued > 0): the generations the simulator has "
        "in flight over every key ÷ the slots (the upstream's truth; the tracker's own count, "
        "tasks submitting/pending/processing, beside it). The floor, in the same run: as many "
        f"tasks a slot ({one.tasks}) on ONE account of {one.slots} slots. Wall time: the "
        "first submit to the last task the tracker knows completed; the ideal is what the "
        f"slots allow ({COMPLETE_AFTER:g} s a video). Creates per key (the simulator's count) "
        "against the tasks each account completed (the database's). "
        f"Goal: mean busy ≥ {GOAL:g}.",
        "",
        "| run | slots | tasks | mean busy (upstream) | tracker's count | wall time | "
        "videos/min | of the ideal | all completed | creates = completed per key | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for name, r in (
        (f"pool: {shape.accounts} accounts of {shape.slots}", pool),
        (f"floor: 1 account of {one.slots}", floor),
    ):
        goal = ("met" if r.busy >= GOAL else "**missed**") if r is pool else ""
        lines.append(
            f"| {name} | {r.shape.cap} | {r.shape.tasks} | {r.busy:.3f} | {r.db_busy:.3f} | "
            f"{r.wall:.1f} s | {r.per_minute:.0f} | {r.per_minute / r.shape.ideal_per_minute:.0%}"
            f" | {_yes(r.all_completed, r)} | {_creates(r)} | {goal} |"
        )
    lines += [
        "",
        f"Against the floor: busy {pool.busy / floor.busy:.2f}x, throughput "
        f"{pool.per_minute / floor.per_minute:.2f}x (the slots allow "
        f"{shape.cap / one.cap:.0f}x).",
        "",
        "Where the time goes. An empty slot: from the upstream finishing a video to the next "
        "create on its key, of which the upstream finishing → the tracker knowing is the "
        "callback's part and the rest the worker's (its next pass, then its turn among the "
        "creates of that pass). Back to back: the time between two creates less than "
        f"{PASS_GAP:g} s apart (one pass's creates are sent one at a time). The worker's CPU: "
        "its process's user + system time over the run, a task.",
        "",
        "| run | busy while submitting (samples) | after the last submit (samples) | "
        "submitting took | empty slot p50 | p90 | mean | done → tracker knows, p50 | p90 | "
        "back to back, p50 | worker CPU a task |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("pool", pool), ("floor", floor)):
        cells = [f"{busy:.3f} ({n})" if n else "-" for busy, n in map(r.busy_when, (False, True))]
        lines.append(
            f"| {name} | {cells[0]} | {cells[1]} | {r.submit_seconds:.1f} s | "
            f"{pct(r.idle, 50):.2f} s | {pct(r.idle, 90):.2f} s | "
            f"{statistics.fmean(r.idle) if r.idle else 0:.2f} s | "
            f"{pct(r.know, 50) * 1000:.0f} ms | {pct(r.know, 90) * 1000:.0f} ms | "
            f"{pct(r.pace, 50) * 1000:.0f} ms | {r.worker_cpu / r.shape.tasks * 1000:.0f} ms |"
        )
    problems = [p for r in (pool, floor) for p in r.problems]
    if problems:
        lines += ["", "Problems: " + "; ".join(p.splitlines()[0] for p in problems)]
    return "\n".join(lines) + "\n"


def _yes(ok: bool, r: Result) -> str:
    return "yes" if ok else f"**no** ({r.states})"


def _creates(r: Result) -> str:
    shown = ", ".join(
        f"{name} {r.creates_by_account[name]}/{r.completed_by_account[name]}"
        for name in r.creates_by_account
    )
    return ("yes: " if r.creates_match else "**no**: ") + shown


def summary(label: str, r: Result) -> str:
    return (
        f"{label}: busy {r.busy:.3f} (tracker's count {r.db_busy:.3f}, {len(r.samples)} samples), "
        f"wall {r.wall:.1f} s, {r.per_minute:.0f} videos/min "
        f"({r.per_minute / r.shape.ideal_per_minute:.0%} of {r.shape.ideal_per_minute:.0f}), "
        f"submit {r.submit_seconds:.1f} s, busy while/after submitting "
        f"{r.busy_when(False)}/{r.busy_when(True)}, worker CPU {r.worker_cpu:.1f} s, "
        f"load {r.load}, states {r.states}, creates/completed "
        f"{r.creates_by_account}/{r.completed_by_account} match={r.creates_match}, "
        f"empty slot p50 {pct(r.idle, 50):.2f} s p90 {pct(r.idle, 90):.2f} s, "
        f"know p50 {pct(r.know, 50) * 1000:.0f} ms, create pace p50 {pct(r.pace, 50) * 1000:.0f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench accounts -- ")
    parser.add_argument("--quick", action="store_true", help="80 tasks, 2 accounts of 5")
    parser.add_argument("--interval", type=float, help="TRACKER_WORKER_INTERVAL (default: unset)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv or [])
    shape = Shape(2, 5, 80) if args.quick else Shape(4, 10, 400)
    floor_shape = Shape(1, shape.slots, shape.tasks // shape.accounts)
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-accounts-") as tmp:
        pool = run("pool", shape, Path(tmp), args.interval)
        print(summary("pool", pool), flush=True)
        floor = run("floor", floor_shape, Path(tmp), args.interval)
        print(summary("floor", floor), flush=True)
    body = report(started, pool, floor, args.interval)
    print(body)
    if not (args.quick or args.no_write):
        add_run(HEADING, body)
    ok = pool.all_completed and floor.all_completed and pool.creates_match and floor.creates_match
    return 0 if ok and not (pool.problems or floor.problems) else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--submit":
        submit_all(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(main(sys.argv[1:]))
