"""Prometheus metrics (`GET /metrics`, tracker/web/monitoring.py), with prometheus_client.

Counters and histograms are counted where things happen, through the one-line helpers
below (`callback`, `upstream_request`, `submit`, `archived_bytes`, `delivery`,
`http_request`); gauges that describe the shared database (`tracker_tasks{state}`,
`tracker_poll_lag_seconds`, `tracker_workers{state}`) are read from it at scrape time by the
web's collector (tracker/web/monitoring.py), which hands itself to `render`: this module
reads no table.

Multiprocess mode (tracker/metrics_files.py): gunicorn's web processes and the worker
write into one folder per machine, and a scrape of any web process adds them all up, so
one scrape per machine sees everything. The database gauges are the same on every
machine (one database): aggregate them with max(), not sum().

`TRACKER_METRICS=0` turns it all off: no folder, no route, and every helper returns at
once (how the overhead is measured, docs/benchmarks.md). Labels never carry a raw path:
requests are labelled by their route template (`/callbacks/luma/<token>`), since paths
hold callback tokens.

Outcomes, as counted:
- `tracker_callbacks_total{result}`: understood, not_understood (stored, the task made due
  for a query), unknown_token (404), too_large (413), refused (another 4xx), error (5xx).
- `tracker_submits_total{outcome}`: accepted (the upstream named the task), deferred (not
  acted on: 429 or unreachable; queued again), refused (the upstream said no), unknown
  (sent, outcome unknown: never resent on its own).
- `tracker_upstream_requests_total{kind,code}`: kind is create, query, batch, credits or
  download_url; code the HTTP status, or timeout, connect_error, invalid (a 2xx that is
  not JSON).
- `tracker_deliveries_total{outcome}` (outgoing webhooks, issue 11): delivered (2xx),
  retry (failed, another attempt scheduled), failed (given up), abandoned (stopped
  mid-send by a shutdown; sent again later). Call `delivery(outcome)` once per attempt.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from tracker import metrics_files

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CALLBACK_RESULTS = (
    "understood",
    "not_understood",
    "unknown_token",
    "too_large",
    "refused",
    "error",
)
SUBMIT_OUTCOMES = ("accepted", "deferred", "refused", "unknown")
DELIVERY_OUTCOMES = ("delivered", "retry", "failed", "abandoned")
UPSTREAM_KINDS = ("create", "query", "batch", "credits", "download_url")


@dataclass
class _Metrics:
    callbacks: Any
    upstream_requests: Any
    upstream_seconds: Any
    submits: Any
    accounts_disabled: Any
    archive_bytes: Any
    deliveries: Any
    http_seconds: Any
    processes: Any


_m: _Metrics | None = None
_dir = ""
_lock = threading.Lock()
# labelled children by (metric, labels): a dict lookup instead of `.labels()` (half the cost
# of a count, which sits on the callback path)
_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (id(metric), *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def _build() -> _Metrics:
    from prometheus_client import Counter, Gauge, Histogram

    # registry=None: nothing in the library's global registry; a scrape reads the files
    def counter(name: str, text: str, labels: tuple[str, ...] = ()) -> Any:
        return Counter(name, text, labels, registry=None)

    return _Metrics(
        callbacks=counter("tracker_callbacks", "Upstream callbacks received.", ("result",)),
        upstream_requests=counter(
            "tracker_upstream_requests",
            "Requests to the upstream API.",
            ("kind", "code", "account"),
        ),
        upstream_seconds=Histogram(
            "tracker_upstream_request_seconds",
            "Time the upstream took to answer (or to fail).",
            ("kind", "account"),
            buckets=UPSTREAM_BUCKETS,
            registry=None,
        ),
        submits=counter("tracker_submits", "Creates sent to the upstream.", ("outcome", "account")),
        accounts_disabled=counter(
            "tracker_account_disabled",
            "Accounts disabled because the upstream refused their key.",
            ("account",),
        ),
        archive_bytes=counter("tracker_archive_bytes", "Bytes of videos and thumbnails archived."),
        deliveries=counter(
            "tracker_deliveries", "Outgoing webhook delivery attempts.", ("outcome",)
        ),
        http_seconds=Histogram(
            "tracker_http_request_seconds",
            "Time to answer a request, by route template (never the raw path).",
            ("method", "route", "status"),
            buckets=HTTP_BUCKETS,
            registry=None,
        ),
        processes=Gauge(
            "tracker_processes",
            "Tracker processes running on this machine.",
            ("kind",),
            multiprocess_mode="livesum",
            registry=None,
        ),
    )


def setup(
    enabled: bool,
    directory: str = "",
    *,
    kind: str,
    prune: bool = False,
    accounts: tuple[str, ...] = ("default",),
) -> bool:
    """Start counting in this process (once; later calls only say whether it is on).

    `prune`: remove the files of processes that are gone (a starting worker; the gunicorn
    master does it in gunicorn.conf.py, before its web processes exist). `accounts`: the
    pool's names, whose series show from the first scrape.
    """
    global _m, _dir
    if not enabled:
        return False
    with _lock:
        if _m is not None:
            return True
        from prometheus_client import values

        path = directory or metrics_files.default_dir()
        os.makedirs(path, exist_ok=True)
        os.environ[metrics_files.ENV] = path  # read by prometheus_client for every file
        if prune:
            metrics_files.prune_dead(path)
        values.ValueClass = values.MultiProcessValue()
        _dir, _m = path, _build()
        _m.processes.labels(kind).set(1)
        # every known outcome shows from the first scrape, at 0: rates and alerts need a series
        plain: tuple[tuple[Any, tuple[str, ...]], ...] = (
            (_m.callbacks, CALLBACK_RESULTS),
            (_m.deliveries, DELIVERY_OUTCOMES),
        )
        for metric, names in plain:
            for name in names:
                _child(metric, name)
        per_account: tuple[tuple[Any, tuple[str, ...]], ...] = (
            (_m.submits, SUBMIT_OUTCOMES),
            (_m.upstream_seconds, UPSTREAM_KINDS),
        )
        for account in accounts:
            for metric, names in per_account:
                for name in names:
                    _child(metric, name, account)
            _child(_m.accounts_disabled, account)
        return True


def enabled() -> bool:
    return _m is not None


def directory() -> str:
    return _dir


# -- the one-line helpers -------------------------------------------------------------------


def callback(result: str) -> None:
    if _m is not None:
        _child(_m.callbacks, result).inc()


def upstream_request(kind: str, code: str, seconds: float, account: str = "default") -> None:
    if _m is not None:
        _child(_m.upstream_requests, kind, code, account).inc()
        _child(_m.upstream_seconds, kind, account).observe(seconds)


def account_disabled(account: str) -> None:
    if _m is not None:
        _child(_m.accounts_disabled, account).inc()


def submit(state: str, outcome_unknown: bool, account: str = "default") -> None:
    """After a send: the task's state then, whether its outcome is unknown, its account."""
    if _m is None:
        return
    if state == "queued":
        outcome = "deferred"
    elif state == "rejected":
        outcome = "unknown" if outcome_unknown else "refused"
    else:
        outcome = "accepted"
    _child(_m.submits, outcome, account).inc()


def archived_bytes(size: int) -> None:
    if _m is not None:
        _m.archive_bytes.inc(size)


def delivery(outcome: str) -> None:
    if _m is not None:
        _child(_m.deliveries, outcome).inc()


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    if _m is not None:
        method = method if method in METHODS else "other"
        _child(_m.http_seconds, method, route, str(status)).observe(seconds)


# -- a scrape -------------------------------------------------------------------------------


def render(*collectors: Any) -> tuple[bytes, str]:
    """The text exposition of every process's metrics on this machine, and of `collectors`
    (the web's gauges read from the database), with its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=_dir)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST
