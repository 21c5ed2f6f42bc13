"""The upstream account's credit balance (Luma's `GET {base}/credits`, in US cents).

Why stored: a page or API answer must never wait on the upstream for it, and Luma must
not be asked more than once a minute however many workers and pages there are. So the
worker calls `refresh` each pass; it claims the account row's turn in a short transaction
before asking (`scheduler.accounts`), so of several workers one asks, once a minute. The
web reads the stored row with `read`. The proxy dialect has no balance: nothing is asked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from tracker.db import Database
from tracker.redact import redact
from tracker.settings import Settings
from tracker.tasks import claims
from tracker.tasks.models import Account, utcnow
from tracker.upstream.client import LumaClient, UpstreamError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Balance:
    upstream: str
    credit_balance: int | None  # US cents
    checked_at: datetime | None
    last_error: str | None = None


def refresh(db: Database, settings: Settings, client: LumaClient) -> bool:
    """Read the balance when the dialect has one and a minute has passed; True when read.

    Never raises for upstream trouble: the last value stays, with the error beside it.
    """
    if client.dialect.credits_path is None:
        return False
    flavor = client.dialect.name
    now = utcnow()
    if not claims.claim_credit_check(db, flavor, now):
        return False
    try:
        balance = client.credits()
    except UpstreamError as exc:
        log.info("credit balance not read: %s", exc.message)
        with db.write() as session:
            row = session.get(Account, flavor, with_for_update=True)
            if row is not None:
                row.last_error = redact(exc.message)[:500]
        return False
    with db.write() as session:
        row = session.get(Account, flavor, with_for_update=True)
        if row is None:  # removed meanwhile: write it again
            row = Account(upstream=flavor)
            session.add(row)
        row.credit_balance = balance
        row.checked_at = utcnow()
        row.last_error = None
    return True


def read(db: Database, flavor: str) -> Balance:
    """The stored balance for this dialect (nulls before the worker's first read)."""
    with db.read() as session:
        row = session.get(Account, flavor)
        if row is None:
            return Balance(flavor, None, None)
        return Balance(flavor, row.credit_balance, row.checked_at, row.last_error)
