"""What the database keeps of each upstream account, shared by every process: whether it
takes work (a refused key disables it, with the reason and the time; `tracker accounts
enable` undoes it), the upstream's "not now" (`paused_until`: a Retry-After, or an account
out of credit), its creates a day (`account_days`, counted by the claims), and its credit
balance (Luma's `GET {base}/credits`, in US cents).

Why the balance is stored: no page or API answer may wait on the upstream for it, and Luma
must not be asked more than once a minute however many workers and pages there are. So the
worker calls `refresh` each pass; it claims the row's turn in a short transaction before
asking (`tasks.claims.claim_credit_check`), so of several workers one asks, once a minute.
The web reads the stored row (`read`, `overview`). The proxy dialect has no balance.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from tracker import metrics
from tracker.db import Database
from tracker.redact import redact
from tracker.settings import Settings
from tracker.tasks import claims
from tracker.tasks.models import Account as AccountRow
from tracker.tasks.models import AccountDay, Task, utcnow
from tracker.tasks.states import IN_FLIGHT_STATES
from tracker.upstream import dialects
from tracker.upstream.accounts import Account, pool
from tracker.upstream.client import APIStatusError, LumaClient, UpstreamError

log = logging.getLogger(__name__)


def _row(session: Any, account: Account) -> AccountRow:
    row: AccountRow | None = session.get(AccountRow, account.name, with_for_update=True)
    if row is None:
        row = AccountRow(name=account.name, upstream=account.dialect)
        session.add(row)
    return row


def by_load(db: Database, settings: Settings) -> list[Account]:
    """The pool's accounts with room, least loaded first (tasks in flight over its cap), for
    new work. A read: an account at its cap costs no claim transaction (the claim itself
    checks again, with the minute, the day and the pause, under the slot lock)."""
    with db.read() as session:
        rows = session.execute(
            select(Task.account, Task.upstream, func.count())
            .where(Task.state.in_(IN_FLIGHT_STATES))
            .group_by(Task.account, Task.upstream)
        ).all()
    # an account's own dialect only: after a switch, the other API's tasks take no slot
    busy = {(name, dialect): count for name, dialect, count in rows}

    def load(account: Account) -> float:
        return busy.get((account.name, account.dialect), 0) / account.max_in_flight

    return sorted((a for a in pool(settings) if load(a) < 1), key=load)


def waiting(db: Database) -> bool:
    """Some task is queued and due: worth a dispatch as soon as an account has room."""
    with db.read() as session:
        due = select(Task.id).where(Task.state == "queued", Task.next_check_at <= utcnow())
        return session.scalar(due.limit(1)) is not None


def disable(db: Database, account: Account, reason: str) -> None:
    """The upstream refused the account's key: it takes no new work until `tracker accounts
    enable` (its queued new generations go to the others; its own tasks wait)."""
    with db.write() as session:
        row = session.get(AccountRow, account.name, with_for_update=True)
        if row is None:
            row = AccountRow(name=account.name, upstream=account.dialect)
            session.add(row)
        if row.enabled is False:
            return
        row.enabled, row.disabled_reason, row.disabled_at = False, reason[:500], utcnow()
    log.error("account %s disabled: %s", account.name, reason)
    metrics.account_disabled(account.name)


def enable(db: Database, account: Account) -> None:
    """A person says the account's key works again (`tracker accounts enable`)."""
    with db.write() as session:
        row = session.get(AccountRow, account.name, with_for_update=True)
        if row is not None:
            row.enabled, row.disabled_reason, row.disabled_at = True, None, None
            row.paused_until = None


# the words of an upstream refusing a create for want of money (upstream.md: "insufficient
# balance" in a 200's body; HTTP 402; resellers' "not enough credits", "quota exceeded")
_NO_CREDIT = re.compile(
    r"insufficient|not enough (credit|balance|quota|points)|out of (credit|balance)|no credit"
    r"|balance (is )?(too low|exhausted|depleted)|credits? (exhausted|depleted)|quota exceeded",
    re.IGNORECASE,
)


def no_credit(reason: str | None, status: int | None) -> bool:
    """The upstream refused a create for want of credit (nothing was made, nor charged)."""
    return status == 402 or bool(reason and _NO_CREDIT.search(reason))


def pause(db: Database, account: Account, seconds: float, reason: str | None = None) -> None:
    """No creates by the account for `seconds` (a Retry-After; no credit), in every process."""
    until = utcnow() + timedelta(seconds=seconds)
    with db.write() as session:
        row = _row(session, account)
        row.paused_until = max(until, row.paused_until or until)
        if reason:
            row.last_error = reason[:500]


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
    row_key = account.name
    now = utcnow()
    if not claims.claim_credit_check(db, account, now):
        return False
    try:
        balance = client.credits()
    except UpstreamError as exc:
        log.info("credit balance not read: %s", exc.message)
        if isinstance(exc, APIStatusError) and exc.status in (401, 403):  # the key, refused
            disable(db, account, f"the upstream refused its key: {exc.reason}")
        with db.write() as session:
            row = session.get(AccountRow, row_key, with_for_update=True)
            if row is not None:
                row.last_error = redact(exc.message)[:500]
        return False
    with db.write() as session:
        row = session.get(AccountRow, row_key, with_for_update=True)
        if row is None:  # removed meanwhile: write it again
            row = AccountRow(name=row_key, upstream=account.dialect)
            session.add(row)
        broke = (row.last_error or "").startswith("no credit")
        row.credit_balance = balance
        row.checked_at = utcnow()
        row.last_error = None
        if broke and balance is not None and balance > 0:  # its pause for credit is over
            row.paused_until = None
    return True


def read(db: Database, account: Account) -> Balance:
    """The account's stored balance (nulls before the worker's first read)."""
    with db.read() as session:
        row = session.get(AccountRow, account.name)
        if row is None:
            return Balance(account.dialect, None, None)
        return Balance(account.dialect, row.credit_balance, row.checked_at, row.last_error)


def overview(db: Database, settings: Settings) -> list[dict[str, Any]]:
    """Every account of the pool as `GET /api/accounts` and `tracker accounts` show it: whether
    it takes work (and why not), its load, its day, its balance (as the worker last read it)."""
    now = utcnow()
    with db.read() as session:
        rows = {row.name: row for row in session.scalars(select(AccountRow))}
        day = claims.day_of(now)
        days = {
            d.account: d.creates
            for d in session.scalars(select(AccountDay).where(AccountDay.day == day))
        }
        busy: dict[str | None, int] = dict(
            session.execute(
                select(Task.account, func.count())
                .where(Task.state.in_(IN_FLIGHT_STATES))
                .group_by(Task.account)
            ).all()
        )
    shown = []
    for account in pool(settings):
        row = rows.get(account.name)
        shown.append(
            {
                "name": account.name,
                "upstream": account.dialect,
                "enabled": row.enabled if row is not None else True,
                "disabled_reason": row.disabled_reason if row is not None else None,
                "in_flight": busy.get(account.name, 0),
                "max_in_flight": account.max_in_flight,
                "creates_today": days.get(account.name, 0),
                "daily_limit": account.daily_limit,
                "credit_balance": row.credit_balance if row is not None else None,
                "checked_at": row.checked_at if row is not None else None,
                "paused_until": row.paused_until if row is not None else None,
            }
        )
    return shown


def holding(db: Database, settings: Settings, task: Task) -> dict[str, Any] | None:
    """A queued task's own account (pinned, or its source's) when that account takes no work
    now, disabled or paused (as `overview` shows it): why the task waits. None otherwise."""
    if task.state != "queued" or not task.account:
        return None
    shown = next((a for a in overview(db, settings) if a["name"] == task.account), None)
    paused = shown is not None and shown["paused_until"] and shown["paused_until"] > utcnow()
    return shown if shown is not None and (not shown["enabled"] or paused) else None
