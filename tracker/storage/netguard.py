"""No downloads from inside: HTTP GETs that only ever connect to public addresses.

Archival fetches URLs that came from the upstream (or, through a forged or buggy answer, from
anyone). Without a check, a link to 127.0.0.1, 169.254.169.254 or an intranet host would make
the worker fetch internal resources for an outsider.

So every hop is checked *after* DNS resolution (a public-looking name may resolve to 10.0.0.5),
every redirect is followed here rather than by requests (each new location is checked the same
way), and the TCP connection goes to the very address that was checked (`_PinnedAdapter`): a
DNS answer that changes between the check and the connect (rebinding) cannot redirect the
connection. The Host header, TLS SNI and certificate check still use the URL's host name.

The address rule is a table of IANA special-purpose ranges, not only the stdlib's `is_global`:
on Python 3.11 before 3.11.10 `is_global` calls multicast and several reserved ranges global.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as urllib3_connection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_REDIRECTS = 5
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})

_N = ipaddress.ip_network
# (range, why it is refused); first match wins
_BLOCKED: tuple[tuple[IPNetwork, str], ...] = (
    (_N("0.0.0.0/8"), "unspecified"),
    (_N("10.0.0.0/8"), "private"),
    (_N("100.64.0.0/10"), "shared address space"),
    (_N("127.0.0.0/8"), "loopback"),
    (_N("169.254.0.0/16"), "link-local"),
    (_N("172.16.0.0/12"), "private"),
    (_N("192.0.0.0/24"), "reserved"),
    (_N("192.0.2.0/24"), "documentation"),
    (_N("192.88.99.0/24"), "reserved"),
    (_N("192.168.0.0/16"), "private"),
    (_N("198.18.0.0/15"), "benchmarking"),
    (_N("198.51.100.0/24"), "documentation"),
    (_N("203.0.113.0/24"), "documentation"),
    (_N("224.0.0.0/4"), "multicast"),
    (_N("255.255.255.255/32"), "broadcast"),
    (_N("240.0.0.0/4"), "reserved"),
    (_N("::/128"), "unspecified"),
    (_N("::1/128"), "loopback"),
    (_N("64:ff9b:1::/48"), "private"),
    (_N("::/8"), "reserved"),
    (_N("100::/64"), "reserved"),
    (_N("2001::/23"), "reserved"),
    (_N("2001:db8::/32"), "documentation"),
    (_N("3fff::/20"), "documentation"),
    (_N("5f00::/16"), "reserved"),
    (_N("fc00::/7"), "private"),
    (_N("fe80::/10"), "link-local"),
    (_N("fec0::/10"), "site-local"),
    (_N("ff00::/8"), "multicast"),
)
_NAT64 = _N("64:ff9b::/96")


class FetchError(Exception):
    """The URL could not be fetched now (its host did not resolve); worth trying again later.

    Messages name the host or address but never the URL: presigned links are credentials.
    """


class FetchRefused(FetchError):
    """The URL may not be fetched at all: a non-public address, a bad scheme, a redirect loop."""


def why_not_public(ip: IPAddress) -> str | None:
    """None for a public unicast address, else a short reason ("loopback", "private", ...)."""
    if isinstance(ip, ipaddress.IPv6Address):
        # addresses that carry an IPv4 address reach that address: judge the IPv4 one
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return why_not_public(embedded)
        if ip.scope_id:
            return "scoped"
    for network, reason in _BLOCKED:
        if ip.version == network.version and ip in network:
            return reason
    # the stdlib's view as a backstop for ranges missing from the table
    for flag in ("loopback", "multicast", "link_local", "unspecified", "reserved"):
        if getattr(ip, f"is_{flag}"):
            return flag.replace("_", "-")
    return "not global" if ip.is_private or not ip.is_global else None


def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Guard:
    """The address rule for one run.

    `allow_private` is TRACKER_MEDIA_ALLOW_PRIVATE (local use with the simulator).
    `allowed` lists exact ranges let through anyway; tests use it to make one loopback
    address stand in for a public host without loosening the rule for any other.
    `resolver` is injectable for the same reason (a name that resolves where a test says).
    """

    allow_private: bool = False
    allowed: tuple[IPNetwork, ...] = ()
    resolver: Callable[[str, int], list[str]] = _getaddrinfo

    def refusal(self, ip: IPAddress) -> str | None:
        if self.allow_private:
            return None
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return None
        return why_not_public(ip)

    def resolve(self, host: str, port: int) -> str:
        """Resolve `host` and return the one address to connect to.

        Every address the name resolves to must pass: a name with one public and one
        private answer is refused rather than racing on which one the connection picks.
        """
        try:
            # getaddrinfo's own check (a label over 63, an empty one) made first: under gevent
            host.encode("idna")  # a failure inside getaddrinfo prints a traceback
            answers = self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise FetchError(f"could not resolve {host}") from exc
        if not answers:
            raise FetchError(f"could not resolve {host}")
        for answer in answers:
            try:
                ip = ipaddress.ip_address(answer)
            except ValueError as exc:
                raise FetchRefused(f"{host} resolved to an unusable address") from exc
            reason = self.refusal(ip)
            if reason is not None:
                shown = host if host == answer else f"{host} ({answer})"
                raise FetchRefused(f"refused: {shown} is not a public address ({reason})")
        return answers[0]


# -- connections pinned to the checked address ------------------------------------------------

_watcher = threading.local()  # .see: told of each socket a connection here uses (`watch`)


def watch(see: Callable[[socket.socket], None] | None) -> None:
    """From now on (None: no longer), show `see` each socket this thread's connections use
    (an outgoing webhook's whole-attempt deadline, `flows/notify`, shuts them when it passes)."""
    _watcher.see = see


class _PinnedHTTPConnection(HTTPConnection):
    """Open the socket to `pinned_ip`, whatever DNS says now; everything else uses the name.

    The pool hands `pinned_ip` over with the rest of its connection keywords (its `conn_kw`);
    None connects by name (a trusted URL's session). Each socket used is shown to `watch`.
    """

    def __init__(self, *args: Any, pinned_ip: str | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pinned_ip = pinned_ip

    def request(self, *args: Any, **kwargs: Any) -> None:
        if (see := getattr(_watcher, "see", None)) and self.sock:  # a kept-alive connection
            see(self.sock)
        super().request(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        try:
            sock = urllib3_connection.create_connection(
                (self.pinned_ip or self.host, self.port),
                self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"failed to connect: {exc}") from exc
        sys.audit("http.client.connect", self, self.host, self.port)
        if see := getattr(_watcher, "see", None):
            see(sock)
        return sock


class _PinnedHTTPSConnection(_PinnedHTTPConnection, HTTPSConnection):
    pass


# A pool passes keywords it does not know (here `pinned_ip=`) to every connection it makes.
class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class _PinnedAdapter(HTTPAdapter):
    """A transport whose every connection goes to one checked address."""

    def __init__(self, pinned_ip: str | None) -> None:
        self.pinned_ip = pinned_ip
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": partial(_PinnedHTTPPool, pinned_ip=self.pinned_ip),
            "https": partial(_PinnedHTTPSPool, pinned_ip=self.pinned_ip),
        }


def _pinned_session(pinned_ip: str | None) -> requests.Session:
    session = requests.Session()
    # no proxies or .netrc from the environment: a proxy would connect to an unchecked address
    session.trust_env = False
    adapter = _PinnedAdapter(pinned_ip)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _target(url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchRefused("not a valid URL") from exc
    if parts.scheme not in ("http", "https"):
        raise FetchRefused(f"refused: only http and https links are fetched, not {parts.scheme!r}")
    if not parts.hostname:
        raise FetchRefused("the link has no host")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def pinned_session_for(url: str, guard: Guard | None) -> requests.Session:
    """A session whose connections go to the checked address of `url`'s host (one hop).

    For a caller that follows no redirects (outgoing webhooks): raises FetchRefused for a
    non-public address or a bad URL, FetchError when the name does not resolve. No guard: a
    trusted URL (the operator's webhook target), connected to by name, unchecked.
    """
    host, port = _target(url)
    return _pinned_session(guard.resolve(host, port) if guard else None)


@contextmanager
def checked_get(
    url: str,
    guard: Guard,
    *,
    timeout: tuple[float, float],
    headers: dict[str, str] | None = None,
    max_redirects: int = MAX_REDIRECTS,
) -> Iterator[requests.Response]:
    """GET `url` streamed, checking the address of every hop; yields the final response.

    Redirects are followed here (at most `max_redirects`); the caller reads the body
    (`iter_content`) inside the `with` block and judges the status itself.
    """
    for _hop in range(max_redirects + 1):
        session = pinned_session_for(url, guard)
        try:
            response = session.get(
                url, stream=True, timeout=timeout, headers=headers, allow_redirects=False
            )
            try:
                location = response.headers.get("Location")
                if response.status_code in REDIRECT_CODES and location:
                    url = urljoin(url, location)
                    continue
                yield response
                return
            finally:
                response.close()
        finally:
            session.close()
    raise FetchRefused(f"more than {max_redirects} redirects")
