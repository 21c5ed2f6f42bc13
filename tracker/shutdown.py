"""Stopping cleanly on SIGTERM: what the worker finishes, what it abandons, what it gives back.

A platform stops a process with SIGTERM and, some seconds later, SIGKILL (Heroku: 30 s;
Kubernetes: terminationGracePeriodSeconds). In that window the worker (`worker.run_forever`)

- finishes the upstream requests in flight: a create cut off mid-request would have an
  unknown outcome (never resent on our own), and a query is short (LUMA_READ_TIMEOUT);
- abandons downloads (and outgoing webhook deliveries) in progress: a video can take many
  minutes, and another worker starts it again from the beginning anyway. `request()` cuts
  the connection of every download registered with `interruptible` (a read blocked on a
  slow origin returns at once), and `check()` raises `Abandoned` between chunks;
- gives back every lease it holds (queries, archive claims, deliveries), so that another
  worker takes those tasks at once instead of waiting for a lease to expire; then deletes
  its heartbeat row.

The web side agrees: gunicorn's graceful_timeout (gunicorn.conf.py) is the longest upstream
request a web process may be in (a submit: connect + read timeout) plus a margin.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

log = logging.getLogger(__name__)

_stopping = threading.Event()
_cutters: set[Callable[[], None]] = set()
_lock = threading.Lock()


class Abandoned(Exception):
    """Work cut short because this process is stopping; its lease is given back, not failed."""


def request() -> None:
    """Stop every download and delivery in this process: cut their connections now."""
    _stopping.set()
    with _lock:
        cutters = list(_cutters)
    for cut in cutters:
        with suppress(Exception):  # a connection that closed meanwhile
            cut()


def _socket(response: Any) -> socket.socket | None:
    """The socket under a streamed `requests` answer.

    urllib3 keeps no public handle on it while the body streams: its connection's `sock`
    when set, else the socket http.client reads from. Found neither (another library
    version), the download still stops at its next chunk or its read timeout.
    """
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is None:
        reader = getattr(getattr(response.raw, "_fp", None), "fp", None)
        sock = getattr(getattr(reader, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


@contextmanager
def interruptible(response: Any) -> Iterator[None]:
    """While inside, a shutdown cuts `response`'s connection (a `requests` streamed answer)."""

    def cut() -> None:
        sock = _socket(response)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns; the reader fails

    with _lock:
        _cutters.add(cut)
    try:
        check()  # stopping already: do not start
        yield
    finally:
        with _lock:
            _cutters.discard(cut)


def requested() -> bool:
    return _stopping.is_set()


def check() -> None:
    """Raise Abandoned when this process is stopping (called between chunks of a download)."""
    if _stopping.is_set():
        raise Abandoned("the process is stopping")


def reset() -> None:
    """For tests that stop a worker in-process and go on."""
    _stopping.clear()
