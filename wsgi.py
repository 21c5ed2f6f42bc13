"""The WSGI entry point: `gunicorn wsgi:app` (see gunicorn.conf.py and the Procfile)."""

from tracker import create_app

app = create_app()
