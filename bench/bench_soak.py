"""A production day in fifteen minutes (issue 23): the whole pipeline under load and faults.

    python -m bench soak                      # 5,000 tasks, figures into docs/benchmarks.md
    python -m bench soak -- --tasks 8000      # more
    python -m bench soak -- --quick           # a few hundred tasks in about a minute
    python -m bench soak -- --flavor luma     # Luma's own API (the issue pins the proxy's)

Two complete trackers (machine a and machine b: web and worker each, their own folders) share
one PostgreSQL that the soak starts itself (tests/support/private_postgres.py), one bucket of
moto's S3 server and one busy upstream (bench/soak_upstream.py: callbacks lost for 20 % of the
tasks, 5 % of queries failing, 429 bursts, videos done in 2-10 s); every webhook goes to a
receiver that verifies its signature (bench/soak_receiver.py). Tasks are submitted at a steady
rate, half to each machine, through a calm phase and then a chaos phase of the same length:

- `kill -9` of machine b's web (its gunicorn process group) or worker every 20 s, restarted at once;
- one PostgreSQL restart;
- the receiver down for 60 s, then answering 500 to 10 % of deliveries;
- the upstream answering 503 to everything for 30 s;

then up to 5 minutes of drain. Machine a is never killed: its web and worker are the processes
whose memory is measured. What the report says is counted by bench/soak_report.py from the
database, the bucket and the upstream's and the receiver's own logs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import random
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import boto3
import requests
from botocore.config import Config
from sqlalchemy import create_engine, text

from bench import machine as machine_line
from bench import soak_report
from bench.report import add_run
from bench.soak_procs import BIN, ROOT, Child, Machine, free_port, wait_port
from bench.soak_report import Report, Submitted, Window
from bench.soak_upstream import read_log
from tests.support.private_postgres import PrivatePostgres
from tracker.dbschema import upgrade

KEY = "sk-soak-upstream-key-0123456789abcdef"
AWS = {
    "AWS_ACCESS_KEY_ID": "AKIASOAKTRACKER000001",
    "AWS_SECRET_ACCESS_KEY": "soak-secret-access-key-0123456789",
    "AWS_DEFAULT_REGION": "us-east-1",
}
DELIVERY_LEASE = 30.0  # tracker/tasks/deliveries.py: a killed worker's deliveries wait this long


@dataclass(frozen=True)
class Plan:
    """The run's parameters; the report prints them beside its figures."""

    tasks: int = 5000
    # submits a second, in both phases: 60 in flight over 2-10 s videos, a fifth of them found
    # by a query TRACKER_POLL_AFTER later, is about 7 a second at most
    rate: float = 6.0
    kill_every: float = 20.0
    receiver_down: float = 60.0
    outage: float = 30.0
    drain: float = 300.0
    poll_after: float = 10.0  # TRACKER_POLL_AFTER: lost callbacks are found by queries
    burst_every: float = 30.0
    burst_for: float = 3.0
    query_fail: float = 0.05  # share of the upstream's query answers that are 500s
    flavor: str = "proxy"  # the upstream's dialect (the issue pins the proxy's)
    seed: int = 23

    @property
    def phase(self) -> float:
        return self.tasks / 2 / self.rate


QUICK = Plan(
    tasks=300,
    rate=6.0,
    kill_every=6.0,
    receiver_down=8.0,
    outage=5.0,
    drain=150.0,
    poll_after=5.0,
    burst_every=10.0,
    burst_for=1.5,
    query_fail=0.25,  # a short run makes few queries: enough of them fail to count
)


