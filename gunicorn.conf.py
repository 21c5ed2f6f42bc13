"""gunicorn settings for the `web` process.

gevent rather than threads: a thread per connection lets slow clients (headers or a
callback body sent a byte at a time) hold every thread, and then /healthz and real
callbacks wait; a greenlet per connection costs a few kilobytes, so they cannot.
Measured in docs/benchmarks.md ("Slow clients", "Callback ingest"). psycopg (3.1.14+)
waits cooperatively under gevent; SQLite does not, so the web process keeps its busy
wait short and retries cooperatively (tracker/db.py).

gevent patches the standard library in each worker after the fork, and this file is read
by the master before that: it must not import modules that keep references to what gevent
patches (requests, urllib3, ssl-using code, prometheus_client, the tracker package), or the
workers would get unpatched copies. Hence the imports inside RedactingLogger.access, and
the two standard-library-only files of the tracker (metrics_files.py, logs.py) loaded here
by their path rather than imported.

The access log goes through a logger that masks callback tokens, which sit in the
callback route's path, and escapes control characters (no forged lines). With
TRACKER_LOG_FORMAT=json every line (the master's, the error log's, the access log's and
the app's) is one JSON object (tracker/logs.py); the access line carries the request's id.

Metrics (tracker/metrics.py): the web processes and the worker share one folder
(PROMETHEUS_MULTIPROC_DIR, default instance/metrics). Starting, the master removes the
files of processes that are gone; `child_exit` marks a web process that died.
"""

import importlib.util
import logging
import os
import sys
import traceback

from gunicorn.glogging import Logger


def _standalone(name):  # type: ignore[no-untyped-def]
    """tracker/<name>.py without importing the tracker package (see above)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tracker", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_gunicorn_{name}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


_metrics_files = _standalone("metrics_files")
_logs = _standalone("logs")


def _seconds(name, default):  # type: ignore[no-untyped-def]
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default  # the app stops with one line naming the variable (tracker/settings.py)


bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# One process on SQLite, two elsewhere, unless WEB_CONCURRENCY says: SQLite has one write lock,
# and two processes wanting it wait for each other in cooperative retries (tracker/db.py) where
# one process's greenlets never do (a transaction runs to its end without yielding). Measured
# with `python -m bench ingest` (docs/benchmarks.md, "Callback ingest"): on SQLite one process
# took 20 to 26 % more callbacks a second than two, at less CPU per callback.
_sqlite = os.environ.get("DATABASE_URL", "sqlite").startswith("sqlite")
workers = int(os.environ.get("WEB_CONCURRENCY", "1" if _sqlite else "2"))
worker_class = "gevent"
worker_connections = 1000  # connections a process holds open at once (gevent's default)
# requests running the app at once in a process (its threads under `-k gthread`; under gevent,
# wsgi.py's admission gate). 16 on PostgreSQL: more callbacks wait for each group commit
# (tracker/tasks/batching.py), so each costs less; measured with `python -m bench ingest`
# (docs/benchmarks.md), 8 slots took 7 to 27 % fewer callbacks a second in each of 4 runs.
# SQLite keeps 8: its callbacks queue for one write lock.
threads = int(os.environ.get("GUNICORN_THREADS", "8" if _sqlite else "16"))
timeout = 60
# On SIGTERM a web process finishes the requests in hand; the longest is a submit waiting on
# the upstream (connect + read timeout), so that, plus a margin, is how long it may take.
# The worker stops within the same bound (tracker/shutdown.py); give the platform's own stop
# timeout (Heroku: 30 s, Kubernetes: terminationGracePeriodSeconds) at least this much.
graceful_timeout = (
    int(_seconds("LUMA_CONNECT_TIMEOUT", 5.0) + _seconds("LUMA_READ_TIMEOUT", 30.0)) + 5
)
keepalive = 5
accesslog = "-"
errorlog = "-"
# no query string (%(q)s) in the access line: it could carry a token someday
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'


def post_request(worker, req, environ, resp):  # type: ignore[no-untyped-def]
    """Under gevent, let the other connections run before this one's next request.

    A greenlet that has sent its answer reads the client's next request, and on a busy
    keep-alive connection that request is already there: gevent does not switch, and a few
    connections are served again and again while the rest wait. Measured with
    `python -m bench ingest` (docs/benchmarks.md, "Callback ingest"): the bare floor's p99
    fell from 292 to 35 ms at the same rate, the tracker's from about a second to under 100 ms.
    """
    if type(worker).__name__ == "GeventWorker":
        import gevent  # in the worker, patched; the master never imports it

        gevent.sleep(0)


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """A web process has loaded the app and is about to accept: say so.

    Between "Booting worker" and this line a process serves nothing, so the first
    connections all go to the processes already up, and keep-alive ones stay there (a
    benchmark started on the first /healthz answer measured one busy process beside an
    idle one; bench/serve.py waits for this line from every process).
    """
    worker.log.info("Worker ready (pid: %s)", worker.pid)


def on_starting(server):  # type: ignore[no-untyped-def]
    """Before any web process exists: the settings checked once, then the metrics folder.

    A bad setting stops the master here with one line naming the variable; checked only in
    the web processes, each of them would fail to boot and gunicorn, halting, could print a
    traceback of its own. tracker.settings imports the standard library only (its import is
    pinned by tests/test_layout.py), so nothing that gevent patches is loaded here.
    """
    from tracker.settings import SettingsError, load

    try:
        load()
    except SettingsError as exc:
        server.log.error("%s", exc)
        sys.exit(3)
    if _metrics_files.enabled():
        _metrics_files.prepare()  # sets PROMETHEUS_MULTIPROC_DIR for the web processes too


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """A web process died (or was replaced): its live gauges no longer count."""
    if _metrics_files.enabled():
        _metrics_files.mark_dead(worker.pid)


class RedactingLogger(Logger):
    def setup(self, cfg):  # type: ignore[no-untyped-def]
        super().setup(cfg)
        if _logs.log_format() == "json":
            _logs.use_json([self.error_log, self.access_log])
            # the app's own lines: the web processes inherit this handler (tracker/logs.py)
            root = logging.getLogger()
            if not root.handlers:
                handler = logging.StreamHandler(sys.stderr)
                handler.setFormatter(_logs.JsonFormatter())
                root.addHandler(handler)
            root.setLevel(logging.INFO)
            logging.captureWarnings(True)

    def access(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        from tracker.redact import loggable_environ  # in the worker, after gevent's patching

        if not getattr(self, "access_log_enabled", True):  # gunicorn 23+; older: always
            return
        atoms = self.atoms_wrapper_class(
            self.atoms(resp, req, loggable_environ(environ), request_time)
        )
        # set by tracker.logs.RequestIds and tracker.web.app (_note_task) while the app ran
        ids = {"request_id": environ.get(_logs.ENVIRON_KEY)}
        ids["task_id"] = environ.get(_logs.TASK_ENVIRON_KEY)
        try:
            self.access_log.info(
                self.cfg.access_log_format,
                atoms,
                extra={key: value for key, value in ids.items() if value is not None},
            )
        except Exception:
            self.error(traceback.format_exc())


logger_class = RedactingLogger
