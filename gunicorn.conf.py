"""gunicorn settings for the `web` process.

gevent rather than threads: a thread per connection lets slow clients (headers or a
callback body sent a byte at a time) hold every thread, and then /healthz and real
callbacks wait; a greenlet per connection costs a few kilobytes, so they cannot.
Measured in docs/benchmarks.md ("Slow clients", "Callback ingest"). psycopg (3.1.14+)
waits cooperatively under gevent; SQLite does not, so the web process keeps its busy
wait short and retries cooperatively (tracker/db.py).

gevent patches the standard library in each worker after the fork, and this file is read
by the master before that: it must not import modules that keep references to what gevent
patches (requests, urllib3, ssl-using code, the tracker), or the workers would get
unpatched copies. Hence the import inside RedactingLogger.access.

The access log goes through a logger that masks callback tokens, which sit in the
callback route's path, and escapes control characters (no forged lines).
"""

import os

from gunicorn.glogging import Logger

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
worker_connections = 1000  # connections a process holds open at once (gevent's default)
threads = int(os.environ.get("GUNICORN_THREADS", "8"))  # `-k gthread`; under gevent, wsgi.py
timeout = 60
graceful_timeout = 20
keepalive = 5
accesslog = "-"
errorlog = "-"
# no query string (%(q)s) in the access line: it could carry a token someday
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'


class RedactingLogger(Logger):
    def access(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        from tracker.redact import loggable_environ  # in the worker, after gevent's patching

        super().access(resp, req, loggable_environ(environ), request_time)


logger_class = RedactingLogger
