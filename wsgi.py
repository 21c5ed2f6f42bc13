"""The WSGI entry point: `gunicorn wsgi:app` (see gunicorn.conf.py and the Procfile)."""

import os
import sys

from tracker import create_app
from tracker.cli import setup_logging
from tracker.web import admission

setup_logging()  # the app's own lines, with secrets masked, beside gunicorn's
app = create_app()

if "gevent.monkey" in sys.modules and sys.modules["gevent.monkey"].is_module_patched("socket"):
    # gunicorn's gevent worker: as many requests in the app at once as threads would have been
    app = admission.limit(app, int(os.environ.get("GUNICORN_THREADS", "8")))  # type: ignore[assignment]
