"""The WSGI entry point: `gunicorn wsgi:app` (see gunicorn.conf.py and the Procfile)."""

from tracker import create_app
from tracker.cli import setup_logging

setup_logging()  # the app's own lines, with secrets masked, beside gunicorn's
app = create_app()
