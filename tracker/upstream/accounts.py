"""The upstream accounts: whom the tracker talks to the upstream as, and each one's state.

An `Account` is a name ("default": one account today, from the LUMA_API_* settings), its
dialect, base URL and key, and its limits (tasks in flight, creates a minute). What the
tracker knows about an account is keyed by it, not by a base URL or a dialect:

- in this process, its `Manners`: a Retry-After pause the upstream asked for, and a batch
  query endpoint found missing; shared by every pass and thread, dispatch included;
- in the database, its credit balance (Luma's `GET {base}/credits`, in US cents). Why
  stored: a page or API answer must never wait on the upstream for it, and Luma must not
  be asked more than once a minute however many workers and pages there are. So the
  worker calls `refresh` each pass; it claims the account row's turn in a short
  transaction before asking (`tasks.claims.claim_credit_check`), so of several workers
  one asks, once a minute. The web reads the stored row with `read`. The proxy dialect has
  no balance: nothing is asked. The `accounts` table's row is keyed by its `upstream`
  column, the account's dialect, until the table is keyed by account (a migration).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from tracker.db import Database
from tracker.redact import redact
from tracker.settings import Settings
from tracker.tasks import claims
from tracker.tasks.models import Account as AccountRow
from tracker.tasks.models import utcnow
from tracker.upstream import dialects
from tracker.upstream.client import LumaClient, UpstreamError

log = logging.getLogger(__name__)

DEFAULT = "default"  # the one account's name, while there is one
BATCH_REPROBE = 600.0  # an upstream without a usable batch endpoint is asked again after this


@dataclass(frozen=True)
class Account:
    name: str
    dialect: str  # one of settings.DIALECTS (LUMA_API_FLAVOR)
    base_url: str
    key: str = field(repr=False)
    max_in_flight: int = 10  # TRACKER_MAX_IN_FLIGHT
    submits_per_minute: int = 20  # TRACKER_SUBMITS_PER_MINUTE


def from_settings(settings: Settings) -> Account:
    """The account the settings describe (LUMA_API_FLAVOR, LUMA_API_BASE, LUMA_API_KEY)."""
    return Account(
        name=DEFAULT,
        dialect=settings.luma_api_flavor,
        base_url=settings.luma_api_base,
        key=settings.luma_api_key,
        max_in_flight=settings.max_in_flight,
        submits_per_minute=settings.submits_per_minute,
    )


def client_for(account: Account, settings: Settings) -> LumaClient:
    """The account's client; its pool at least as large as the worker's concurrency."""
    return LumaClient(
        account.base_url,
        account.key,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        pool_size=max(10, settings.poll_concurrency + 2),
        dialect=account.dialect,
    )


# -- what this process learned about an account -------------------------------------------


@dataclass
class Manners:
    """What this process learned about one account's upstream, shared by every thread."""

    paused_until: dict[str, float] = field(default_factory=dict)  # "query"/"create": monotonic
    batch_off_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pause(self, what: str, seconds: float) -> None:
        with self.lock:
            until = max(self.paused_until.get(what, 0.0), time.monotonic() + seconds)
            self.paused_until[what] = until

    def pause_left(self, what: str = "query") -> float:
        return max(0.0, self.paused_until.get(what, 0.0) - time.monotonic())

    def use_batch(self) -> bool:
        return time.monotonic() >= self.batch_off_until

    def no_batch(self) -> None:
        if self.use_batch():
            log.info("the upstream has no usable batch endpoint: asking one task at a time")
        self.batch_off_until = time.monotonic() + BATCH_REPROBE


_manners: dict[str, Manners] = {}
_manners_lock = threading.Lock()


def manners_for(account: str) -> Manners:
    """The account's manners in this process, by its name (`Account.name`)."""
    with _manners_lock:
        return _manners.setdefault(account, Manners())


def forget_manners() -> None:
    """Start afresh, as a new process would (tests)."""
    with _manners_lock:
        _manners.clear()


# -- the credit balance ---------------------------------------------------------------------


@dataclass(frozen=True)
class Balance:
    upstream: str  # the account's dialect (GET /api/account's `upstream`)
    credit_balance: int | None  # US cents
    checked_at: datetime | None
    last_error: str | None = None


def refresh(db: Database, account: Account, client: LumaClient) -> bool:
    """Read the account's balance (through its client) when its dialect has one and a minute
    has passed; True when read.

    Never raises for upstream trouble: the last value stays, with the error beside it.
    """
    if dialects.get(account.dialect).credits_path is None:
        return False
    row_key = account.dialect
    now = utcnow()
    if not claims.claim_credit_check(db, row_key, now):
        return False
    try:
        balance = client.credits()
    except UpstreamError as exc:
        log.info("credit balance not read: %s", exc.message)
        with db.write() as session:
            row = session.get(AccountRow, row_key, with_for_update=True)
            if row is not None:
                row.last_error = redact(exc.message)[:500]
        return False
    with db.write() as session:
        row = session.get(AccountRow, row_key, with_for_update=True)
        if row is None:  # removed meanwhile: write it again
            row = AccountRow(upstream=row_key)
            session.add(row)
        row.credit_balance = balance
        row.checked_at = utcnow()
        row.last_error = None
    return True


def read(db: Database, account: Account) -> Balance:
    """The account's stored balance (nulls before the worker's first read)."""
    with db.read() as session:
        row = session.get(AccountRow, account.dialect)
        if row is None:
            return Balance(account.dialect, None, None)
        return Balance(account.dialect, row.credit_balance, row.checked_at, row.last_error)
