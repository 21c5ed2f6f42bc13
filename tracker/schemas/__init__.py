"""One schema for a task: what a client may send and what the API answers, as pydantic models.

`bodies` (the submit and import bodies, built from the field rules in `fields`) is what
`tracker.validate` checks input with, for the API, the dashboard's form and the CLI alike;
`answers` documents what `tracker.serialize` builds. `/api/openapi.json` is generated from
both (web/openapi.py), so the document, the checks and the answers are one source.
"""

from .answers import Account, Error, Event, Problem, Task, TaskDetail, TaskPage
from .bodies import Extend, Generate, Import, submit_model

__all__ = [
    "Account",
    "Error",
    "Event",
    "Extend",
    "Generate",
    "Import",
    "Problem",
    "Task",
    "TaskDetail",
    "TaskPage",
    "submit_model",
]
