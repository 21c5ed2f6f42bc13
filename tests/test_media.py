"""Archival over real HTTP on loopback: the simulator's presigned links, and a tiny origin
server of our own for the faults the simulator does not make (lying lengths, redirects,
bodies past the cap). Every test runs on SQLite and, when TEST_DATABASE_URL is set, PostgreSQL.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy.exc import OperationalError

from tests.support.factory import load_task
from tests.support.media import SAMPLE, SAMPLE_JPG, Origin, add_completed, sha, sim_completed
from tests.support.servers import SHUTDOWN_POLL
from tests.support.waiting import wait_for
from tracker.db import Database
from tracker.flows import archive as media
from tracker.settings import Settings
from tracker.storage import download as download_module
from tracker.storage.download import DownloadError, TooLarge, download
from tracker.storage.netguard import Guard
from tracker.tasks import archives
from tracker.tasks.models import Task, utcnow
from tracker.tasks.schema import task_json
from tracker.upstream.client import LumaClient

NOWHERE = "http://127.0.0.1:9"  # an upstream nobody listens on


# -- a tiny origin server -----------------------------------------------------------------------


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin("127.0.0.1")
    yield server
    server.stop()


@pytest.fixture
def public_origin() -> Iterator[Origin]:
    """On 127.0.0.2: the tests' `PUBLIC_GUARD` lets this one address stand in for a public host."""
    server = Origin("127.0.0.2")
    yield server
    server.stop()


# allows 127.0.0.2 only; every other loopback, private, ... address is still refused
PUBLIC_GUARD = Guard(allowed=(ipaddress.ip_network("127.0.0.2/32"),))


# -- helpers ------------------------------------------------------------------------------------


def make_due(db: Database, task_id: int) -> None:
    """What the passing of the backoff delay does, without waiting for it."""
    with db.write() as session:
        task = session.get(Task, task_id)
        assert task is not None
        task.next_archive_at = utcnow() - timedelta(seconds=1)


def media_files(settings: Settings) -> list[str]:
    root = Path(settings.media_dir)
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# -- archiving from the simulator ---------------------------------------------------------------


def test_archives_video_and_thumbnail_byte_for_byte(
    db: Database, sim: Any, make_settings: Callable[..., Settings], caplog: Any
) -> None:
    settings = make_settings(luma_api_base=sim.url)
    upstream_id, client = sim_completed(sim)
    update = client.query(upstream_id).update
    task_id = add_completed(
        db, update.video_url, thumbnail_url=update.thumbnail_url, upstream_id=upstream_id
    )

    with caplog.at_level(logging.INFO, logger="tracker"):
        assert media.archive_due(db, settings, client) == 1

    task = load_task(db, task_id)
    assert task.state == "completed"
    assert task.media_path == f"{task_id}.mp4"  # relative to the media directory
    assert task.thumbnail_path == f"{task_id}.jpg"
    assert task.archived_at is not None and task.next_archive_at is None
    assert task.archive_error is None
    root = Path(settings.media_dir)
    assert sha((root / task.media_path).read_bytes()) == sha(SAMPLE)
    assert sha((root / task.thumbnail_path).read_bytes()) == sha(SAMPLE_JPG)
    assert media_files(settings) == [f"{task_id}.jpg", f"{task_id}.mp4"]  # no temp files
    assert task_json(task)["media_url"] == f"/media/{task_id}/video"
    lines = [r.getMessage() for r in caplog.records if r.name == "tracker.flows.archive"]
    assert f"archived task {task_id} video: {len(SAMPLE)} bytes" in lines
    assert not any("sig=" in line or "http" in line for line in caplog.messages)
    # the next pass has nothing to do
    assert media.archive_due(db, settings, client) == 0