class Traffic:
    """What the soak's own clients saw from the trackers: 5xx, 503s, connections reset."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.server_errors: list[str] = []
        self.answers_503 = 0
        self.resets = 0

    def saw(self, what: str, answer: requests.Response | None) -> None:
        with self.lock:
            if answer is None:
                self.resets += 1
            elif answer.status_code == 503 and answer.headers.get("Retry-After"):
                self.answers_503 += 1
            elif answer.status_code >= 500:
                self.server_errors.append(f"{what}: {answer.status_code} {answer.text[:120]!r}")


class Soak:
    def __init__(self, plan: Plan, folder: Path) -> None:
        self.plan, self.folder = plan, folder
        self.rng = random.Random(plan.seed)
        self.traffic = Traffic()
        self.submitted: list[Submitted] = []
        self.windows: list[Window] = []
        self.phases: dict[str, tuple[float, float]] = {}
        self.memory: dict[str, list[int]] = {}
        self.chaos_done: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self.postgres = PrivatePostgres(settings={"max_connections": "200"})
        self.children: list[Child] = []

    # -- set-up -----------------------------------------------------------------------------

    def start(self) -> None:
        self.postgres.start()
        url = self.postgres.create_database("soak")
        upgrade(self.postgres.database_url("soak", sqlalchemy=True))
        self.engine = create_engine(self.postgres.database_url("soak", sqlalchemy=True))
        s3_port = free_port()
        moto = Child(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
            self.folder / "s3.log",
            {**os.environ, **AWS},
            self.folder,
        ).start()
        self.children.append(moto)
        wait_port(s3_port, proc=moto.proc)
        self.s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{s3_port}",
            region_name=AWS["AWS_DEFAULT_REGION"],
            aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}),
        )
        self.s3.create_bucket(Bucket="soak")
        self.receiver_port, self.upstream_port = free_port(), free_port()
        self.receiver = self._receiver(fail=0.0)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "LUMA_"))}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(
            AWS,
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{s3_port}",
            DATABASE_URL=url,
            LUMA_API_FLAVOR=self.plan.flavor,
            LUMA_API_BASE=f"http://127.0.0.1:{self.upstream_port}",
            LUMA_API_KEY=KEY,
            TRACKER_DEV_ENV="0",
            TRACKER_SECRET_KEY=secrets.token_urlsafe(32),  # one for every machine
            TRACKER_MEDIA_URL="s3://soak/videos",
            TRACKER_MEDIA_ALLOW_PRIVATE="1",  # the upstream's videos are on 127.0.0.1
            TRACKER_MAX_IN_FLIGHT="60",
            TRACKER_SUBMITS_PER_MINUTE="2000",
            TRACKER_NOTIFY_URL=f"http://127.0.0.1:{self.receiver_port}/hook",
            TRACKER_NOTIFY_SECRET=self.secret,
            TRACKER_NOTIFY_RETRY_SCHEDULE="1,2,5,10,30",
            TRACKER_POLL_AFTER=f"{self.plan.poll_after:g}",
            WEB_CONCURRENCY="1",  # two machines on two cores: one web process each
        )
        self.machines = [
            Machine(name, self.folder / name, free_port(), env).start() for name in ("a", "b")
        ]

    def _receiver(self, fail: float) -> Child:
        child = Child(
            [
                str(BIN / "python"),
                "-m",
                "bench.soak_receiver",
                "--port",
                str(self.receiver_port),
                "--secret",
                self.secret,
                "--log",
                str(self.folder / "receiver.jsonl"),
                "--fail",
                str(fail),
                "--seed",
                str(self.rng.randrange(1 << 30)),
            ],
            self.folder / "receiver.log",
            {**os.environ, "PYTHONPATH": str(ROOT)},
            ROOT,
        ).start()
        self.children.append(child)
        wait_port(self.receiver_port, proc=child.proc)
        return child

    def _upstream(self, calm_start: float) -> None:
        """Started once the phases' times are known: its 503 window is given at start."""
        chaos = calm_start + self.plan.phase
        outage = chaos + 0.7 * self.plan.phase
        self.windows.append(Window("upstream 503", outage, outage + self.plan.outage, 5.0))
        child = Child(
            [
                str(BIN / "python"),
                "-m",
                "bench.soak_upstream",
                "--port",
                str(self.upstream_port),
                "--key",
                KEY,
                "--log",
                str(self.folder / "upstream.jsonl"),
                "--seed",
                str(self.plan.seed),
                "--burst-every",
                str(self.plan.burst_every),
                "--burst-for",
                str(self.plan.burst_for),
                "--query-fail",
                str(self.plan.query_fail),
                "--flavor",
                self.plan.flavor,
                "--outage",
                f"{outage}+{self.plan.outage}",
            ],
            self.folder / "upstream.log",
            {**os.environ, "PYTHONPATH": str(ROOT)},
            ROOT,
        ).start()
        self.children.append(child)
        wait_port(self.upstream_port, proc=child.proc)

    # -- traffic ----------------------------------------------------------------------------

    def submit(self, index: int, phase: str) -> None:
        """One task; a submit with no answer (a killed web) is sent again to the other machine
        under a new prompt, so the report can tell both apart."""
        machine = self.machines[index % 2]
        words = f"soak {index}" + (" that will fail" if index % 20 == 7 else "")
        for attempt in range(1, 20):
            prompt = words if attempt == 1 else f"{words} try {attempt}"
            sub = Submitted(index, prompt, machine.name, phase, time.time())
            self.submitted.append(sub)
            try:
                answer = requests.post(
                    f"{machine.url}/api/tasks", json={"user_prompt": prompt}, timeout=30
                )
            except requests.RequestException:
                self.traffic.saw(f"submit {index}", None)
                machine = self.machines[(self.machines.index(machine) + 1) % 2]
                time.sleep(0.5)
                continue
            self.traffic.saw(f"submit {index}", answer)
            sub.status = answer.status_code
            if answer.status_code == 201:
                sub.task_id = int(answer.json()["id"])
                return
            time.sleep(float(answer.headers.get("Retry-After") or 1))

    def read(self) -> None:
        """A reader on both machines: the list and a task's page, twice a second."""
        session = requests.Session()
        while not self.stopping.is_set():
            for machine in self.machines:
                known = [sub.task_id for sub in self.submitted[-50:] if sub.task_id]
                paths = ["/api/tasks?limit=20"]
                if known:
                    paths.append(f"/api/tasks/{self.rng.choice(known)}")
                for path in paths:
                    try:
                        answer = session.get(machine.url + path, timeout=30)
                    except requests.RequestException:
                        self.traffic.saw(f"GET {path}", None)
                        continue
                    self.traffic.saw(f"GET {path}", answer)
            self.stopping.wait(0.5)

    def run_phase(self, name: str, first: int, count: int, start: float) -> None:
        with ThreadPoolExecutor(16, thread_name_prefix=f"submit-{name}") as pool:
            for n in range(count):
                due = start + n / self.plan.rate
                if (wait := due - time.time()) > 0:
                    time.sleep(wait)
                pool.submit(self.submit, first + n, name)
        self.phases[name] = (start, time.time())

    # -- chaos ------------------------------------------------------------------------------

    def chaos(self, start: float) -> None:
        """Kills every `kill_every` s; one PostgreSQL restart; the receiver down, then flaky."""
        plan, end = self.plan, start + self.plan.phase
        events = [(start + 0.3 * plan.phase, "postgres"), (start + 0.45 * plan.phase, "receiver")]
        moment = start + plan.kill_every
        while moment < end:
            events.append((moment, "kill"))
            moment += plan.kill_every
        for at, what in sorted(events):
            if self.stopping.wait(max(0.0, at - time.time())):
                return
            if what == "kill":
                victim = self.rng.choice(["web", "worker"])
                child = getattr(self.machines[1], victim)
                child.kill()
                child.start()
                self.chaos_done[f"kill -9 b {victim}"] += 1
                linger = DELIVERY_LEASE if victim == "worker" else 5.0
                self.windows.append(Window(f"kill b {victim}", at, time.time(), linger))
            elif what == "postgres":
                began = time.time()
                self.postgres.restart()
                self.chaos_done["postgres restart"] += 1
                self.windows.append(Window("postgres restart", began, time.time(), 10.0))
            else:
                threading.Thread(target=self._receiver_outage, daemon=True).start()

    def _receiver_outage(self) -> None:
        began = time.time()
        self.receiver.kill()
        self.stopping.wait(self.plan.receiver_down)
        self.receiver = self._receiver(fail=0.1)
        self.chaos_done["receiver down"] += 1
        # deliveries refused while it was down come back on the retry schedule (up to 30 s)
        self.windows.append(Window("receiver down", began, time.time(), 30.0))

    def progress(self, label: str, started: float) -> None:
        try:
            with self.engine.connect() as db:
                states = {
                    str(state): int(n)
                    for state, n in db.execute(
                        text("SELECT state, count(*) FROM tasks GROUP BY state")
                    )
                }
                archived = db.execute(
                    text("SELECT count(*) FROM tasks WHERE archived_at IS NOT NULL")
                ).scalar()
            final = sum(n for s, n in states.items() if s in soak_report.FINAL)
            db_line = f"final {final}/{sum(states.values())}  archived {archived}"
        except Exception as exc:  # PostgreSQL restarting: say so, go on
            db_line = f"database: {type(exc).__name__}"
        webhooks = len(read_log(self.folder / "receiver.jsonl"))
        print(
            f"[soak] {label} {time.time() - started:4.0f} s  submitted "
            f"{len({s.index for s in self.submitted})}/{self.plan.tasks}  {db_line}  "
            f"webhooks {webhooks}  chaos {sum(self.chaos_done.values())}",
            flush=True,
        )

    def settled(self) -> bool:
        with self.engine.connect() as db:
            open_tasks = db.execute(
                text(
                    "SELECT count(*) FROM tasks WHERE state NOT IN ('completed', 'failed',"
                    " 'rejected', 'timed_out') OR (state = 'completed' AND archived_at IS NULL)"
                )
            ).scalar()
            pending = db.execute(
                text("SELECT count(*) FROM deliveries WHERE state NOT IN ('succeeded', 'failed')")
            ).scalar()
        return open_tasks == 0 and pending == 0

    def rss(self) -> dict[str, int]:
        a = self.machines[0]
        return {
            f"a {role} {pid}": kb
            for role, child in (("web", a.web), ("worker", a.worker))
            for pid, kb in child.rss().items()
        }

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> Report:
        plan, half = self.plan, self.plan.tasks // 2
        calm = time.time() + 1
        self._upstream(calm)
        reader = threading.Thread(target=self.read, daemon=True)
        reader.start()
        ticker_stop = threading.Event()
        label = ["calm"]

        def tick() -> None:
            while not ticker_stop.wait(5 if plan.tasks < 1000 else 10):
                self.progress(label[0], calm)

        threading.Thread(target=tick, daemon=True).start()
        self.run_phase("calm", 0, half, calm)
        calm_memory = self.rss()
        label[0], chaos = "chaos", calm + plan.phase
        chaos_thread = threading.Thread(target=self.chaos, args=(chaos,), daemon=True)
        chaos_thread.start()
        self.run_phase("chaos", half, plan.tasks - half, max(chaos, time.time()))
        chaos_thread.join()
        label[0] = "drain"
        deadline = time.time() + plan.drain
        while time.time() < deadline:
            with contextlib.suppress(Exception):  # the database may be restarting: ask again
                if self.settled():
                    break
            time.sleep(2)
        ticker_stop.set()
        self.stopping.set()
        self.progress("end", calm)
        end_memory = self.rss()
        report = soak_report.count(
            self.engine,
            self._read_object,
            read_log(self.folder / "upstream.jsonl"),
            read_log(self.folder / "receiver.jsonl"),
            self.submitted,
            self.windows,
            self.phases,
        )
        report.server_errors += self.traffic.server_errors
        report.answers_503, report.resets = self.traffic.answers_503, self.traffic.resets
        report.chaos = self.chaos_done
        report.memory = {
            name: (kb, end_memory[name]) for name, kb in calm_memory.items() if name in end_memory
        }
        return report

    def _read_object(self, media_path: str) -> bytes | None:
        key = media_path.removeprefix("s3://soak/")
        if "/" not in key:
            key = f"videos/{key}"
        try:
            return bytes(self.s3.get_object(Bucket="soak", Key=key)["Body"].read())
        except Exception:
            return None

    def close(self) -> list[str]:
        self.stopping.set()
        problems = []
        for machine in getattr(self, "machines", []):
            problems += machine.stop()
        for child in reversed(self.children):
            child.stop(timeout=20)
        self.postgres.close()
        return problems


