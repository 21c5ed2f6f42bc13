"""The `tracker` command: database, web helpers, worker, simulator and everyday actions.

Every subcommand reads the same settings as the web app; a bad setting stops it with one line
naming the variable (`context.py`). The commands are grouped by what they are for: `admin.py`
(db, notify), `processes.py` (worker, poll, archive, simulate, dev) and `tasks.py` (submit,
import, show, list, resend, download, watch; their following loops in `follow.py`). This file
is the group they hang from (the console script `tracker = tracker.cli:main`) and the logging
set-up it shares with wsgi.py.
"""

from __future__ import annotations

import logging

import click

from tracker.cli import admin, processes, tasks


def setup_logging(level: int = logging.INFO) -> None:
    from tracker import logs
    from tracker.redact import install_logging_filter

    logs.configure(level)  # text, or one JSON object a line (TRACKER_LOG_FORMAT=json)
    install_logging_filter()
    # alembic announces each of its plugins at INFO on every start; the migrations themselves stay
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


@click.group()
def main() -> None:
    """Luma task tracker."""
    setup_logging()


for _command in (
    admin.db,
    admin.notify,
    processes.simulate,
    processes.worker,
    processes.poll,
    processes.archive,
    processes.dev,
    tasks.submit,
    tasks.import_,
    tasks.show,
    tasks.list_tasks,
    tasks.resend,
    tasks.download,
    tasks.watch,
):
    main.add_command(_command)
