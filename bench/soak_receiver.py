"""The soak's webhook receiver, run as its own process: `python -m bench.soak_receiver`.

It verifies every delivery's signature with `standardwebhooks` (the library the docs tell
users to use), answers 500 to a share of them (`--fail`), 204 to the rest, and writes one
JSON line per request to its own log: the webhook id, the event's type, task and state,
whether the signature verified, and the answer. The soak stops it (the receiver "down")
and starts it again on the same port, so its log is appended to, never replaced.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bench.soak_upstream import JsonLog


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # started again on its port right after a stop


def serve(port: int, secret: str, log: JsonLog, fail: float, seed: int) -> ThreadingHTTPServer:
    hook, rng, lock = Webhook(secret), random.Random(seed), threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                event: Any = hook.verify(raw, headers)
                verified = True
            except WebhookVerificationError:
                event, verified = json.loads(raw or b"null"), False
            with lock:
                status = 500 if rng.random() < fail else 204
            data = event.get("data") or {} if isinstance(event, dict) else {}
            log.write(
                ev="webhook",
                wid=headers.get("webhook-id"),
                type=event.get("type") if isinstance(event, dict) else None,
                task=data.get("id"),
                state=data.get("state"),
                verified=verified,
                status=status,
            )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    return _Server(("127.0.0.1", port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True, help="whsec_...")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--fail", type=float, default=0.0, help="share answered 500")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    log = JsonLog(args.log)
    server = serve(args.port, args.secret, log, args.fail, args.seed)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"ready http://127.0.0.1:{args.port}/hook", flush=True)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
