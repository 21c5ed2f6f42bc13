"""What the soak counts, and from where: the database, the bucket, the upstream's own log and
the receiver's own log — never the tracker's word about itself (its API, its metrics).

`count()` returns a `Report`; `Report.zeros()` are the figures that must all be 0 (the quick
variant in the test suite asserts them), the rest are measurements for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from lumasim.media import distinct_video

FINAL = ("completed", "failed", "rejected", "timed_out")
WEBHOOK_OF = {state: f"task.{state}" for state in FINAL}


@dataclass
class Submitted:
    """One submit the soak sent: which machine, the answer (0: no answer), the task made."""

    index: int
    prompt: str
    machine: str
    phase: str
    at: float
    status: int = 0
    task_id: int | None = None


@dataclass
class Window:
    """A fault in force from `start` until `end` (epoch seconds), and how long it lingers."""

    kind: str
    start: float
    end: float
    linger: float = 0.0

    def covers(self, moment: float) -> bool:
        return self.start <= moment < self.end + self.linger


@dataclass
class Report:
    tasks: int = 0
    submits: int = 0
    by_state: Counter[str] = field(default_factory=Counter)
    unfinished: list[int] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    outcome_unknown: list[int] = field(default_factory=list)
    creates_twice: list[int] = field(default_factory=list)
    creates_unmatched: int = 0
    archive_missing: list[int] = field(default_factory=list)
    archive_different: list[int] = field(default_factory=list)
    webhooks_expected: int = 0
    webhooks_missing: list[str] = field(default_factory=list)
    webhook_requests: int = 0
    webhook_duplicates: int = 0
    webhook_unverified: int = 0
    webhook_refused: int = 0  # answered 500 by the receiver on purpose: retried by the tracker
    callbacks_200: int = 0
    callbacks_not_stored: list[str] = field(default_factory=list)
    callbacks_lost: int = 0
    callbacks_refused: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    answers_503: int = 0
    resets: int = 0
    upstream_faults: Counter[int] = field(default_factory=Counter)
    chaos: Counter[str] = field(default_factory=Counter)  # kills, restarts, outages done
    memory: dict[str, tuple[int, int]] = field(default_factory=dict)  # kB: calm end, run end
    latency: dict[str, tuple[int, float, float]] = field(default_factory=dict)  # n, p50, p99
    throughput: dict[str, float] = field(default_factory=dict)  # tasks/s per phase

    def zeros(self) -> dict[str, int]:
        """The figures that must be 0, each with its name as the report prints it."""
        return {
            "tasks lost": len(self.lost),
            "tasks unfinished": len(self.unfinished),
            "videos missing": len(self.archive_missing),
            "videos different": len(self.archive_different),
            "creates sent twice": len(self.creates_twice),
            "webhooks never received": len(self.webhooks_missing),
            "webhooks with a bad signature": self.webhook_unverified,
            "callbacks answered 200 and not stored": len(self.callbacks_not_stored),
            "5xx other than 503 + Retry-After": len(self.server_errors),
        }

    def examples(self) -> dict[str, list[Any]]:
        """The first few of each figure that is not 0, for a failed run's report."""
        found: dict[str, list[Any]] = {
            "tasks lost": self.lost,
            "tasks unfinished": self.unfinished,
            "videos missing": self.archive_missing,
            "videos different": self.archive_different,
            "creates sent twice": self.creates_twice,
            "webhooks never received": self.webhooks_missing,
            "callbacks answered 200 and not stored": self.callbacks_not_stored,
            "5xx other than 503 + Retry-After": self.server_errors,
        }
        return {name: items[:10] for name, items in found.items() if items}

    def memory_growth(self) -> dict[str, float]:
        return {name: end / calm - 1 for name, (calm, end) in self.memory.items() if calm}

    def chaos_ratio(self) -> float:
        calm = self.throughput.get("calm", 0.0)
        return self.throughput.get("chaos", 0.0) / calm if calm else 0.0


