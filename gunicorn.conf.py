"""gunicorn settings for the `web` process.

Threads rather than many processes: requests mostly wait on the database or the
upstream, and each process keeps one upstream session and one connection pool.
The access log goes through a logger that masks callback tokens, which sit in
the callback route's path, and escapes control characters (no forged lines).
"""

import os

from gunicorn.glogging import Logger

from tracker.redact import loggable_environ

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
worker_class = "gthread"
timeout = 60
graceful_timeout = 20
keepalive = 5
accesslog = "-"
errorlog = "-"
# no query string (%(q)s) in the access line: it could carry a token someday
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'


class RedactingLogger(Logger):
    def access(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        super().access(resp, req, loggable_environ(environ), request_time)


logger_class = RedactingLogger