def test_expired_link_gets_a_fresh_one_from_download_url(
    db: Database, sim: Any, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(luma_api_base=sim.url)
    upstream_id, client = sim_completed(sim)
    sim.link_ttl = -60  # links handed out now are already expired
    stale = client.query(upstream_id).update.video_url
    sim.link_ttl = 3600
    assert requests.get(stale, timeout=5).status_code == 403
    task_id = add_completed(db, stale, upstream_id=upstream_id)

    assert media.archive_due(db, settings, client) == 1

    task = load_task(db, task_id)
    assert sha((Path(settings.media_dir) / f"{task_id}.mp4").read_bytes()) == sha(SAMPLE)
    assert task.archive_error is None and task.archive_attempts == 0
    assert any(r.route == "download_url" for r in sim.requests)


def test_without_a_download_url_route_the_query_gives_the_fresh_link(
    db: Database, sim: Any, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(luma_api_base=sim.url)
    upstream_id, client = sim_completed(sim)
    sim.fail_next("download_url", status=404, body={"detail": "Not Found"})
    task_id = add_completed(
        db, sim.url + "/files/gone.mp4?expires=1&sig=x", upstream_id=upstream_id
    )

    assert media.archive_due(db, settings, client) == 1
    assert sha((Path(settings.media_dir) / f"{task_id}.mp4").read_bytes()) == sha(SAMPLE)


def test_a_failing_link_backs_off_then_gives_up(
    db: Database, origin: Origin, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    client = LumaClient(NOWHERE, "", connect_timeout=1, read_timeout=1)
    task_id = add_completed(db, origin.status("/v.mp4", 500))

    waits = []
    for attempt in range(1, media.MAX_ATTEMPTS):
        before = utcnow()
        assert media.archive_due(db, settings, client) == 0
        task = load_task(db, task_id)
        assert task.archive_attempts == attempt
        assert task.archive_error is not None and "HTTP 500" in task.archive_error
        assert "http" not in task.archive_error.replace("HTTP", "")  # no URL
        assert task.next_archive_at is not None and task.state == "completed"
        waits.append((task.next_archive_at - before).total_seconds())
        make_due(db, task_id)
    assert waits == sorted(waits) and waits[0] >= 0.8 * media.RETRY_BASE

    assert media.archive_due(db, settings, client) == 0
    task = load_task(db, task_id)
    assert task.archive_error.startswith(f"gave up after {media.MAX_ATTEMPTS} attempts")
    assert task.next_archive_at is None
    assert media_files(settings) == []


def test_a_task_completed_by_callback_is_archived_and_plays(
    db: Database, sim: Any, live: Any, make_settings: Callable[..., Settings]
) -> None:
    """The whole path: submit, the simulator's callback completes it, one pass archives it."""
    app = live(luma_api_base=sim.url)
    created = requests.post(
        f"{app.url}/api/tasks", json={"user_prompt": "waves on a pebble beach"}, timeout=5
    )
    assert created.status_code == 201
    task_id = created.json()["id"]
    wait_for(lambda: load_task(db, task_id).state == "completed")
    assert load_task(db, task_id).next_archive_at is not None  # lifecycle scheduled the copy

    settings = make_settings(luma_api_base=sim.url)
    client = LumaClient(sim.url, settings.luma_api_key)
    assert media.archive_due(db, settings, client) == 1

    shown = requests.get(f"{app.url}/api/tasks/{task_id}", timeout=5).json()
    assert shown["media_url"] == f"/media/{task_id}/video"
    played = requests.get(app.url + shown["media_url"], headers={"Range": "bytes=0-"}, timeout=5)
    assert played.status_code == 206 and sha(played.content) == sha(SAMPLE)


# -- serving with Range, behind the dashboard's door --------------------------------------------


def archived_task(db: Database, settings: Settings, origin: Origin) -> int:
    task_id = add_completed(db, origin.file("/v.mp4", SAMPLE))
    assert media.archive_due(db, settings, LumaClient(NOWHERE, "")) == 1
    return task_id


def test_range_request_gets_exactly_the_slice(
    db: Database, origin: Origin, live: Any, make_settings: Callable[..., Settings]
) -> None:
    task_id = archived_task(db, make_settings(), origin)
    app = live()
    url = f"{app.url}/media/{task_id}/video"

    whole = requests.get(url, timeout=5)
    assert whole.status_code == 200 and whole.content == SAMPLE
    assert whole.headers["Content-Type"] == "video/mp4"
    assert whole.headers["Accept-Ranges"] == "bytes"

    part = requests.get(url, headers={"Range": "bytes=100-1099"}, timeout=5)
    assert part.status_code == 206
    assert part.content == SAMPLE[100:1100]
    assert part.headers["Content-Range"] == f"bytes 100-1099/{len(SAMPLE)}"

    tail = requests.get(url, headers={"Range": "bytes=-500"}, timeout=5)
    assert tail.status_code == 206 and tail.content == SAMPLE[-500:]

    beyond = requests.get(url, headers={"Range": f"bytes={len(SAMPLE) + 10}-"}, timeout=5)
    assert beyond.status_code == 416

    api = requests.get(f"{app.url}/api/tasks/{task_id}", timeout=5).json()
    assert api["media_url"] == f"/media/{task_id}/video"


def test_media_routes_need_the_token_or_a_logged_in_session(
    db: Database, origin: Origin, live: Any, make_settings: Callable[..., Settings]
) -> None:
    task_id = archived_task(db, make_settings(), origin)
    not_archived = add_completed(db, None, due=False)
    app = live(api_token="admin-token-for-media", secret_key="k" * 32)
    url = f"{app.url}/media/{task_id}/video"

    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"Range": "bytes=0-9"}, timeout=5).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert requests.get(url, headers=wrong, timeout=5).status_code == 401

    bearer = {"Authorization": "Bearer admin-token-for-media"}
    answer = requests.get(url, headers={**bearer, "Range": "bytes=0-9"}, timeout=5)
    assert answer.status_code == 206 and answer.content == SAMPLE[:10]
    basic = requests.get(url, auth=("admin", "admin-token-for-media"), timeout=5)
    assert basic.status_code == 200 and basic.content == SAMPLE

    # signed in through the dashboard's login form, the browser's session cookie opens it
    browser = requests.Session()
    page = browser.get(f"{app.url}/login", timeout=5).text
    csrf_token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf_token is not None
    signed_in = browser.post(
        f"{app.url}/login",
        data={"csrf_token": csrf_token.group(1), "token": "admin-token-for-media", "next": "/"},
        allow_redirects=False,
        timeout=5,
    )
    assert signed_in.status_code == 303
    answer = browser.get(url, headers={"Range": "bytes=10-19"}, timeout=5)
    assert answer.status_code == 206 and answer.content == SAMPLE[10:20]

    # a session that only claims `authenticated` (no login mark bound to the token) does not
    cookie_name = app.app.config["SESSION_COOKIE_NAME"]
    signer = app.app.session_interface.get_signing_serializer(app.app)
    claimed = {cookie_name: signer.dumps({"authenticated": True})}
    assert requests.get(url, cookies=claimed, timeout=5).status_code == 401
    forged = {cookie_name: '{"authenticated": true}'}
    assert requests.get(url, cookies=forged, timeout=5).status_code == 401

    for path in (f"/media/{not_archived}/video", "/media/999999/video", "/media/999999/thumbnail"):
        assert requests.get(app.url + path, headers=bearer, timeout=5).status_code == 404
    assert requests.get(f"{app.url}/media/{not_archived}/video", timeout=5).status_code == 401


def test_thumbnail_is_served_with_its_image_type(
    db: Database, sim: Any, live: Any, make_settings: Callable[..., Settings]
) -> None:
    upstream_id, client = sim_completed(sim)
    update = client.query(upstream_id).update
    task_id = add_completed(
        db, update.video_url, thumbnail_url=update.thumbnail_url, upstream_id=upstream_id
    )
    assert media.archive_due(db, make_settings(), client) == 1
    answer = requests.get(f"{live().url}/media/{task_id}/thumbnail", timeout=5)
    assert answer.status_code == 200 and answer.content == SAMPLE_JPG
    assert answer.headers["Content-Type"] == "image/jpeg"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


# -- no downloads from inside -------------------------------------------------------------------


def test_loopback_link_is_refused_unless_allowed(
    db: Database, origin: Origin, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(media_allow_private=False)
    task_id = add_completed(db, origin.file("/v.mp4", SAMPLE))

    assert media.archive_due(db, settings, LumaClient(NOWHERE, "")) == 0

    task = load_task(db, task_id)
    assert task.archive_error == "refused: 127.0.0.1 is not a public address (loopback)"
    assert task.next_archive_at is None  # the rule will not change by waiting
    assert task.media_path is None and task.state == "completed"
    assert origin.hits == []  # refused before connecting
    assert media_files(settings) == []

    # the same link, with TRACKER_MEDIA_ALLOW_PRIVATE=1, through `tracker archive --missing`
    allowed = make_settings(media_allow_private=True)
    assert media.archive_missing(db, allowed, LumaClient(NOWHERE, "")) == 1
    assert load_task(db, task_id).archive_error is None


def test_a_redirect_to_loopback_is_refused(
    db: Database, origin: Origin, public_origin: Origin, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(media_allow_private=False)
    inside = origin.file("/secret.mp4", b"internal data")
    first_hop = public_origin.redirect("/v.mp4", inside)
    task_id = add_completed(db, first_hop)

    assert media.archive_due(db, settings, LumaClient(NOWHERE, ""), guard=PUBLIC_GUARD) == 0

    task = load_task(db, task_id)
    assert task.archive_error == "refused: 127.0.0.1 is not a public address (loopback)"
    assert public_origin.paths() == ["/v.mp4"]  # the first hop was fetched...
    assert origin.hits == []  # ...the second never connected
    assert media_files(settings) == []


def test_redirects_on_allowed_hosts_are_followed_up_to_five(
    db: Database, public_origin: Origin, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(media_allow_private=False)
    public_origin.file("/final.mp4", SAMPLE)
    for hop in range(5, 0, -1):  # /r1 -> /r2 -> ... -> /r5 -> /final.mp4
        target = "/final.mp4" if hop == 5 else f"/r{hop + 1}"
        public_origin.redirect(f"/r{hop}", target, code=307 if hop % 2 else 301)
    ok_task = add_completed(db, public_origin.url + "/r1")
    public_origin.redirect("/loop", "/loop")
    loop_task = add_completed(db, public_origin.url + "/loop")

    client = LumaClient(NOWHERE, "")
    assert media.archive_due(db, settings, client, limit=5, guard=PUBLIC_GUARD) == 1

    assert sha((Path(settings.media_dir) / f"{ok_task}.mp4").read_bytes()) == sha(SAMPLE)
    assert load_task(db, loop_task).archive_error == "more than 5 redirects"


def test_a_name_resolving_to_loopback_is_refused_and_the_checked_address_is_used(
    db: Database, origin: Origin, make_settings: Callable[..., Settings]
) -> None:
    port = origin.url.rsplit(":", 1)[1]
    link = origin.file("/v.mp4", SAMPLE).replace("127.0.0.1", "videos.example.invalid")
    task_id = add_completed(db, link)
    resolver = lambda host, port: ["127.0.0.1"]  # noqa: E731 - a DNS answer, as a test says
    client = LumaClient(NOWHERE, "")

    refused = make_settings(media_allow_private=False)
    assert media.archive_due(db, refused, client, guard=Guard(resolver=resolver)) == 0
    assert load_task(db, task_id).archive_error == (
        "refused: videos.example.invalid (127.0.0.1) is not a public address (loopback)"
    )
    assert origin.hits == []

    # allowed, the connection goes to the checked address (the name itself resolves nowhere)
    allowed = Guard(allow_private=True, resolver=resolver)
    assert media.archive_missing(db, make_settings(), client, guard=allowed) == 1
    assert origin.hits == [("/v.mp4", f"videos.example.invalid:{port}")]


# -- size cap and half files --------------------------------------------------------------------


def test_past_the_size_cap_is_aborted_and_leaves_no_file(
    db: Database, origin: Origin, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(media_max_bytes=1000)
    announced = add_completed(db, origin.file("/big.mp4", SAMPLE))
    unannounced = add_completed(db, origin.file("/chunks.mp4", SAMPLE, length=False))

    def lying(h: BaseHTTPRequestHandler) -> None:
        # says 10 bytes, then sends a chunked body: the framing wins, so the count must
        h.send_response(200)
        h.send_header("Content-Length", "10")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for _ in range(50):
            h.wfile.write(b"400\r\n" + b"x" * 0x400 + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    lies = add_completed(db, origin.raw("/lies.mp4", lying))

    assert media.archive_due(db, settings, LumaClient(NOWHERE, ""), limit=10) == 0

    assert load_task(db, announced).archive_error == (
        f"larger than the 1000-byte limit ({len(SAMPLE)} bytes announced)"
    )
    for task_id in (unannounced, lies):
        assert load_task(db, task_id).archive_error == "larger than the 1000-byte limit"
    for task_id in (announced, unannounced, lies):
        task = load_task(db, task_id)
        assert task.media_path is None and task.next_archive_at is None  # not retried
    assert media_files(settings) == []  # no file, no temp file


def test_a_body_cut_short_leaves_no_file_and_is_retried(
    db: Database, origin: Origin, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()

    def cut(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(SAMPLE)))
        h.end_headers()
        h.wfile.write(SAMPLE[:5000])  # then the connection closes

    task_id = add_completed(db, origin.raw("/cut.mp4", cut))
    assert media.archive_due(db, settings, LumaClient(NOWHERE, "")) == 0
    task = load_task(db, task_id)
    assert task.archive_error.startswith("the download broke off")
    assert task.archive_attempts == 1 and task.next_archive_at > utcnow()
    assert media_files(settings) == []

    origin.file("/cut.mp4", SAMPLE)  # the origin recovers
    make_due(db, task_id)
    assert media.archive_due(db, settings, LumaClient(NOWHERE, "")) == 1
    assert (Path(settings.media_dir) / f"{task_id}.mp4").read_bytes() == SAMPLE


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
    thread = threading.Thread(target=server.serve_forever, args=(SHUTDOWN_POLL,), daemon=True)
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


class _Trickle(BaseHTTPRequestHandler):
    """`/headers`: a header line every 0.2 s; `/body`: headers at once, then 64 bytes every
    0.2 s with no length. Each read gets bytes well within any read timeout; for 30 s at most."""

    def do_GET(self) -> None:
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self.wfile.flush()
            for n in range(150):
                if self.path == "/headers":
                    self.wfile.write(f"X-Slow-{n}: yes\r\n".encode())
                elif n == 0:
                    self.wfile.write(b"Content-Type: video/mp4\r\nConnection: close\r\n\r\n")
                else:
                    self.wfile.write(b"v" * 64)
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:  # the downloader hung up: what the test wants
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("slow", ["headers", "body"])
def test_a_trickling_server_is_cut_off_at_the_download_deadline(
    slow: str,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read timeout bounds each read only: the deadline is the whole download's."""
    monkeypatch.setattr(download_module, "DOWNLOAD_DEADLINE", 1.0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(SHUTDOWN_POLL,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{slow}"
        with pytest.raises(DownloadError, match="took longer than 1 s"):
            download(url, tmp_path / "v.mp4", make_settings(), Guard(allow_private=True))
    finally:
        server.shutdown()
        server.server_close()
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary one


def test_a_database_error_mid_archive_gives_the_lease_back(
    db: Database,
    origin: Origin,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The soak restarted PostgreSQL as a worker stored a file: the outcome was never written
    and the task waited out its half-hour lease. Now the lease goes back once the database
    answers, and the next pass finishes the task."""
    settings = make_settings()
    task_id = add_completed(db, origin.file("/v.mp4", SAMPLE))
    real, dropped = archives.succeeded, []

    def dropping(*args: Any) -> None:
        if not dropped:  # the first time: the connection is gone, as in a restart
            dropped.append(True)
            raise OperationalError("UPDATE tasks", {}, ConnectionError("server closed it"))
        real(*args)

    monkeypatch.setattr(archives, "succeeded", dropping)
    monkeypatch.setattr(media, "HAND_BACK_WAITS", (0.0,))
    with pytest.raises(OperationalError):
        media.archive_due(db, settings, LumaClient(NOWHERE, ""))
    task = load_task(db, task_id)
    assert task.archived_at is None and task.next_archive_at <= utcnow()  # due, not leased
    media.archive_due(db, settings, LumaClient(NOWHERE, ""))
    task = load_task(db, task_id)
    assert task.media_path == f"{task_id}.mp4" and task.archived_at is not None
    assert (Path(settings.media_dir) / f"{task_id}.mp4").read_bytes() == SAMPLE


# -- scheduling: leases, --missing, nothing to do -----------------------------------------------


def test_two_workers_do_not_download_the_same_task(
    db: Database, origin: Origin, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    release = threading.Event()

    def slow(h: BaseHTTPRequestHandler) -> None:
        release.wait(10)
        h.send_response(200)
        h.send_header("Content-Length", str(len(SAMPLE)))
        h.end_headers()
        h.wfile.write(SAMPLE)

    task_id = add_completed(db, origin.raw("/slow.mp4", slow))
    results: list[int] = []
    first = threading.Thread(
        target=lambda: results.append(media.archive_due(db, settings, LumaClient(NOWHERE, "")))
    )
    first.start()
    try:
        wait_for(lambda: origin.hits)  # the first worker holds the task and is downloading
        assert media.archive_due(db, settings, LumaClient(NOWHERE, "")) == 0
        assert media.archive_missing(db, settings, LumaClient(NOWHERE, "")) == 0
    finally:
        release.set()
        first.join(10)
    assert results == [1]
    assert origin.paths() == ["/slow.mp4"]
    assert load_task(db, task_id).media_path == f"{task_id}.mp4"


def test_archive_missing_takes_everything_without_a_file(
    db: Database, origin: Origin, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    client = LumaClient(NOWHERE, "")
    never_scheduled = add_completed(db, origin.file("/a.mp4", SAMPLE), due=False)
    given_up = add_completed(db, origin.file("/b.mp4", SAMPLE), due=False)
    with db.write() as session:
        task = session.get(Task, given_up)
        task.archive_attempts, task.archive_error = media.MAX_ATTEMPTS, "gave up after 8 attempts"
    assert media.archive_due(db, settings, client) == 0  # neither is due

    assert media.archive_missing(db, settings, client) == 2
    assert load_task(db, given_up).archive_error is None

    # a file lost from disk is fetched again; one still there is not
    (Path(settings.media_dir) / f"{never_scheduled}.mp4").unlink()
    origin.hits.clear()
    assert media.archive_missing(db, settings, client) == 1
    assert origin.paths() == ["/a.mp4"]


def test_a_due_task_already_on_disk_needs_no_download(
    db: Database, origin: Origin, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    task_id = archived_task(db, settings, origin)
    make_due(db, task_id)  # lifecycle saw a fresh link for it
    origin.hits.clear()
    assert media.archive_due(db, settings, LumaClient(NOWHERE, "")) == 0
    assert origin.hits == [] and load_task(db, task_id).next_archive_at is None


def test_archival_is_off_with_an_empty_media_dir(
    db: Database, origin: Origin, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(media_dir="")
    task_id = add_completed(db, origin.file("/v.mp4", SAMPLE))
    assert media.archive_due(db, settings, LumaClient(NOWHERE, "")) == 0
    assert media.archive_missing(db, settings, LumaClient(NOWHERE, "")) == 0
    assert origin.hits == [] and load_task(db, task_id).archive_attempts == 0


def test_an_unwritable_media_dir_is_an_archive_error_not_a_crash(
    db: Database, origin: Origin, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the media directory should be")
    settings = make_settings(media_dir=str(blocker / "media"))
    task_id = add_completed(db, origin.file("/v.mp4", SAMPLE))

    assert media.archive_due(db, settings, LumaClient(NOWHERE, "")) == 0

    task = load_task(db, task_id)
    assert task.archive_error.startswith("cannot write to the media directory")
    assert task.archive_attempts == 1 and task.next_archive_at is not None
