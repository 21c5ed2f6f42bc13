"""The WSGI entry point: `gunicorn wsgi:app` (see gunicorn.conf.py and the Procfile)."""

import logging
import os
import sys

from tracker.flows.services import setup_logging
from tracker.settings import SettingsError
from tracker.web import admission
from tracker.web.app import create_app

setup_logging()  # the app's own lines, with secrets masked, beside gunicorn's
try:
    app = create_app()
except SettingsError as exc:
    # one line naming the variable, not a traceback; exit code 3 is gunicorn's "worker failed
    # to boot", which stops the whole server instead of respawning the worker for ever
    logging.getLogger("tracker").error("%s", exc)
    sys.exit(3)

if "gevent.monkey" in sys.modules and sys.modules["gevent.monkey"].is_module_patched("socket"):
    # gunicorn's gevent worker: as many requests in the app at once as threads would have been
    # (gunicorn.conf.py's `threads`: 8 on SQLite, else 16)
    sqlite = app.extensions["tracker"].db.is_sqlite
    slots = int(os.environ.get("GUNICORN_THREADS") or (8 if sqlite else 16))
    app = admission.limit(app, slots)  # type: ignore[assignment]