def render(plan: Plan, report: Report, seconds: float) -> str:
    """The report as markdown: the zeros, then the measurements, then the run's parameters."""
    lines = [f"{len(report.zeros())} figures that must be 0:", ""]
    examples = report.examples()
    lines += [
        f"- {name}: **{value}**" + (f" (first: {examples[name]})" if name in examples else "")
        for name, value in report.zeros().items()
    ]
    ratio = report.chaos_ratio()
    growth = report.memory_growth()
    lines += [
        "",
        f"- tasks: {report.tasks} from {plan.tasks} submits ({dict(report.by_state)}); "
        f"outcome unknown after a kill mid-create: {len(report.outcome_unknown)} "
        f"{report.outcome_unknown[:20]}",
        f"- creates at the upstream not matching a task: {report.creates_unmatched}",
        f"- webhooks: {report.webhooks_expected} expected, {report.webhook_requests} requests "
        f"received ({report.webhook_refused} answered 500 on purpose), "
        f"{report.webhook_duplicates} duplicates (at least once allows them)",
        f"- chaos done: {dict(report.chaos)}",
        f"- callbacks: {report.callbacks_200} answered 200 (all stored unless said above), "
        f"{report.callbacks_lost} lost on purpose, refused: {dict(report.callbacks_refused)}",
        f"- the trackers' 503 with Retry-After: {report.answers_503}; connections reset by a "
        f"kill: {report.resets}; the upstream's faults: {dict(report.upstream_faults)}",
        "- throughput (tasks final a second): "
        + ", ".join(f"{p} {v:.2f}" for p, v in report.throughput.items())
        + f"; chaos / calm = **{ratio:.2f}** (goal ≥ 0.7)",
        "- completion to webhook, outside the fault windows: "
        + "; ".join(
            f"{p}: n={n}, p50 {p50:.2f} s, p99 **{p99:.2f} s**"
            for p, (n, p50, p99) in report.latency.items()
        )
        + " (goal p99 < 2 s)",
        "- resident memory, end of calm → end of run: "
        + "; ".join(
            f"{name} {calm // 1024} → {end // 1024} MB ({growth.get(name, 0):+.0%})"
            for name, (calm, end) in report.memory.items()
        )
        + " (goal ≤ +10 %)",
        "",
        f"Parameters: the {plan.flavor} dialect, {plan.tasks} tasks at {plan.rate:g}/s, "
        f"phases of {plan.phase:.0f} s, "
        f"kill -9 every {plan.kill_every:g} s, receiver down {plan.receiver_down:g} s then 10 % "
        f"500s, upstream 503 for {plan.outage:g} s, one PostgreSQL restart, 20 % of callbacks "
        f"lost, {plan.query_fail:.0%} of queries failing, 429 bursts of {plan.burst_for:g} s every "
        f"{plan.burst_every:g} s, TRACKER_POLL_AFTER={plan.poll_after:g}; "
        f"{seconds / 60:.1f} minutes in all.",
    ]
    return "\n".join(lines)


