"""Dashboard sign-ins, kept in the database (table `sign_ins`).

A signed cookie alone cannot be taken back: one captured before logout would work after
it, and after restarts. So a sign-in is a row, named in the cookie by a random id whose
SHA-256 is the row's key; logging out deletes the row, and a row past its absolute
lifetime (TRACKER_SESSION_LIFETIME, 12 hours by default) counts for nothing, however
often the cookie is used. Expired rows are swept at each sign-in.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import delete

from tracker.db import Database
from tracker.tasks.models import SignIn, utcnow


def _hash(sign_in_id: str) -> str:
    return hashlib.sha256(sign_in_id.encode()).hexdigest()


def start(db: Database, lifetime_seconds: float) -> str:
    """Record a new sign-in; return its id, for the session cookie."""
    sign_in_id = secrets.token_urlsafe(32)
    now = utcnow()
    with db.write() as session:
        session.execute(delete(SignIn).where(SignIn.expires_at <= now))
        session.add(
            SignIn(
                id_hash=_hash(sign_in_id),
                created_at=now,
                expires_at=now + timedelta(seconds=lifetime_seconds),
            )
        )
    return sign_in_id


def alive(db: Database, sign_in_id: str) -> bool:
    with db.read() as session:
        row = session.get(SignIn, _hash(sign_in_id))
        return row is not None and row.expires_at > utcnow()


def end(db: Database, sign_in_id: str) -> None:
    with db.write() as session:
        session.execute(delete(SignIn).where(SignIn.id_hash == _hash(sign_in_id)))