def _percentile(values: list[float], share: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def _epoch(value: datetime | str | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:  # stored as UTC without a zone
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def count(
    engine: Engine,
    read_object: Callable[[str], bytes | None],
    upstream_log: Iterable[dict[str, Any]],
    receiver_log: Iterable[dict[str, Any]],
    submitted: list[Submitted],
    windows: list[Window],
    phases: dict[str, tuple[float, float]],
) -> Report:
    """Everything the report says. `read_object(media_path)`: the archived bytes, or None."""
    report = Report(submits=len(submitted))
    with engine.connect() as db:
        rows = db.execute(
            text(
                "SELECT id, state, upstream_id, user_prompt, media_path, outcome_unknown,"
                " completed_at FROM tasks ORDER BY id"
            )
        ).all()
        finals: dict[int, Any] = dict(
            db.execute(
                text(
                    "SELECT task_id, min(created_at) FROM task_events WHERE state_after IN"
                    " ('completed', 'failed', 'rejected', 'timed_out') GROUP BY task_id"
                )
            ).all()
        )
        stored: dict[int, list[Any]] = defaultdict(list)
        for task_id, payload in db.execute(
            text("SELECT task_id, payload FROM task_events WHERE source = 'callback'")
        ):
            try:
                stored[task_id].append(json.loads(payload) if payload else None)
            except ValueError:
                continue
    report.tasks = len(rows)
    by_id = {row.id: row for row in rows}
    by_upstream = {row.upstream_id: row for row in rows if row.upstream_id}
    by_prompt = {row.user_prompt: row for row in rows}

    # every answered submit's task exists; every submit index has a task, whatever was answered
    answered_lost = set()
    for sub in submitted:
        if sub.task_id is not None and sub.task_id not in by_id:
            report.lost.append(f"{sub.prompt!r}: answered {sub.status} as task {sub.task_id}")
            answered_lost.add(sub.index)
    made = {sub.index for sub in submitted if sub.prompt in by_prompt}
    for index in sorted({sub.index for sub in submitted} - made - answered_lost):
        report.lost.append(f"submit {index}: no task under any of its prompts")

    for row in rows:
        report.by_state[row.state] += 1
        if row.state not in FINAL:
            report.unfinished.append(row.id)
        if row.outcome_unknown:
            report.outcome_unknown.append(row.id)

    creates: Counter[str] = Counter()
    for entry in upstream_log:
        if entry["ev"] == "create":
            creates[entry["prompt"]] += 1
        elif entry["ev"] == "lost":
            report.callbacks_lost += 1
        elif entry["ev"] == "fault":
            report.upstream_faults[entry["status"]] += 1
        elif entry["ev"] == "callback":
            _callback(report, entry, by_upstream, stored)
    report.creates_twice = [row.id for row in rows if creates[row.user_prompt] > 1]
    report.creates_unmatched = sum(n for prompt, n in creates.items() if prompt not in by_prompt)

    for row in rows:
        if row.state != "completed":
            continue
        data = read_object(row.media_path) if row.media_path else None
        if data is None:
            report.archive_missing.append(row.id)
        elif data != distinct_video(f"{row.upstream_id}.mp4"):
            report.archive_different.append(row.id)

    _webhooks(report, rows, receiver_log, windows, phases)
    for phase, (start, _end) in phases.items():
        ids = {sub.task_id for sub in submitted if sub.phase == phase and sub.task_id}
        ends = [_epoch(finals.get(task_id)) for task_id in ids]
        done = [end for end in ends if end is not None]
        if done:
            report.throughput[phase] = len(done) / max(max(done) - start, 1e-9)
    return report


def _callback(
    report: Report,
    entry: dict[str, Any],
    by_upstream: dict[str, Any],
    stored: dict[int, list[Any]],
) -> None:
    status, body = entry["status"], entry["body"]
    if status != 200:
        report.callbacks_refused[status] += 1
        if status >= 500 and status != 503:
            report.server_errors.append(f"callback for {entry['id']}: {status}")
        return
    report.callbacks_200 += 1
    row = by_upstream.get(entry["id"])
    kept = [_comparable(payload) for payload in stored.get(row.id, [])] if row is not None else []
    if _comparable(body) not in kept:
        report.callbacks_not_stored.append(f"{entry['id']} {body.get('state')}")


def _comparable(payload: Any) -> Any:
    """A callback's payload less the one thing never stored in clear: Luma's Generation echoes
    its `request`, whose `callback_url` holds the task's token (masked when stored)."""
    if isinstance(payload, dict) and isinstance(payload.get("request"), dict):
        request = {k: v for k, v in payload["request"].items() if k != "callback_url"}
        return {**payload, "request": request}
    return payload


def _webhooks(
    report: Report,
    rows: Sequence[Any],
    receiver_log: Iterable[dict[str, Any]],
    windows: list[Window],
    phases: dict[str, tuple[float, float]],
) -> None:
    first_ok: dict[tuple[int, str], float] = {}
    oks: Counter[tuple[int, str]] = Counter()
    for entry in receiver_log:
        report.webhook_requests += 1
        if not entry["verified"]:
            report.webhook_unverified += 1
        if entry["status"] >= 300:
            report.webhook_refused += 1
        if entry["status"] >= 300 or entry["task"] is None:
            continue
        pair = (int(entry["task"]), str(entry["type"]))
        oks[pair] += 1
        first_ok.setdefault(pair, entry["t"])
    report.webhook_duplicates = sum(n - 1 for n in oks.values() if n > 1)
    latencies: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        expected = [WEBHOOK_OF[row.state]] if row.state in WEBHOOK_OF else []
        if row.state == "completed":
            expected.append("task.archived")
        for kind in expected:
            report.webhooks_expected += 1
            if (row.id, kind) not in first_ok:
                report.webhooks_missing.append(f"task {row.id} {kind}")
        done, got = _epoch(row.completed_at), first_ok.get((row.id, "task.completed"))
        if done is None or got is None or any(w.covers(done) for w in windows):
            continue
        phase = next((p for p, (s, e) in phases.items() if s <= done < e), "drain")
        latencies[phase].append(got - done)
    for phase, values in latencies.items():
        values.sort()
        report.latency[phase] = (len(values), _percentile(values, 0.5), _percentile(values, 0.99))
