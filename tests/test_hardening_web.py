"""Issue 9, items 1 and 8 (the dashboard's part): what an attack review found, pinned.

- the login's `next` and every outside URL on a page are judged as a browser reads them
  (tabs and newlines dropped, a backslash read as a slash), so none leaves the site;
- numbers from the query string are plain ASCII digits that fit the id column: `²` (which
  `str.isdigit` accepts and `int` refuses), 5,000 digits, or an id past PostgreSQL's 32-bit
  column give the first page or "nothing matches", never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.dashboard import add_task, csrf_of, get, row_ids
from tests.support.scripted import ScriptedUpstream
from tests.support.servers import SHUTDOWN_POLL
from tests.support.urls import browser_reads
from tracker import create_app
from tracker.db import Database
from tracker.settings import Settings
from tracker.storage.download import TooLarge, download
from tracker.storage.netguard import Guard

TOKEN = "hardening-admin-token-0123456789"
EVIL = "evil.example"

# targets that start with one slash but that a browser (or urlsplit, run by werkzeug on a
# Location) reads as another site, or that cannot be put in a header at all
OFF_SITE_TARGETS = [
    f"/\t/{EVIL}",
    f"/\n/{EVIL}",
    f"/\r\n/{EVIL}",
    f"\t//{EVIL}",
    f"/\\/{EVIL}",
    f"\\\\{EVIL}",
    f"/\x00/{EVIL}",
    f"https:/\t/{EVIL}",
    "/\n/x",
]
LOCAL_TARGETS = ["/tasks/new?source=up-1", "/?state=failed&q=harbour", "/tasks/7"]


class _Links(HTMLParser):
    """Every URL a page puts in href, src or poster (entities decoded, as a browser does)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("href", "src", "poster") and v is not None]


def links_of(page: str) -> list[str]:
    parser = _Links()
    parser.feed(page)
    return parser.urls


def assert_no_link_leaves_quietly(page: str) -> None:
    """A link either stays on this site or is an absolute http(s) URL: none reaches another
    host through a relative-looking path."""
    for url in links_of(page):
        parts = browser_reads(url)
        assert EVIL not in parts.netloc, url
        assert not parts.netloc or parts.scheme in ("http", "https"), url


@pytest.fixture
def make_app(make_settings: Callable[..., Settings], db: Database) -> Callable[..., Flask]:
    def build(**overrides: Any) -> Flask:
        return create_app(make_settings(**overrides), db=db)

    return build


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app().test_client()


# -- item 1: the open redirect after sign-in ------------------------------------------------


