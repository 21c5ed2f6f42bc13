"""Keep secrets out of logs, events and pages, and keep log lines one line each.

Callback tokens travel in URLs (ours, echoed back by the upstream, in access
logs); the upstream key and the admin token are known values. Everything that
is written somewhere a person can read passes through `redact`. An upstream may
echo a token in any shape (the URL, URL-encoded, JSON-escaped, or bare), so the
values themselves are masked, in each of their encodings, not only the URL
pattern; a task's own token, which only its hash remembers, is found by hashing
the token-shaped words of a payload (`mask_token`).

Log lines are written by people's input too (paths, reasons): `printable` escapes
what a terminal or a log reader would take as a new line or a control sequence, and any
word shaped like a token is masked in them (`redact_line`), whatever path it came in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from itertools import chain
from typing import Any
from urllib.parse import quote, quote_plus

from tracker import logs

CALLBACK_PATH = re.compile(r"(/callbacks/luma/)[^/\s\"'?#&<>\\]+")
# the same path URL-encoded (once or twice) or JSON-escaped: callbacks%2Fluma%2F<token>
ENCODED_CALLBACK_PATH = re.compile(
    r"(callbacks(%2F|%252F|\\/|\\u002F)luma\2)[^/\s\"'?#&<>\\%]+", re.IGNORECASE
)
CALLBACK_TOKEN_BYTES = 32  # secrets.token_urlsafe(32): 43 characters of [A-Za-z0-9_-]
_TOKEN_CHARS = 43
# whole words only (the look-behind): the scan stays linear, not 43 steps at every position
_TOKEN_RUN = re.compile(rf"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{{{_TOKEN_CHARS},}}")
_AROUND = 6  # encodings glue a few token-alphabet characters on: %2F<token>%22, \u002F<token>
MASK = "[redacted]"
_known: set[str] = set()
# one search that finds every place `redact` could change (or says there is none): most texts
# (callback payloads, log lines) hold no secret, and one C-speed search is all they cost
_quick: re.Pattern[str] | None = None
_formatter = logging.Formatter()


def variants(secret: str) -> set[str]:
    """The shapes a secret takes when a URL or a JSON document carrying it is re-encoded."""
    url = quote(secret, safe="")
    shapes = {
        secret,
        url,
        quote_plus(secret, safe=""),
        quote(url, safe=""),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    return {shape for shape in shapes if shape}


def register(*secrets: str) -> None:
    """Remember secret values (API key, admin token) so that they are masked wherever they show."""
    global _quick
    for secret in secrets:
        if secret and len(secret) >= 6:
            _known.update(variants(secret))
    _quick = None


def _might_hold_secrets(text: str) -> bool:
    global _quick
    if _quick is None:
        # case-blind: ENCODED_CALLBACK_PATH is; for the secrets it only errs on the safe side
        shapes = sorted(_known, key=len, reverse=True)
        _quick = re.compile("|".join(["callbacks", *map(re.escape, shapes)]), re.IGNORECASE)
    return _quick.search(text) is not None


def _mask_values(text: str, values: Iterable[str]) -> str:
    # longest first: an encoding that contains the plain value is masked whole
    for value in sorted(values, key=len, reverse=True):
        if value and value in text:
            text = text.replace(value, MASK)
    return text


def redact(text: str, tokens: Iterable[str] = ()) -> str:
    """Mask callback URLs, the known secrets and `tokens` (and their encodings) in `text`."""
    if not tokens and not _might_hold_secrets(text):
        return text
    text = CALLBACK_PATH.sub(rf"\1{MASK}", text)
    text = ENCODED_CALLBACK_PATH.sub(rf"\1{MASK}", text)
    extra = chain.from_iterable(variants(token) for token in tokens if token)
    return _mask_values(text, chain(_known, extra))


def redact_line(text: str) -> str:
    """`redact`, and every word shaped like a callback token (43 or more url-safe characters)
    masked too: a token in a path that missed the callback route (`/callbacks/luma//<token>`,
    `/callbacks/LUMA/<token>`, `%20<token>`) is still a token (issue 23). For log lines only:
    stored payloads and pages keep their long ids and links."""
    return _TOKEN_RUN.sub(MASK, redact(text))


def mask_token(text: str, token_hash: str | None) -> str:
    """Mask the callback token whose sha256 is `token_hash`, wherever it shows in `text`.

    The database keeps only the hash, so a query answer that echoes the token (bare or in an
    encoded URL) is checked word by word: each token-shaped word, and the windows at its
    edges (where an encoding such as %2F glues characters on), is hashed and compared.
    """
    if not token_hash:
        return text
    wanted = bytes.fromhex(token_hash)
    sha256 = hashlib.sha256
    found: set[str] = set()
    for match in _TOKEN_RUN.finditer(text):
        word = match.group()
        last = len(word) - _TOKEN_CHARS
        starts: Iterable[int] = (
            range(last + 1)
            if last <= 2 * _AROUND
            else chain(range(_AROUND + 1), range(last - _AROUND, last + 1))
        )
        for start in starts:
            candidate = word[start : start + _TOKEN_CHARS]
            if sha256(candidate.encode()).digest() == wanted:
                found.add(candidate)
    return redact(text, found) if found else text


# -- log lines ------------------------------------------------------------------------------

_NOT_PLAIN_ASCII = re.compile(r"[^ -~]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return char if char.isprintable() else char.encode("unicode_escape").decode("ascii")


def printable(text: str) -> str:
    """Escape what is not printable (newlines, ESC, bidi controls...) as \\n, \\x1b, \\u202e.

    A logged path or value can then never start a forged log line or drive the terminal
    that shows the log. Printable non-ASCII text (é, 漢) is kept as it is.
    """
    return _NOT_PLAIN_ASCII.sub(_escape, text)


def _wsgi_text(value: str) -> str:
    """WSGI carries bytes as latin-1 text (PEP 3333): show a UTF-8 path as what it says."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def loggable_environ(environ: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a WSGI environ for gunicorn's access line, its texts decoded as UTF-8.

    Masking and escaping happen once, on the whole line, where its record is made
    (`install_logging_filter`): doing them here too cost every request a pass over every
    environ value, most of which the line never shows.
    """
    return {
        key: _wsgi_text(value) if isinstance(value, str) else value
        for key, value in environ.items()
    }


def install_logging_filter() -> None:
    """Mask secrets and escape control characters in every log record, whatever handler writes it.

    A record factory, not a handler filter: handlers added later (by gunicorn, by a test's
    log capture) are covered too, and a record is cleaned once, where it is made. The message
    becomes one line; a traceback (exc_text) keeps its lines and is only masked.
    """
    if logs.factory_installed("redacting"):
        return
    logging.setLogRecordFactory(_RedactingFactory(logging.getLogRecordFactory()))


class _RedactingFactory:
    """The record factory that was in place, then the masking of what it made."""

    redacting = True  # the mark by which install_logging_filter knows it is in place

    def __init__(self, current: Callable[..., logging.LogRecord]) -> None:
        self.current = current

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.current(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it when the line is written
            return record
        cleaned = printable(redact_line(message))
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[0] is not None:
            # formatters reuse exc_text when set: a traceback naming a URL is masked too
            record.exc_text = redact_line(_formatter.formatException(record.exc_info))
        return record
