"""The simulator's upstream accounts: one per API key, each with its own generations, credit
balance and count of creates, and a key a test can revoke (and restore) while it runs.

Why: the tracker may hold several keys (several Luma accounts, or several reseller accounts)
and must never mix them up: an id made with one key is unknown to the others (the 404 an
unknown id gets), each key spends its own balance, and a key revoked by its owner answers
401 from that moment on, as an unknown key does. With no key at all the simulator has one
account, named "" (`NO_KEY`), and asks for no Authorization, as it always did.

Revoking is a test control, so it is also served over HTTP (`POST /_sim/keys/<key>/revoke`
and `/restore`): a test or a benchmark that drives a simulator in another process (`tracker
simulate`) has no Python handle on it. Those routes take no key, no fault and no latency:
they are the test's side of the wire, not the upstream's API.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable, Iterable, Mapping

from werkzeug.routing import Rule
from werkzeug.wrappers import Response

NO_KEY = ""  # the one account of a simulator that asks for no key
CONTROL = "sim_keys"  # the endpoint of the /_sim/keys/ routes (routes.py answers it first)


def rules() -> list[Rule]:
    """The test-control routes, in both voices (neither API has a path under /_sim/)."""
    return [
        Rule(
            "/_sim/keys/<path:key>/<any(revoke, restore):action>",
            methods=["POST"],
            endpoint=CONTROL,
        )
    ]


class Accounts:
    """The accounts by key: balances (US cents), creates, and the keys revoked for now.

    Its own lock, not the simulator's: a balance or a count is a single update that never
    needs to be consistent with the task store, and the authorization of every request
    should not wait behind a list of 10,000 tasks.
    """

    def __init__(
        self, keys: Iterable[str], balance: int, balances: Mapping[str, int] | None = None
    ) -> None:
        self.keys = tuple(dict.fromkeys(key for key in keys if key))  # in order, once each
        names = self.keys or (NO_KEY,)
        unknown = sorted(set(balances or {}) - set(names))
        if unknown:
            raise ValueError(f"balances for keys the simulator does not take: {unknown}")
        self.balances = {name: (balances or {}).get(name, balance) for name in names}
        self.creates = dict.fromkeys(names, 0)
        self.revoked: set[str] = set()
        self.lock = threading.Lock()
        # called with (key, cents) under `lock` at each change: the store's writer (store.py)
        self.saved: Callable[[str, int], None] | None = None

    @property
    def first(self) -> str:
        """The account `Simulator.credit_balance` and `api_key` stand for: the first key's."""
        return self.keys[0] if self.keys else NO_KEY

    def caller(self, authorization: str) -> str | None:
        """The account an Authorization header names; None: a 401 (unknown or revoked key).

        Every key is compared in constant time, so the answer's timing does not tell how
        much of a key was right (the tracker's tests of secrets read it as the real API).
        """
        if not self.keys:
            return NO_KEY
        given, found = authorization.encode(), None
        for key in self.keys:
            if hmac.compare_digest(given, f"Bearer {key}".encode()):
                found = key
        with self.lock:
            return None if found is None or found in self.revoked else found

    def charge(self, key: str, cents: int) -> None:
        with self.lock:
            self.balances[key] -= cents
            self._save(key)

    def count_create(self, key: str) -> None:
        with self.lock:
            self.creates[key] += 1

    def set_balance(self, key: str, cents: int) -> None:
        self._check(key, allow_none=True)
        with self.lock:
            self.balances[key] = cents
            self._save(key)

    def _save(self, key: str) -> None:
        """Under `lock`, so two changes are written in the order they were made."""
        if self.saved is not None:
            self.saved(key, self.balances[key])

    def revoke(self, key: str) -> None:
        """From now on every request with `key` is a 401, until `restore(key)`."""
        self._check(key)
        with self.lock:
            self.revoked.add(key)

    def restore(self, key: str) -> None:
        self._check(key)
        with self.lock:
            self.revoked.discard(key)

    def control(self, key: str, action: str) -> Response:
        """`POST /_sim/keys/<key>/revoke|restore`: 200 with the key's state; 404: no such key."""
        body: dict[str, str | bool]
        if key not in self.keys:
            body, status = {"detail": "Unknown key"}, 404
        else:
            (self.revoke if action == "revoke" else self.restore)(key)
            body, status = {"revoked": action == "revoke"}, 200
        return Response(json.dumps(body), status, mimetype="application/json")

    def _check(self, key: str, *, allow_none: bool = False) -> None:
        if key in self.keys or (allow_none and key == NO_KEY and not self.keys):
            return
        if not self.keys:
            raise ValueError("this simulator takes no API key: there is none to revoke")
        raise ValueError("not one of the simulator's API keys")