@pytest.mark.parametrize("target", OFF_SITE_TARGETS)
def test_signing_in_never_sends_the_browser_off_site(
    make_app: Callable[..., Flask], target: str
) -> None:
    client = make_app(api_token=TOKEN).test_client()
    response = client.get("/login", query_string={"next": target})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    hidden = re.search(r'name="next" value="([^"]*)"', page)
    assert hidden and hidden.group(1) == "/"
    response = client.post(
        "/login", data={"csrf_token": csrf_of(page), "token": TOKEN, "next": target}
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    # signed in already: /login sends the browser on at once, to the same safe place
    response = client.get("/login", query_string={"next": target})
    assert response.status_code == 302 and response.headers["Location"] == "/"


@pytest.mark.parametrize("target", OFF_SITE_TARGETS)
def test_without_a_token_login_sends_on_only_to_this_site(client: FlaskClient, target: str) -> None:
    response = client.get("/login", query_string={"next": target})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_the_raw_query_strings_of_the_report_redirect_home(client: FlaskClient) -> None:
    for path in (f"/login?next=/%09/{EVIL}", "/login?next=/%0a/x"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"] == "/", path


@pytest.mark.parametrize("target", LOCAL_TARGETS)
def test_a_path_on_this_site_is_still_where_signing_in_leads(
    make_app: Callable[..., Flask], target: str
) -> None:
    client = make_app(api_token=TOKEN).test_client()
    _, page = get(client, "/login", query_string={"next": target})
    response = client.post(
        "/login", data={"csrf_token": csrf_of(page), "token": TOKEN, "next": target}
    )
    assert response.status_code == 303 and response.headers["Location"] == target


# -- item 1: user-given URLs become links only when absolute http(s) --------------------------


SNEAKY_IMAGE = f"/\t/{EVIL.replace('.', '')}" + "A" * 40  # valid "bare base64" to the API


def test_an_image_url_that_a_browser_reads_as_another_site_is_no_link(
    make_app: Callable[..., Flask], upstream: ScriptedUpstream
) -> None:
    client = make_app(luma_api_base=upstream.url).test_client()
    response = client.post(
        "/api/tasks",
        json={"user_prompt": "a harbour", "image_url": SNEAKY_IMAGE, "image_end_url": SNEAKY_IMAGE},
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    task_id = response.get_json()["id"]
    status, page = get(client, f"/tasks/{task_id}")
    assert status == 200
    for url in links_of(page):
        assert "evilexample" not in browser_reads(url).netloc, url
    assert "<code>/\t/evilexample" in page  # still shown, as text


def test_upstream_urls_that_leave_the_site_by_a_path_are_neither_links_nor_sources(
    client: FlaskClient, db: Database
) -> None:
    task_id = add_task(
        db,
        state="completed",
        upstream_id="up-sneaky",
        video_url=f"/\t/{EVIL}/v.mp4",
        thumbnail_url=f"/\\{EVIL}/t.jpg",
    )
    for path in ("/", f"/tasks/{task_id}"):
        status, page = get(client, path)
        assert status == 200, path
        assert_no_link_leaves_quietly(page)
    _, page = get(client, f"/tasks/{task_id}")
    assert "<video" not in page  # no player for a link that is not one
    assert f"<code>/ /{EVIL}/v.mp4</code>" in page  # shown as text, its spaces evened


def test_a_url_that_cannot_be_parsed_is_shown_as_text_not_a_broken_page(
    make_app: Callable[..., Flask], upstream: ScriptedUpstream, db: Database
) -> None:
    """`http://[` passes the API's image pattern; urlsplit() raises on it (found by fuzzing)."""
    client = make_app(luma_api_base=upstream.url).test_client()
    response = client.post("/api/tasks", json={"user_prompt": "x", "image_url": "http://[oops"})
    assert response.status_code == 201, response.get_data(as_text=True)
    task_id = response.get_json()["id"]
    status, page = get(client, f"/tasks/{task_id}")
    assert status == 200 and "<code>http://[oops</code>" in page
    add_task(db, state="processing", thumbnail_url="https://[::1/t.jpg", video_url="http://[v")
    status, page = get(client, "/")
    assert status == 200 and len(row_ids(page)) == 2


def test_absolute_web_urls_are_still_links(client: FlaskClient, db: Database) -> None:
    task_id = add_task(
        db,
        state="completed",
        upstream_id="up-plain",
        image_url="https://images.example/start.png",
        video_url="https://cdn.example/v.mp4",
        thumbnail_url="http://cdn.example/t.jpg",
    )
    _, page = get(client, f"/tasks/{task_id}")
    urls = links_of(page)
    for url in (
        "https://images.example/start.png",
        "https://cdn.example/v.mp4",
        "http://cdn.example/t.jpg",
    ):
        assert url in urls
    assert '<video controls preload="metadata" playsinline src="https://cdn.example/v.mp4"' in page


# -- item 8: numbers in the query string ----------------------------------------------------


@pytest.mark.parametrize(
    "cursor",
    [
        "%C2%B2",  # "²": str.isdigit() says yes, int() says no
        "%D9%A3",  # "٣", an Arabic-Indic 3: int() takes it, but it is no cursor we make
        "1" * 5000,  # past int()'s 4,300-digit limit
        "3000000000",  # past tasks.id (32-bit on PostgreSQL): before every task
        "99999999999999999999",
        "-5",
        "0x10",
    ],
)
def test_a_cursor_that_is_not_one_of_ours_gives_the_first_page(
    client: FlaskClient, db: Database, cursor: str
) -> None:
    ids = [add_task(db, f"task {n}") for n in range(4)]
    status, page = get(client, f"/?cursor={cursor}")
    assert status == 200
    assert row_ids(page) == ids[::-1]
    live = client.get(f"/?cursor={cursor}&q=task&state=queued", headers={"X-Live": "1"})
    assert live.status_code == 200


def test_searching_for_a_task_number_past_every_id_finds_nothing(
    client: FlaskClient, db: Database
) -> None:
    add_task(db, "a harbour")
    for query in ("%233000000000", "%23999999999999999999", "3000000000"):
        status, page = get(client, f"/?q={query}")
        assert status == 200, query
        assert "Nothing matches" in page


# -- the same isdigit() trap in the archive's Content-Length check --------------------------


class _OddLength(BaseHTTPRequestHandler):
    """`/sup`: `Content-Length: ²` (byte 0xB2, read as latin-1); `/long`: 5,000 nines."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "\u00b2" if self.path == "/sup" else "9" * 5000)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"video bytes")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def odd_origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OddLength)
    thread = Thread(target=server.serve_forever, args=(SHUTDOWN_POLL,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_content_length_of_odd_digits_is_no_crash_of_the_archive(
    odd_origin: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings, guard = make_settings(), Guard(allow_private=True)
    dest = tmp_path / "v.mp4"
    size = download(f"{odd_origin}/sup", dest, settings, guard)  # no length: the body counts
    assert size == len(b"video bytes") and dest.read_bytes() == b"video bytes"
    with pytest.raises(TooLarge):  # announced far past the cap
        download(f"{odd_origin}/long", tmp_path / "long.mp4", settings, guard)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
