"""The single-writer rule holds, and its check can see a write from elsewhere (issue 19).

The check itself is tests/support/single_writer.py, run around every test; here it is shown
a write made from outside tracker/tasks/ (code compiled under the name of a web module), and
the store's own writes, so that a check that saw nothing would fail here.
"""

from __future__ import annotations

from sqlalchemy import update

from tests.support import single_writer
from tracker.db import Database
from tracker.tasks import store
from tracker.tasks.models import Task
from tracker.tasks.store import NewTask

OUTSIDER = """
def rename(db, task_id):
    with db.write() as session:
        session.execute(update(Task).where(Task.id == task_id).values(user_prompt="changed"))
"""


def test_a_write_from_outside_the_store_is_caught(db: Database) -> None:
    task = store.create(db, NewTask(kind="generate", user_prompt="a fox"))
    assert single_writer.violations == []  # the store's own write passes
    space = {"update": update, "Task": Task}
    exec(compile(OUTSIDER, str(single_writer.TRACKER / "web" / "outsider.py"), "exec"), space)  # noqa: S102 - code of our own, compiled under a web module's name
    space["rename"](db, task.id)
    found, single_writer.violations[:] = list(single_writer.violations), []
    assert len(found) == 1 and found[0].startswith("tracker/web/outsider.py wrote the tasks table")
