"""Luma task tracker: submit extends and generations, receive callbacks, keep every task.

The package root holds only `create_app` (what wsgi.py and the tests call), and that builds
the app in tracker/web/app.py on call: importing `tracker.flows.worker` or `tracker.cli` runs this
file too, and must not pull Flask in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from tracker.db import Database
    from tracker.settings import Settings


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> Flask:
    """The web app (tracker/web/app.py), from the environment's settings unless given."""
    from tracker.web.app import create_app as build

    return build(settings, db=db)
