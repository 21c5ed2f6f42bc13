"""One safe way to read and write JSON that came from outside (clients, the upstream, the database).

Python's json module accepts what strict parsers and our own code cannot live with: nesting
deep enough to exhaust the stack (a RecursionError, or worse, in whatever walks the value
later), `NaN`/`Infinity`/`1e999` (written back out as `Infinity`, which strict clients reject)
and lone UTF-16 surrogates (`"\\ud800"`: no database or UTF-8 page can hold them). Every body
the service reads goes through `read`, and every stored payload through `dumps` and
`loads_stored`, so that no input can make a later page or answer fail.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate, repeat
from typing import Any

MAX_DEPTH = 64  # real payloads nest about 6 levels; parse() looks 4 deep
MAX_INT_DIGITS = 300  # an integer longer than this overflows a float: read as non-finite

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]")
# opening bracket -> +1, closing -> -1 (after subtracting 1), counted in C by accumulate
_BRACKETS = str.maketrans({"[": "\x02", "{": "\x02", "]": "\x00", "}": "\x00"})
_SURROGATE = re.compile("[\ud800-\udfff]")

# what went wrong, for a 400 or an event's note
NOT_JSON = "not JSON"
TOO_DEEP = "nested too deeply"
NON_FINITE = "non-finite number"
LONE_SURROGATE = "lone surrogate"


class BodyError(ValueError):
    """A body the strict reader refuses; `message` says why, `field` where (top-level key)."""

    def __init__(self, problem: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Lenient:
    """What the lenient reader made of a body: a value (or None) and what was wrong with it."""

    value: Any
    problem: str | None = None


class _NonFinite:
    """Stands for NaN/Infinity while the value is checked; becomes null or a 400."""


_NONFINITE = _NonFinite()
# a lone surrogate can only come from a \uD800-\uDFFF escape (raw ones are invalid UTF-8)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """True when JSON text nests more than `limit` arrays/objects, found without parsing it."""
    if text.count("[") + text.count("{") <= limit:
        return False  # the common case costs two C-speed counts
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).translate(_BRACKETS)
    depths = accumulate(map(operator.sub, brackets.encode("latin-1"), repeat(1)))
    return max(depths, default=0) > limit


def _text(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    return raw.decode(json.detect_encoding(raw))  # strict: bad UTF-8 is not JSON


def _walk(value: Any, *, replace: bool) -> tuple[Any, str | None, str | None]:
    """Find non-finite numbers and lone surrogates (iteratively: depth is already bounded).

    Returns the value (sentinels replaced by None when `replace`), the first problem and the
    top-level key it was found under.
    """
    problem: str | None = None
    field: str | None = None
    if value is _NONFINITE:
        return (None if replace else value), NON_FINITE, None
    if isinstance(value, str):
        return value, (LONE_SURROGATE if _SURROGATE.search(value) else None), None
    stack: list[tuple[Any, str | None]] = [(value, None)]
    while stack:
        node, top = stack.pop()
        items: Iterable[tuple[Any, Any]] = (
            list(node.items()) if isinstance(node, dict) else enumerate(node)
        )
        for key, child in items:
            where = top if top is not None else (key if isinstance(node, dict) else None)
            found = None
            if isinstance(key, str) and _SURROGATE.search(key):
                found, where = LONE_SURROGATE, top  # never name a field that cannot be shown
            if child is _NONFINITE:
                found = found or NON_FINITE
                if replace:
                    node[key] = None
            elif isinstance(child, str):
                if _SURROGATE.search(child):
                    found = found or LONE_SURROGATE
            elif isinstance(child, dict | list):
                stack.append((child, where))
            if found and problem is None:
                problem, field = found, where
                if not replace:
                    return value, problem, field
    return value, problem, field


def _decode(raw: bytes | str) -> tuple[Any, bool, bool]:
    """Parse with the depth checked first; ValueError (incl. bad UTF-8) when it is not JSON.

    Returns the value, whether it holds NaN/Infinity sentinels and whether it may hold lone
    surrogates, so that the common body is never walked a second time.
    """
    text = _text(raw)
    if too_deep(text):
        raise BodyError(TOO_DEEP, f"the body is nested more than {MAX_DEPTH} levels deep")
    odd: list[bool] = []

    def non_finite(_: str) -> _NonFinite:
        odd.append(True)
        return _NONFINITE

    def number(literal: str) -> Any:
        value = float(literal)
        return value if math.isfinite(value) else non_finite(literal)

    def integer(literal: str) -> Any:
        # past a float's range (309 digits) a number is as unusable as Infinity
        return non_finite(literal) if len(literal) > MAX_INT_DIGITS else int(literal)

    try:
        value = json.loads(text, parse_float=number, parse_int=integer, parse_constant=non_finite)
    except RecursionError:  # cannot happen below MAX_DEPTH; kept as a last guard
        raise BodyError(TOO_DEEP, "the body is nested too deeply") from None
    return value, bool(odd), _SURROGATE_ESCAPE.search(text) is not None


def read(raw: bytes | str) -> Any:
    """A client's JSON body, or BodyError with a message a person can act on (the API's 400)."""
    try:
        value, non_finite, surrogates = _decode(raw)
    except BodyError:
        raise
    except ValueError:  # json.JSONDecodeError, UnicodeDecodeError, int too long
        raise BodyError(NOT_JSON, "the body is not valid JSON") from None
    if not (non_finite or surrogates):
        return value
    value, problem, field = _walk(value, replace=False)
    field = field[:64] if field is not None else None
    where = f"{field}: " if field else ""
    if problem == NON_FINITE:
        raise BodyError(
            problem, f"{where}numbers must be finite (NaN and Infinity are not JSON)", field
        )
    if problem == LONE_SURROGATE:
        raise BodyError(
            problem, f"{where}text holds a lone UTF-16 surrogate, which is not valid Unicode", field
        )
    return value


def read_lenient(raw: bytes | str) -> Lenient:
    """An upstream body: never raises. Too deep or not JSON -> None; NaN/Infinity -> null.

    Lone surrogates are kept (parse() and `dumps` cope with them; pages get U+FFFD).
    """
    try:
        value, non_finite, _ = _decode(raw)
    except BodyError as exc:
        return Lenient(None, exc.problem)
    except ValueError:
        return Lenient(None, NOT_JSON)
    if not non_finite:
        return Lenient(value)
    value, _, _ = _walk(value, replace=True)
    return Lenient(value, NON_FINITE)


def _finite(value: Any, depth: int = 0) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v, depth + 1) for v in value]
    return value


def dumps(value: Any) -> str:
    """JSON text that always loads again: ASCII only (lone surrogates escaped), no NaN/Infinity."""
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=True, allow_nan=False, default=str)
    except (ValueError, TypeError, RecursionError):
        return json.dumps(_finite(value), sort_keys=True, ensure_ascii=True, default=str)


def _displayable(value: Any) -> Any:
    """Lone surrogates -> U+FFFD, so the value can be written as UTF-8 (pages, answers)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_displayable(k): _displayable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_displayable(v) for v in value]
    return value


def loads_stored(text: str) -> Any:
    """A stored payload as a value; any text that is not (safe) JSON comes back as text.

    Rows written before payloads were always ASCII JSON may hold plain text, `Infinity` or
    nesting too deep to load: they are shown, never a 500.
    """
    read = read_lenient(text)
    if read.value is None and read.problem in (NOT_JSON, TOO_DEEP):
        return text
    return _displayable(read.value)
