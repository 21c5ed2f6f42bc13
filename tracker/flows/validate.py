"""Check a submission (JSON API, dashboard form, CLI) before anything is stored or sent.

The rules are the models in `flows.bodies`; this module runs them and turns what they
refuse into `Problem`s, each naming its field so a person can fix it, in a fixed order
(unknown fields first, then the fields as the form shows them). Nothing half-valid is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import pydantic
import pydantic_core
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, WithJsonSchema

from tracker.flows.bodies import AccountName, NotifyUrl, check_notify_url, submit_model
from tracker.flows.fields import (
    ASPECT_RATIOS,
    COMMON_FIELDS,
    DURATION_PATTERN,
    FIELD_ORDER,
    GENERATE_FIELDS,
    ID_PATTERN,
    IMAGE,
    IMAGE_PATTERN,
    MAX_ID,
    MAX_PROMPT,
    RESOLUTIONS,
    TEXT_PATTERN,
    TRACKER_SETS,
    check_task_id,
    problem,
)
from tracker.tasks.store import NewTask
from tracker.upstream import dialects

__all__ = [
    "ASPECT_RATIOS",
    "COMMON_FIELDS",
    "DURATION_PATTERN",
    "GENERATE_FIELDS",
    "ID_PATTERN",
    "IMAGE",
    "IMAGE_PATTERN",
    "MAX_ID",
    "MAX_PROMPT",
    "RESOLUTIONS",
    "TEXT_PATTERN",
    "Problem",
    "ValidationError",
    "check_upstream_id",
    "new_task",
    "upstream_id",
]


def _upstream_id(value: Any, info: ValidationInfo) -> str:
    if value is None:
        raise problem(f"{info.field_name} is required")
    return check_task_id(str(info.field_name), value)


class Import(BaseModel):
    """Track a task made elsewhere by its upstream id."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    upstream_id: Annotated[
        str,
        BeforeValidator(_upstream_id),
        WithJsonSchema(
            {
                "type": "string",
                "pattern": ID_PATTERN,
                "description": "the upstream's id of a task made elsewhere",
            }
        ),
    ]
    notify_url: NotifyUrl = None
    account: AccountName = None  # the account it was made in (needed when several could be)


NOT_AN_OBJECT = "the body must be a JSON object"


@dataclass(frozen=True)
class Problem:
    """One thing wrong: the field to fix (None: the body as a whole) and what is wrong."""

    field: str | None
    error: str


class ValidationError(ValueError):
    """Every problem found; `field` and `message` are the first (what a 400 leads with)."""

    def __init__(self, field: str | None, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.field = field
        self.message = message
        self.problems = problems or [Problem(field, message)]

    @classmethod
    def of(cls, problems: list[Problem]) -> ValidationError:
        return cls(problems[0].field, problems[0].error, problems)


def _problem(error: Any) -> Problem:
    """One pydantic error in the tracker's words (the field's own rules are worded already)."""
    loc = error.get("loc") or ()
    field = str(loc[0])[:64] if loc else None
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "tracker":
        return Problem(ctx.get("field") or field, str(ctx["message"]))
    if field is None or kind in ("model_type", "model_attributes_type", "dict_type"):
        return Problem(None, NOT_AN_OBJECT)
    if kind == "extra_forbidden":
        hint = " (the tracker sets it)" if field in TRACKER_SETS else ""
        return Problem(field, f"{field} is not a known field{hint}")
    words = {
        "missing": "is required",
        "bool_type": "must be true or false",
        "string_type": "must be a string",
        "none_required": "must be empty",
    }
    return Problem(field, f"{field} {words.get(kind, 'is not valid: ' + str(error['msg']))}")


def problems(exc: pydantic.ValidationError) -> list[Problem]:
    """Every problem: the body's own first, then unknown fields, then in the form's order."""
    errors = exc.errors(include_url=False, include_input=False)

    def rank(error: Any) -> tuple[int, int]:
        loc = error.get("loc") or ()
        if not loc:
            return (0, 0)
        if error["type"] == "extra_forbidden":
            return (1, 0)
        name = str(loc[0])
        return (2, FIELD_ORDER.index(name) if name in FIELD_ORDER else len(FIELD_ORDER))

    return [_problem(error) for error in sorted(errors, key=rank)]


def new_task(body: Any, flavor: str = "proxy", *, allow_private: bool = False) -> NewTask:
    """A JSON body (already decoded) -> NewTask for this dialect, or ValidationError.

    A field the dialect cannot take (a base64 image for Luma's own API) is refused here,
    before anything is stored or sent. `allow_private` is TRACKER_NOTIFY_ALLOW_PRIVATE
    (the address guard of `notify_url`).
    """
    model = submit_model(body)
    dialect = dialects.get(flavor)
    if model.KIND not in dialect.kinds:
        offered = ", ".join(dialect.kinds)
        message = f"kind {model.KIND} is offered by Luma's own API (LUMA_API_FLAVOR=luma); "
        raise ValidationError("kind", message + f"this tracker's upstream offers {offered}")
    context = {"flavor": flavor, "notify_allow_private": allow_private}
    try:
        checked = model.model_validate(body, context=context)
    except pydantic.ValidationError as exc:
        raise ValidationError.of(problems(exc)) from None
    return checked.task(flavor)


def upstream_id(body: Any) -> str:
    """The body of an import, `{"upstream_id": "..."}` -> the id, or ValidationError."""
    return import_body(body).upstream_id


def import_body(body: Any, *, allow_private: bool = False) -> Import:
    """The body of an import, `{"upstream_id", "notify_url"?}`, checked; or ValidationError."""
    try:
        return Import.model_validate(body, context={"notify_allow_private": allow_private})
    except pydantic.ValidationError as exc:
        raise ValidationError.of(problems(exc)) from None


def notify_url(value: Any, *, allow_private: bool = False, field: str = "notify_url") -> str | None:
    """A webhook target as a user gives it (the CLI's --notify-url): checked by the guard."""
    if value is None or value == "":
        return None
    try:
        return check_notify_url(field, value, allow_private)
    except pydantic_core.PydanticCustomError as exc:
        raise ValidationError(field, str(exc.context["message"] if exc.context else exc)) from None


def check_upstream_id(value: Any, field: str = "upstream_id") -> str:
    """An upstream task id as a user gives it (a form field, the CLI's argument)."""
    try:
        return check_task_id(field, value)
    except pydantic_core.PydanticCustomError as exc:
        raise ValidationError(field, str(exc.context["message"] if exc.context else exc)) from None
