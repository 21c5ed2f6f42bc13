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

Beside stopping, the other way a connection is cut: at a deadline (`Deadlines`). A read
timeout bounds each read, not the whole; a server that trickles a header line or a few bytes
every few seconds would hold a webhook attempt (10 s in all) or an archive download
(DOWNLOAD_DEADLINE) for as long as it likes, so a watchdog thread shuts the sockets of an
attempt whose time is up.

The web side agrees: gunicorn's graceful_timeout (gunicorn.conf.py) is the longest upstream
request a web process may be in (a submit: connect + read timeout) plus a margin.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
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


# -- deadlines: an attempt cut off when its time is up, whatever the other side does ----------


class _Cut:
    """One attempt's sockets, kept as duplicates (a number reused after a close is never shut);
    shut once its end has passed. The lock is the attempt's and, once, the watchdog's."""

    def __init__(self, ends: float) -> None:
        self.ends, self.passed, self.over = ends, False, False
        self.socks: list[socket.socket] = []
        self.lock = threading.Lock()

    def see(self, sock: socket.socket) -> None:
        with self.lock:
            self.socks.append(socket.fromfd(sock.fileno(), sock.family, sock.type))
        if self.passed:
            self.cut()

    def cut(self) -> None:
        with self.lock:
            self.passed = True
            for sock in self.socks if not self.over else ():
                with suppress(OSError):  # closed meanwhile
                    sock.shutdown(socket.SHUT_RDWR)  # a blocked read returns, the reader fails

    def close(self) -> None:
        with self.lock:
            self.over = True
            for sock in self.socks:
                sock.close()


class Deadlines:
    """Each attempt's end: one thread shuts the sockets of an attempt whose end has passed."""

    def __init__(self) -> None:
        self.live: dict[object, _Cut] = {}
        self.wakeup, self.closed = threading.Event(), False
        threading.Thread(target=self._run, name="deadlines", daemon=True).start()

    @contextmanager
    def attempt(self, ends: float, watch: Callable[[Any], None]) -> Iterator[_Cut]:
        """Inside, the sockets `watch` shows (storage.netguard.watch: the thread's) are shut
        at `ends`, and `.passed` says so."""
        key, cut, idle = object(), _Cut(ends), not self.live
        self.live[key] = cut
        if idle:
            self.wakeup.set()  # asleep with nothing to watch
        watch(cut.see)
        try:
            yield cut
        finally:
            watch(None)
            del self.live[key]
            cut.close()

    def _run(self) -> None:
        while not self.closed:
            self.wakeup.clear()
            now, live = time.monotonic(), list(self.live.values())
            for cut in live:
                if cut.ends <= now and not cut.passed:
                    cut.cut()
            # at most ten looks a second, at least one while anything is in flight
            soonest = min((cut.ends for cut in live if not cut.passed), default=now + 60)
            self.wakeup.wait(max(0.1, min(soonest - now, 1.0 if live else 60.0)))

    def close(self) -> None:
        self.closed = True
        self.wakeup.set()


_shared: Deadlines | None = None


def deadlines() -> Deadlines:
    """The process's watchdog for downloads, started at the first one."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = Deadlines()
        return _shared
