"""The WSGI entry point: `gunicorn wsgi:app` (see gunicorn.conf.py and the Procfile)."""

import logging
import sys

from tracker import create_app
from tracker.cli import setup_logging
from tracker.settings import SettingsError

setup_logging()  # the app's own lines, with secrets masked, beside gunicorn's
try:
    app = create_app()
except SettingsError as exc:
    # one line naming the variable, not a traceback; exit code 3 is gunicorn's "worker failed
    # to boot", which stops the whole server instead of respawning the worker for ever
    logging.getLogger("tracker").error("%s", exc)
    sys.exit(3)
