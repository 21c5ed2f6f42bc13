"""LumaClient: the one way the project talks to the upstream (the reseller proxy or Luma).

Which paths and bodies it uses is the dialect's business (tracker/upstream/dialects.py);
this module is the transport: one choke point for every request.

One `requests.Session` per client, explicit connect and read timeouts on every
call, and the project's own typed errors. The errors say what a caller needs to
decide: was the request surely not acted on (safe to send again), or may the
upstream have created and charged for a task (never resend on our own)?

Queries (GET) retry transient gateway failures through urllib3's Retry; creates
never retry here. 429 and 503 are not retried inside the client: the caller
learns `retry_after` and schedules the task later instead of blocking a thread.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError
from urllib3.util.retry import Retry

from tracker import jsontext, metrics
from tracker.tasks.states import Update
from tracker.upstream import dialects, parse
from tracker.upstream.creates import error_reason
from tracker.upstream.dialects import Dialect
from tracker.upstream.operations import Request

log = logging.getLogger(__name__)

USER_AGENT = "luma-tracker/0.1"


class UpstreamError(Exception):
    """Base of every upstream failure.

    `sent` is False only when the request surely did not arrive (safe to send again).
    """

    sent: bool = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIStatusError(UpstreamError):
    def __init__(self, status: int, reason: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason
        self.body = body


class RateLimitError(APIStatusError):
    """429 (or 503 with Retry-After): the request was not acted on; try after `retry_after`."""

    sent = False

    def __init__(self, status: int, reason: str, retry_after: float | None, body: Any = None):
        super().__init__(status, reason, body)
        self.retry_after = retry_after


class APIConnectionError(UpstreamError):
    """The connection could not be made: nothing reached the upstream."""

    sent = False


class APITimeoutError(UpstreamError):
    """Sent, but no answer in time: the outcome is unknown."""


class InvalidResponseError(UpstreamError):
    """A 2xx answer that is not the JSON the API documents (an HTML gateway page, say)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    update: Update


MAX_RETRY_AFTER = 3600.0  # a larger (or infinite) Retry-After is taken as an hour


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if math.isnan(seconds):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def _never_arrived(exc: requests.ConnectionError) -> bool:
    """Connection refused / DNS failure / connect timeout: the request never left."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    inner = getattr(reason, "reason", reason)
    return isinstance(inner, NewConnectionError)


class LumaClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        pool_size: int = 10,
        dialect: str = "proxy",
        account: str = "default",
    ) -> None:
        self.dialect: Dialect = dialects.get(dialect)
        self.account = account  # the upstream account it speaks as (its key's)
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.session = requests.Session()
        self.session.headers.update(
            {
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            }
        )
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        # GET only: 502/504 from a gateway and dropped connections are retried twice with backoff
        retry = Retry(
            total=2,
            connect=2,
            read=2,
            status=2,
            backoff_factor=0.2,
            backoff_jitter=0.2,
            status_forcelist=(502, 504),
            allowed_methods=frozenset({"GET"}),
            respect_retry_after_header=False,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    # -- the API ---------------------------------------------------------------------------

    def send(self, request: Request) -> Answer:
        """An operation as the dialect put it on the wire (`Dialect.request`)."""
        return self._request("POST", request.path, request.body, kind="create")

    def query(self, upstream_id: str) -> Answer:
        return self._request("GET", self.dialect.query_path(upstream_id), kind="query")

    def list_page(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """A page of the account's generations (each with its id), and whether more follow."""
        path = self.dialect.list_path(offset, limit)
        if path is None:
            raise APIStatusError(404, f"the {self.dialect.name} API lists no generations")
        return parse.parse_list(self._request("GET", path, kind="query").body)

    def query_many(self, upstream_ids: list[str]) -> list[Update]:
        path = self.dialect.batch_path()
        if path is None:  # callers check dialect.has_batch; this guards against a slip
            raise APIStatusError(404, f"the {self.dialect.name} API has no batch query")
        answer = self._request("POST", path, {"ids": upstream_ids}, kind="batch")
        return parse.parse_batch(answer.body)

    def download_url(self, upstream_id: str) -> str | None:
        path = self.dialect.download_url_path(upstream_id)
        if path is None:
            return None
        answer = self._request("GET", path, kind="download_url")
        url = answer.body.get("url") if isinstance(answer.body, dict) else None
        return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None

    def credits(self) -> int | None:
        """The account's balance in US cents (Luma's `GET /credits`); None when not given.

        Raises UpstreamError like every request; APIStatusError(404) when the dialect has
        no balance to ask for.
        """
        path = self.dialect.credits_path
        if path is None:
            raise APIStatusError(404, f"the {self.dialect.name} API has no credit balance")
        body = self._request("GET", path, kind="credits").body
        value = body.get("credit_balance") if isinstance(body, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value) or abs(value) >= 2**62:  # the column is a BigInteger
            return None
        return int(value)

    # -- the choke point -------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, kind: str
    ) -> Answer:
        """One request, counted and timed by `kind` (tracker_upstream_requests_total)."""
        started = time.perf_counter()
        code = "invalid"  # a 2xx that is not JSON (InvalidResponseError)
        try:
            answer = self._exchange(method, path, body)
            code = str(answer.status)
            return answer
        except APIStatusError as exc:
            code = str(exc.status)
            raise
        except APIConnectionError:
            code = "connect_error"
            raise
        except APITimeoutError:
            code = "timeout"
            raise
        finally:
            metrics.upstream_request(kind, code, time.perf_counter() - started, self.account)

    def _exchange(self, method: str, path: str, body: dict[str, Any] | None) -> Answer:
        url = self.base_url + path
        try:
            response = self.session.request(method, url, json=body, timeout=self.timeout)
        except requests.ConnectionError as exc:
            if _never_arrived(exc):
                raise APIConnectionError(
                    f"could not connect to the upstream ({method} {path})"
                ) from exc
            raise APITimeoutError(f"the connection broke during {method} {path}") from exc
        except requests.Timeout as exc:
            raise APITimeoutError(
                f"no answer within {self.timeout[1]:g} s ({method} {path})"
            ) from exc
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidHeader,
        ) as exc:  # refused before anything was sent
            raise APIConnectionError(f"request not sent: {type(exc).__name__}") from exc
        except requests.RequestException as exc:
            # a cut-off or unreadable answer (ChunkedEncodingError, ...): it arrived
            raise APITimeoutError(
                f"the answer to {method} {path} could not be read ({type(exc).__name__})"
            ) from exc

        text = response.text
        # the one safe reader: too deep or not JSON -> None, NaN/Infinity -> null
        data: Any = jsontext.read_lenient(response.content).value
        status = response.status_code
        if status == 429 or (status == 503 and "Retry-After" in response.headers):
            raise RateLimitError(
                status,
                error_reason(data, text),
                _retry_after(response.headers.get("Retry-After")),
                data,
            )
        if status >= 400:
            raise APIStatusError(status, error_reason(data, text), data)
        if data is None:
            raise InvalidResponseError(f"HTTP {status}: {error_reason(None, text)}")
        return Answer(status=status, body=data, update=parse.parse(data))
