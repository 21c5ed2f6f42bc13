"""The address rule of `netguard`, class by class, and its URL checks (no network needed)."""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tracker.storage.netguard import (
    FetchError,
    FetchRefused,
    Guard,
    _pinned_session,
    checked_get,
    why_not_public,
)

REFUSED = {
    # IPv4
    "0.0.0.0": "unspecified",  # noqa: S104 - an address under test, nothing binds to it
    "0.1.2.3": "unspecified",
    "10.1.2.3": "private",
    "100.64.0.1": "shared address space",
    "127.0.0.1": "loopback",
    "127.255.255.254": "loopback",
    "169.254.169.254": "link-local",  # the cloud metadata service
    "172.16.0.1": "private",
    "172.31.255.255": "private",
    "192.0.0.9": "reserved",
    "192.0.2.1": "documentation",
    "192.88.99.1": "reserved",
    "192.168.1.1": "private",
    "198.18.0.1": "benchmarking",
    "198.51.100.7": "documentation",
    "203.0.113.9": "documentation",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "broadcast",
    # IPv6
    "::": "unspecified",
    "::1": "loopback",
    "::7f00:1": "reserved",  # IPv4-compatible, deprecated
    "100::1": "reserved",
    "2001::1": "reserved",  # Teredo and other IETF assignments
    "2001:db8::1": "documentation",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "fe80::1": "link-local",
    "fec0::1": "site-local",
    "ff02::1": "multicast",
    "64:ff9b:1::1": "private",
    # IPv6 forms that carry an IPv4 address are judged by it
    "::ffff:127.0.0.1": "loopback",
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "link-local",
    "2002:7f00:1::1": "loopback",  # 6to4 of 127.0.0.1
    "2002:c0a8:101::1": "private",  # 6to4 of 192.168.1.1
    "64:ff9b::7f00:1": "loopback",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe": "link-local",  # NAT64 of 169.254.169.254
}
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "172.32.0.1",  # just past 172.16/12
    "100.128.0.1",  # just past 100.64/10
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]


@pytest.mark.parametrize(("address", "reason"), sorted(REFUSED.items()))
def test_non_public_addresses_are_refused_with_their_class(address: str, reason: str) -> None:
    assert why_not_public(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert why_not_public(ipaddress.ip_address(address)) is None


def test_a_scoped_ipv6_address_is_refused() -> None:
    assert why_not_public(ipaddress.ip_address("fe80::1%eth0")) == "scoped"


def fixed(*answers: str):  # type: ignore[no-untyped-def]
    return lambda host, port: list(answers)


def test_resolve_checks_every_answer_and_returns_the_first() -> None:
    assert Guard(resolver=fixed("8.8.8.8", "1.1.1.1")).resolve("cdn.example", 443) == "8.8.8.8"
    with pytest.raises(FetchRefused) as refused:
        Guard(resolver=fixed("8.8.8.8", "10.0.0.5")).resolve("cdn.example", 443)
    assert str(refused.value) == "refused: cdn.example (10.0.0.5) is not a public address (private)"


def test_allow_private_lets_everything_through() -> None:
    guard = Guard(allow_private=True, resolver=fixed("127.0.0.1"))
    assert guard.resolve("localhost", 80) == "127.0.0.1"


def test_allowed_ranges_are_exact() -> None:
    guard = Guard(allowed=(ipaddress.ip_network("127.0.0.2/32"),))
    assert guard.refusal(ipaddress.ip_address("127.0.0.2")) is None
    assert guard.refusal(ipaddress.ip_address("127.0.0.1")) == "loopback"
    assert guard.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) == "loopback"


def test_unresolvable_and_unusable_answers() -> None:
    def broken(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(FetchError, match=r"could not resolve nowhere\.example"):
        Guard(resolver=broken).resolve("nowhere.example", 80)
    with pytest.raises(FetchError, match="could not resolve"):
        Guard(resolver=fixed()).resolve("nowhere.example", 80)
    with pytest.raises(FetchRefused, match="unusable address"):
        Guard(resolver=fixed("not-an-ip")).resolve("odd.example", 80)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://8.8.8.8/video.mp4", "only http and https"),
        ("gopher://8.8.8.8:70/_", "only http and https"),
        ("http:///no-host", "has no host"),
        ("http://8.8.8.8:99999/", "not a valid URL"),
        ("http://127.0.0.1:9/x?sig=secret", "127.0.0.1 is not a public address (loopback)"),
        ("http://[::1]:9/x", "::1 is not a public address (loopback)"),
        ("http://[::ffff:7f00:1]:9/x", "(loopback)"),
        ("http://0x7f000001/x", "(loopback)"),  # the resolver reads numeric forms too
    ],
)
def test_bad_links_are_refused_before_any_connection(url: str, message: str) -> None:
    with pytest.raises(FetchRefused) as refused, checked_get(url, Guard(), timeout=(1, 1)):
        pass
    assert message in str(refused.value)
    assert "sig=" not in str(refused.value)


# -- the pinned connection keeps TLS checking the URL's name ------------------------------------


@pytest.fixture
def tls_origin(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """An HTTPS server on 127.0.0.1 whose self-signed certificate names cdn.test only."""
    assert shutil.which("openssl"), "the TLS test makes its certificate with Debian's openssl"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=cdn.test",
         "-addext", "subjectAltName=DNS:cdn.test"],
        check=True, capture_output=True,
    )  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = self.headers.get("Host", "").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05), daemon=True)
    thread.start()
    yield server.server_address[1], str(cert)
    server.shutdown()
    server.server_close()


@pytest.mark.slow  # starts a process
def test_a_pinned_https_connection_still_verifies_the_host_name(
    tls_origin: tuple[int, str],
) -> None:
    port, ca = tls_origin
    session = _pinned_session("127.0.0.1")  # as if cdn.test had resolved to 127.0.0.1
    session.verify = ca
    with session:
        answer = session.get(f"https://cdn.test:{port}/v.mp4", timeout=(2, 2))
        assert answer.status_code == 200
        assert answer.text == f"cdn.test:{port}"  # Host header: the name, not the address
        with pytest.raises(requests.exceptions.SSLError):  # the certificate does not name it
            session.get(f"https://other.test:{port}/v.mp4", timeout=(2, 2))
