"""`tracker simulate` and `python -m lumasim`: the simulator in the foreground."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from lumasim.simulator import FLAVORS, Simulator
from lumasim.store import StoreError

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Run the simulator in the foreground until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="tracker simulate", description="A local stand-in for the upstream video API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        help="require Authorization: Bearer <key>; repeated, one upstream account per key",
    )
    parser.add_argument("--no-callbacks", action="store_true", help="never call notify_hook")
    parser.add_argument("--processing-after", type=float, default=1.0)
    parser.add_argument("--complete-after", type=float, default=3.0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--public-url", default=None, help="base of the video links it hands out")
    parser.add_argument("--flavor", choices=FLAVORS, default="proxy", help="the API to speak")
    parser.add_argument(
        "--store",
        default=None,
        metavar="PATH",
        help="a SQLite file that keeps its tasks across restarts (default: memory only)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        simulator = Simulator(
            api_keys=[key for key in args.key if key],  # --key "": no key, as before
            callbacks=not args.no_callbacks,
            processing_after=args.processing_after,
            complete_after=args.complete_after,
            latency=args.latency,
            public_url=args.public_url,
            flavor=args.flavor,
            store=args.store,
        )
    except StoreError as exc:  # a corrupt or unreadable file: one line, not a traceback
        log.error("%s", exc)
        return 1
    try:
        simulator.start(args.host, args.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc.strerror or exc)
        return 1
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    log.info(
        "Luma simulator (%s API) listening on %s (bound to %s; callbacks %s; %s)",
        "Luma's own" if args.flavor == "luma" else "the proxy's",
        simulator.url,
        args.host,
        "on" if simulator.callbacks else "off",
        f"{len(simulator.api_keys)} API key(s)" if simulator.api_keys else "no API key",
    )
    if args.store:  # after the line above, which says it is listening (what callers wait for)
        log.info("keeping its tasks in %s (%d from before)", args.store, len(simulator.tasks))
    if simulator.set_aside:  # LUMA_API_FLAVOR changed since: those come back when it does
        log.warning(
            "%d task(s) in %s were made by the other API: kept, not served by this one",
            simulator.set_aside,
            args.store,
        )
    while not stopping.wait(0.5):
        pass
    simulator.stop()
    log.info("Luma simulator stopped")
    return 0
