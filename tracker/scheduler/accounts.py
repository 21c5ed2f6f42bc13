"""The account row's turn-taking: which process reads the upstream's credit balance now.

The balance is read at most once a minute however many workers there are (`credits`). The
account row's `next_check_at` is the claim: a process takes the turn in a short transaction
before asking the upstream, and the others see the turn taken until the interval has passed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError

from ..db import Database
from ..models import Account
from . import timing


def claim_credit_check(db: Database, flavor: str, now: datetime) -> bool:
    """Take this minute's turn to ask, or say another process has it."""
    try:
        with db.write() as session:
            row = session.get(Account, flavor, with_for_update=True)
            if row is None:
                row = Account(upstream=flavor)
                session.add(row)
            elif row.next_check_at is not None and row.next_check_at > now:
                return False
            row.next_check_at = timing.after(timing.CREDIT_CHECK_INTERVAL, now)
    except IntegrityError:  # another worker made the row first: its turn
        return False
    return True
