"""A webhook receiver on 127.0.0.1 that verifies every request with `standardwebhooks`.

It answers from a script (`plan`: "refuse", "ok", "hang", "redirect"; then "ok" for the
rest), records each request with whether its signature verified, and counts how many
requests for one webhook-id it held at once.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.servers import SHUTDOWN_POLL


@dataclass
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    verified: bool
    answered: str


class Receiver:
    def __init__(
        self, secret: str, plan: list[str] | None = None, hold_for: float = 30.0, port: int = 0
    ) -> None:
        self.secret, self.plan, self.hold_for = secret, list(plan or []), hold_for
        self.received: list[Received] = []
        self.release = threading.Event()  # ends every "hang"
        self.hanging = threading.Event()  # set when a "hang" began
        self.lock = threading.Lock()
        self.now_in: Counter[str] = Counter()
        self.max_at_once: Counter[str] = Counter()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(SHUTDOWN_POLL,), daemon=True
        )
        self.thread.start()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        webhook_id = headers.get("webhook-id", "")
        try:
            body = Webhook(self.secret).verify(raw, headers)
            verified = True
        except WebhookVerificationError:
            body, verified = (json.loads(raw) if raw else None), False
        with self.lock:
            answer = self.plan.pop(0) if self.plan else "ok"
            self.now_in[webhook_id] += 1
            self.max_at_once[webhook_id] = max(
                self.max_at_once[webhook_id], self.now_in[webhook_id]
            )
            self.received.append(Received(webhook_id, headers, body, verified, answer))
        try:
            if answer == "hang":
                self.hanging.set()
                self.release.wait(self.hold_for)
                return  # the sender gave up or died: no answer
            if answer == "refuse":
                handler.send_response(503)
                handler.end_headers()
                handler.wfile.write(b"not now")
            elif answer == "redirect":
                handler.send_response(302)
                handler.send_header("Location", self.url + "/elsewhere")
                handler.end_headers()
            else:
                handler.send_response(204)
                handler.end_headers()
        finally:
            with self.lock:
                self.now_in[webhook_id] -= 1

    def types(self) -> list[str]:
        return [r.body["type"] for r in self.received if r.body]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
