"""Luma task tracker: submit extends and generations, receive callbacks, keep every task.

The package root holds no code: the web app is `tracker.web.app.create_app` (what wsgi.py
and the tests call), the worker `tracker.flows.worker`, the command `tracker.cli`. Importing
any of them runs this file, which imports nothing, so the worker and the CLI never pull
Flask in, and the base layer never reaches up into the web layer.
"""