def soak(plan: Plan, keep: bool = False) -> tuple[Report, str]:
    """Run one soak; (the report, its markdown). The folder goes unless `keep` or it failed."""
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    started = time.time()
    run = Soak(plan, folder)
    report: Report | None = None
    try:
        run.start()
        report = run.run()
    finally:
        stop_problems = run.close()
    if stop_problems:
        report.server_errors += [f"did not stop cleanly: {p}" for p in stop_problems]
    text_ = render(plan, report, time.time() - started)
    failed = any(report.zeros().values())
    if failed or keep:
        print(f"[soak] logs kept in {folder}", flush=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return report, text_


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak -- ")
    parser.add_argument("--quick", action="store_true", help="300 tasks, a short fault schedule")
    parser.add_argument("--tasks", type=int, help="tasks in all (default 5000; at least 5000)")
    parser.add_argument("--rate", type=float, help="submits a second")
    parser.add_argument("--flavor", choices=("proxy", "luma"), help="the upstream's dialect")
    parser.add_argument("--keep", action="store_true", help="keep the logs' folder")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # so a stopped soak stops what it started
    plan = QUICK if args.quick else Plan()
    if args.tasks:
        plan = replace(plan, tasks=args.tasks)
    if args.rate:
        plan = replace(plan, rate=args.rate)
    if args.flavor:
        plan = replace(plan, flavor=args.flavor)
    load = os.getloadavg()
    report, body = soak(plan, keep=args.keep)
    print(body, flush=True)
    if not args.no_write and not args.quick:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        about = (
            f"`python -m bench soak` (issue 23) on {machine_line()}; the 1-minute load average was "
            f"{load[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end. Two trackers "
            "(web and worker each) on one PostgreSQL, one S3 bucket (moto), the busy upstream "
            "and a signature-checking receiver; a calm phase, then a chaos phase of the same "
            "length, then the drain. The floor is the calm phase of the same run. Counted from "
            "the database, the bucket and the upstream's and the receiver's own logs."
        )
        add_run("## Soak", f"## Soak\n\n### {stamp}\n\n{about}\n\n{body}\n")
    return 1 if any(report.zeros().values()) else 0
