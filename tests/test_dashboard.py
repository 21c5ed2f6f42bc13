"""The dashboard over HTTP (Flask's test client on SQLite, and PostgreSQL when set):
the list, its tabs, search and pages; outside URLs as links; the detail; the form; CSRF.
Signing in: tests/test_sign_in.py.

The browser tests (tests/browser/) drive the same pages in Chromium.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import func, select, update

from tests.support.dashboard import PNG, add_task, csrf_of, get, row_ids
from tests.support.scripted import ScriptedUpstream
from tests.support.urls import browser_reads
from tracker.db import Database
from tracker.tasks.models import StateCount, Task, TaskEvent

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes"'
EVIL = "evil.example"


# -- helpers (the browser tests use them too) -----------------------------------------------


def tab_count(page: str, label: str) -> int:
    match = re.search(rf'>{label} <span class="count">(\d+)</span>', page)
    assert match, f"a tab {label!r}"
    return int(match.group(1))


def event_count(db: Database) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(TaskEvent)) or 0


def task_count(db: Database) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(Task)) or 0


# -- the list -------------------------------------------------------------------------------


def test_empty_list_says_so_and_offers_the_form(client: FlaskClient) -> None:
    status, page = get(client, "/")
    assert status == 200
    assert "No tasks yet" in page
    assert 'href="/tasks/new"' in page
    assert tab_count(page, "All") == 0


def test_list_is_newest_first_with_state_badge_prompt_kind_ids_and_thumbnail(
    client: FlaskClient, db: Database
) -> None:
    first = add_task(db, "first prompt", state="completed", upstream_id="up-1")
    second = add_task(
        db,
        "second prompt",
        state="processing",
        source="up-1",
        upstream_id="up-2",
        thumbnail_url="https://cdn.example/t.jpg",
    )
    status, page = get(client, "/")
    assert status == 200
    assert row_ids(page) == [second, first]
    assert '<span class="badge state-processing">processing</span>' in page
    assert "second prompt" in page and ">extend<" in page and ">generate<" in page
    assert 'title="up-1"' in page and 'title="up-2"' in page
    assert 'src="https://cdn.example/t.jpg"' in page
    assert 'data-live-url="/"' in page and "dashboard.js" in page


def test_tabs_show_the_counters_not_a_count_of_rows(client: FlaskClient, db: Database) -> None:
    for state in ("completed", "completed", "failed", "processing"):
        add_task(db, state=state)
    _, page = get(client, "/")
    assert tab_count(page, "All") == 4
    assert tab_count(page, "completed") == 2
    assert tab_count(page, "failed") == 1
    assert tab_count(page, "queued") == 0
    # the tabs read state_counts (kept by lifecycle), so they show what it holds
    with db.write() as session:
        session.execute(update(StateCount).where(StateCount.state == "failed").values(count=1234))
    _, page = get(client, "/")
    assert tab_count(page, "failed") == 1234


def test_state_filter(client: FlaskClient, db: Database) -> None:
    done = [add_task(db, state="completed") for _ in range(3)]
    add_task(db, state="failed")
    status, page = get(client, "/?state=completed")
    assert status == 200
    assert row_ids(page) == done[::-1]
    assert 'href="/?state=completed" class="tab-completed" aria-current="page"' in page
    _, page = get(client, "/?state=timed_out")
    assert row_ids(page) == [] and "No timed out tasks" in page
    _, page = get(client, "/?state=bogus")  # an unknown state shows everything
    assert len(row_ids(page)) == 4


def test_keyset_pages_of_fifty(client: FlaskClient, db: Database) -> None:
    ids = [add_task(db, f"task number {n}", state="pending") for n in range(120)]
    newest_first = ids[::-1]
    _, page = get(client, "/")
    assert row_ids(page) == newest_first[:50]
    cursor = re.search(r'rel="next" href="/\?cursor=(\d+)"', page)
    assert cursor and int(cursor.group(1)) == newest_first[49]
    _, page = get(client, f"/?cursor={cursor.group(1)}")
    assert row_ids(page) == newest_first[50:100]
    cursor = re.search(r'rel="next" href="/\?cursor=(\d+)"', page)
    assert cursor
    _, page = get(client, f"/?cursor={cursor.group(1)}")
    assert row_ids(page) == newest_first[100:]
    assert 'rel="next"' not in page and "« Newest" in page
    # a new task does not shift the later pages (a cursor, not an offset)
    add_task(db, state="pending")
    _, again = get(client, f"/?cursor={newest_first[49]}")
    assert row_ids(again) == newest_first[50:100]
    # the cursor keeps the filter
    add_task(db, state="failed")
    _, page = get(client, "/?state=pending")
    assert "/?state=pending&amp;cursor=" in page


def test_a_bad_cursor_is_ignored(client: FlaskClient, db: Database) -> None:
    add_task(db)
    for cursor in ("abc", "-5", "99999999999999999999999", ""):
        status, page = get(client, f"/?cursor={cursor}")
        assert status == 200 and len(row_ids(page)) == 1


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


# -- search ---------------------------------------------------------------------------------


@pytest.fixture
def searchable(db: Database) -> dict[str, int]:
    return {
        "sunset": add_task(db, "A red sunset over the harbour", state="completed",
                           upstream_id="7f3c9a10-aaaa-4bbb-8ccc-000000000001"),
        "forest": add_task(db, "Misty forest, slow dolly shot", state="failed",
                           upstream_id="b2d4e6f8-aaaa-4bbb-8ccc-000000000002"),
        "extend": add_task(db, "Continue: the sun sets further", state="processing",
                           source="7f3c9a10-aaaa-4bbb-8ccc-000000000001"),
        "café": add_task(db, "Un café à Paris, pluie fine", state="queued"),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sunset", ["sunset"]),
        ("SUNSET", ["sunset"]),
        ("harbour sunset", ["sunset"]),  # every word, in any order
        ("sun", ["extend", "sunset"]),  # the last word may be the start of one
        ("red suns", ["sunset"]),
        ("harbou", ["sunset"]),  # a half-typed word longer than the prefix indexes
        ("harbour", ["sunset"]),
        ("dolly shot", ["forest"]),
        ("Continue", ["extend"]),
        ("forest dolly", ["forest"]),
        ("cafe", ["café"]),  # accents folded on SQLite; PostgreSQL's 'simple' keeps them
        ("café", ["café"]),
        ("7f3c9a10-aaaa-4bbb-8ccc-000000000001", ["extend", "sunset"]),  # upstream and source
        ("b2d4", ["forest"]),  # an id prefix
        ("nothing-like-this", []),
    ],
)
def test_search_prompts_and_ids(
    client: FlaskClient,
    db: Database,
    searchable: dict[str, int],
    query: str,
    expected: list[str],
) -> None:
    if query == "cafe" and db.is_postgres:
        expected = []
    status, page = get(client, "/", query_string={"q": query})
    assert status == 200
    wanted = sorted((searchable[name] for name in expected), reverse=True)
    assert row_ids(page) == wanted
    if not expected:
        assert "Nothing matches" in page


def test_search_by_local_id_and_with_a_state(
    client: FlaskClient, db: Database, searchable: dict[str, int]
) -> None:
    forest = searchable["forest"]
    _, page = get(client, f"/?q=%23{forest}")
    assert forest in row_ids(page)
    _, page = get(client, f"/?q={forest}")
    assert forest in row_ids(page)
    _, page = get(client, "/?q=sun&state=completed")
    assert row_ids(page) == [searchable["sunset"]]
    # the tabs keep the search
    assert 'href="/?state=failed&amp;q=sun"' in page


def test_search_by_id_with_a_state_uses_both(
    client: FlaskClient, db: Database, searchable: dict[str, int]
) -> None:
    source = "7f3c9a10-aaaa-4bbb-8ccc-000000000001"
    _, page = get(client, "/", query_string={"q": source, "state": "processing"})
    assert row_ids(page) == [searchable["extend"]]
    _, page = get(client, "/", query_string={"q": source[:8], "state": "completed"})
    assert row_ids(page) == [searchable["sunset"]]
    _, page = get(client, "/", query_string={"q": source, "state": "failed"})
    assert row_ids(page) == []


def test_search_results_are_paged_by_cursor(client: FlaskClient, db: Database) -> None:
    matching = [add_task(db, f"glacier shot {n}") for n in range(60)]
    add_task(db, "something else")
    _, page = get(client, "/?q=glacier")
    assert row_ids(page) == matching[::-1][:50]
    cursor = re.search(r'rel="next" href="/\?q=glacier&amp;cursor=(\d+)"', page)
    assert cursor
    _, page = get(client, f"/?q=glacier&cursor={cursor.group(1)}")
    assert row_ids(page) == matching[::-1][50:]


def test_search_finds_new_and_not_deleted_rows(client: FlaskClient, db: Database) -> None:
    task_id = add_task(db, "ephemeral aurora")
    _, page = get(client, "/?q=aurora")
    assert row_ids(page) == [task_id]
    with db.write() as session:
        session.execute(TaskEvent.__table__.delete().where(TaskEvent.task_id == task_id))
        session.execute(Task.__table__.delete().where(Task.id == task_id))
    _, page = get(client, "/?q=aurora")
    assert row_ids(page) == []


def test_search_input_with_operators_is_only_words(client: FlaskClient, db: Database) -> None:
    task_id = add_task(db, "neon city at night")
    for query in ['"neon', "neon*", "neon AND NOT", "neon OR city", "neon & | ! ( ) :*", "'neon'"]:
        status, page = get(client, "/", query_string={"q": query})
        assert status == 200, query
    _, page = get(client, "/", query_string={"q": "neon*"})
    assert row_ids(page) == [task_id]
    status, _ = get(client, "/", query_string={"q": "%_\\"})
    assert status == 200


def test_searching_for_a_task_number_past_every_id_finds_nothing(
    client: FlaskClient, db: Database
) -> None:
    add_task(db, "a harbour")
    for query in ("%233000000000", "%23999999999999999999", "3000000000"):
        status, page = get(client, f"/?q={query}")
        assert status == 200, query
        assert "Nothing matches" in page


# -- escaping -------------------------------------------------------------------------------


def test_markup_from_users_and_the_upstream_shows_as_text(
    client: FlaskClient, db: Database
) -> None:
    task_id = add_task(
        db,
        HOSTILE,
        state="failed",
        upstream_id="up-x",
        failure_reason=HOSTILE,
        video_url="javascript:alert(1)",
        thumbnail_url="javascript:alert(2)",
        events=[{"state": "failed", "failure_reason": HOSTILE}],
    )
    for path in ("/", f"/tasks/{task_id}", "/?q=script"):
        status, page = get(client, path)
        assert status == 200
        assert "<script>alert" not in page and "<img src=x" not in page
        assert not re.search(r'(href|src|poster)="\s*javascript:', page, re.IGNORECASE)
    _, page = get(client, f"/tasks/{task_id}")
    assert str(escape(HOSTILE)) in page
    _, listing = get(client, "/")
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in listing


# -- outside URLs become links only when absolute http(s), as a browser reads them (issue 9) --


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


# -- the detail -----------------------------------------------------------------------------


def test_detail_has_fields_video_chain_and_timeline(client: FlaskClient, db: Database) -> None:
    parent = add_task(
        db,
        "the original",
        state="completed",
        upstream_id="parent-up",
        video_url="https://cdn.example/parent.mp4",
        thumbnail_url="https://cdn.example/parent.jpg",
    )
    task_id = add_task(
        db,
        "the extension",
        state="completed",
        source="parent-up",
        upstream_id="child-up",
        upstream_state="completed",
        video_url="https://cdn.example/child.mp4",
        events=[{"id": "child-up", "state": "completed", "video": {"url": "x"}}],
    )
    grandchild = add_task(db, "one more", state="processing", source="child-up")
    status, page = get(client, f"/tasks/{task_id}")
    assert status == 200
    assert (
        '<video controls preload="metadata" playsinline src="https://cdn.example/child.mp4"' in page
    )
    for text in ("the extension", "child-up", "parent-up", "Attempts", "Created", "Timeline"):
        assert text in page
    assert f'href="/tasks/{parent}"' in page  # the task it extends
    assert f'href="/tasks/{grandchild}"' in page  # the extension made from it
    assert (
        page.count('<details data-key="event-') == 1 and "&#34;child-up&#34;" in page
    )  # the raw payload
    assert ">submit<" in page and ">callback<" in page
    assert 'href="/tasks/new?source=child-up">Extend</a>' in page
    assert "Poll now" in page and "Resend" not in page
    # the archived copy wins once there is one
    with db.write() as session:
        session.execute(update(Task).where(Task.id == task_id).values(media_path="x/1.mp4"))
    _, page = get(client, f"/tasks/{task_id}")
    assert f'src="/media/{task_id}/video"' in page
    # a task whose source this tracker never made says so
    _, page = get(client, f"/tasks/{parent}")
    assert "Extended by" in page and f'href="/tasks/{task_id}"' in page


def test_detail_of_a_rejected_task_offers_resend_not_extend(
    client: FlaskClient, db: Database
) -> None:
    task_id = add_task(db, state="rejected", failure_reason="upstream refused: Prompt is too short")
    _, page = get(client, f"/tasks/{task_id}")
    assert "Resend" in page and ">Extend<" not in page and "Poll now" not in page
    assert "Prompt is too short" in page
    assert "data-live-url" not in page  # a final task is not refreshed
    live_id = add_task(db, state="processing", upstream_id="u")
    _, page = get(client, f"/tasks/{live_id}")
    assert f'data-live-url="/tasks/{live_id}"' in page


def test_unknown_task_is_a_404_page(client: FlaskClient) -> None:
    status, page = get(client, "/tasks/987654")
    assert status == 404
    assert "No such task" in page and "<html" in page
    status, _ = get(client, "/tasks/99999999999999999999999")
    assert status == 404


def test_live_requests_get_only_the_region(client: FlaskClient, db: Database) -> None:
    task_id = add_task(db, state="processing")
    response = client.get("/?state=processing", headers={"X-Live": "1"})
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert body.lstrip().startswith('<section id="task-list"') and "<html" not in body
    assert row_ids(body) == [task_id]
    assert response.headers["Cache-Control"] == "no-store"
    response = client.get(f"/tasks/{task_id}", headers={"X-Live": "1"})
    assert response.get_data(as_text=True).lstrip().startswith('<article id="task-detail"')
    response = client.get("/tasks/424242", headers={"X-Live": "1"})
    assert response.status_code == 404 and "<html" not in response.get_data(as_text=True)


# -- CSRF -----------------------------------------------------------------------------------


def _actions(db: Database) -> tuple[int, int]:
    rejected = add_task(db, state="rejected", failure_reason="upstream refused: no")
    pending = add_task(db, state="pending", upstream_id="up-p")
    return rejected, pending


@pytest.mark.parametrize("token", [None, "", "wrong-token-of-the-right-length-0123456789ab"])
def test_posts_without_the_csrf_token_get_400_and_change_nothing(
    client: FlaskClient, db: Database, token: str | None
) -> None:
    rejected, pending = _actions(db)
    get(client, "/tasks/new")  # the session has a token; the posts below do not carry it
    tasks, events = task_count(db), event_count(db)
    form = {} if token is None else {"csrf_token": token}
    posts = [
        (f"/tasks/{rejected}/resend", form),
        (f"/tasks/{pending}/poll", form),
        ("/tasks/new", {**form, "user_prompt": "should not be created"}),
        ("/logout", form),
    ]
    for path, data in posts:
        response = client.post(path, data=data, headers={"Accept": "text/html"})
        assert response.status_code == 400, path
        assert "Nothing was changed" in response.get_data(as_text=True)
    assert (task_count(db), event_count(db)) == (tasks, events)
    with db.read() as session:
        assert session.get(Task, rejected).state == "rejected"  # type: ignore[union-attr]


def test_a_token_from_another_session_is_refused(
    make_app: Callable[..., Flask], db: Database
) -> None:
    app = make_app()
    alice, mallory = app.test_client(), app.test_client()
    rejected, _ = _actions(db)
    _, page = get(mallory, "/tasks/new")
    get(alice, "/tasks/new")
    response = alice.post(f"/tasks/{rejected}/resend", data={"csrf_token": csrf_of(page)})
    assert response.status_code == 400
    with db.read() as session:
        assert session.get(Task, rejected).state == "rejected"  # type: ignore[union-attr]


def test_resend_with_the_token_queues_the_task_again(client: FlaskClient, db: Database) -> None:
    rejected, _ = _actions(db)
    _, page = get(client, f"/tasks/{rejected}")
    response = client.post(f"/tasks/{rejected}/resend", data={"csrf_token": csrf_of(page)})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/tasks/{rejected}")
    with db.read() as session:
        task = session.get(Task, rejected)
        assert task is not None and task.state == "queued"  # nothing listens upstream: queued
    _, page = get(client, f"/tasks/{rejected}")
    assert "resent as attempt" in page and "Queued again" in page
    # a second resend is refused politely: it is not rejected any more
    token = csrf_of(get(client, "/tasks/new")[1])
    client.post(f"/tasks/{rejected}/resend", data={"csrf_token": token})
    _, page = get(client, f"/tasks/{rejected}")
    assert "only a rejected task can be resent" in page


def test_poll_now_without_an_upstream_id_explains(client: FlaskClient, db: Database) -> None:
    task_id = add_task(db, state="queued")
    token = csrf_of(get(client, "/tasks/new")[1])
    client.post(f"/tasks/{task_id}/poll", data={"csrf_token": token})
    _, page = get(client, f"/tasks/{task_id}")
    assert "no upstream id yet" in page
    response = client.post("/tasks/777777/poll", data={"csrf_token": token})
    assert response.status_code == 404


def test_poll_now_asks_the_upstream(live: Callable[..., Any], sim: Any, db: Database) -> None:
    import requests

    server = live(luma_api_base=sim.url, callbacks=False)
    answer = requests.post(f"{server.url}/api/tasks", json={"user_prompt": "poll me"}, timeout=10)
    task_id = answer.json()["id"]
    browser = requests.Session()
    page = browser.get(f"{server.url}/tasks/{task_id}", timeout=5).text
    before = event_count(db)
    response = browser.post(
        f"{server.url}/tasks/{task_id}/poll", data={"csrf_token": csrf_of(page)}, timeout=10
    )
    assert response.status_code == 200 and "Asked the upstream" in response.text
    assert event_count(db) == before + 1
    assert ">poll<" in response.text
    # and without the token: 400, no query, no event
    response = browser.post(f"{server.url}/tasks/{task_id}/poll", timeout=10)
    assert response.status_code == 400 and event_count(db) == before + 1


# -- the form -------------------------------------------------------------------------------


def test_the_form_shows_every_error_beside_its_field_and_keeps_the_values(
    client: FlaskClient, db: Database
) -> None:
    _, page = get(client, "/tasks/new")
    response = client.post(
        "/tasks/new",
        data={
            "csrf_token": csrf_of(page),
            "source_task_id": "not a valid id!",
            "user_prompt": "   ",
            "image_url": "ftp://nope",
            "image_end_url": "https://ok.example/end.png",
            "aspect_ratio": "16:9",
        },
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    for field in ("source_task_id", "user_prompt", "image_url", "aspect_ratio"):
        assert f'id="{field}-error"' in page, field
    # each error names its field by the form's label (the API's JSON keeps the field names)
    said = dict(re.findall(r'<p class="field-error" id="([a-z_]+)-error">([^<]+)</p>', page))
    assert said == {
        "source_task_id": "Source task id is not a valid task id",
        "user_prompt": "Prompt must not be empty",
        "image_url": "Start image must be an http(s) URL or base64 image data",
        "aspect_ratio": "Aspect ratio is not supported when extending a video",
    }
    assert '<label for="user_prompt">Prompt</label>' in page
    assert 'value="not a valid id!"' in page and 'value="https://ok.example/end.png"' in page
    assert "image_end_url-error" not in page
    assert task_count(db) == 0


def test_the_form_submits_an_extend(client: FlaskClient, db: Database) -> None:
    _, page = get(client, "/tasks/new?source=abc-123")
    assert 'value="abc-123"' in page and "Extend a video" in page
    response = client.post(
        "/tasks/new",
        data={
            "csrf_token": csrf_of(page),
            "source_task_id": "abc-123",
            "user_prompt": "keep going <b>north</b>",
            "expand_prompt": "false",
            "image_url": "https://img.example/start.png",
            "image_end_url_file": (__import__("io").BytesIO(PNG), "end.png"),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 303
    task_id = int(response.headers["Location"].rsplit("/", 1)[1])
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        assert (task.kind, task.source_task_id, task.user_prompt) == (
            "extend",
            "abc-123",
            "keep going <b>north</b>",
        )
        assert task.expand_prompt is False
        assert task.image_url == "https://img.example/start.png"
        assert task.image_end_url == "data:image/png;base64," + base64.b64encode(PNG).decode()
    _, page = get(client, f"/tasks/{task_id}")
    assert f"Task {task_id} submitted." in page


def test_the_form_refuses_files_that_are_not_images(client: FlaskClient, db: Database) -> None:
    import io

    _, page = get(client, "/tasks/new")
    response = client.post(
        "/tasks/new",
        data={
            "csrf_token": csrf_of(page),
            "user_prompt": "a new generation",
            "image_url": "https://img.example/a.png",
            "image_url_file": (io.BytesIO(PNG), "a.png"),
            "image_end_url_file": (io.BytesIO(b"#!/bin/sh\necho hi\n"), "x.png"),
            "loop": "true",
            "duration": "five",
        },
        content_type="multipart/form-data",
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "give a URL or a file, not both" in page
    assert "choose a PNG, JPEG, GIF or WebP image" in page
    assert "Duration must look like" in page
    assert task_count(db) == 0


# -- small parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://cdn.example/v.mp4", "https://cdn.example/v.mp4"),
        ("http://127.0.0.1:9/v.mp4", "http://127.0.0.1:9/v.mp4"),
        ("/media/3/video", "/media/3/video"),
        ("javascript:alert(1)", None),
        (" JavaScript:alert(1)", None),
        ("data:text/html,<b>", None),
        ("//evil.example/x", None),
        ("", None),
        (None, None),
    ],
)
def test_only_web_links_reach_href_and_src(url: str | None, shown: str | None) -> None:
    from tracker.web.pages import safe_url

    assert safe_url(url) == shown


def test_ages_read_like_a_person_would_say_them() -> None:
    from datetime import timedelta

    from tracker.tasks.models import utcnow
    from tracker.web.pages import ago

    now = utcnow()
    assert ago(now, now) == "just now"
    assert ago(now - timedelta(seconds=42), now) == "42 s ago"
    assert ago(now - timedelta(minutes=5), now) == "5 min ago"
    assert ago(now - timedelta(hours=3), now) == "3 h ago"
    assert ago(now - timedelta(days=2), now) == "2 d ago"
    assert ago(None) == "—"
