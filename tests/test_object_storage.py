"""Archived videos in an S3-compatible bucket (TRACKER_MEDIA_URL), against moto's server on
127.0.0.1 over real HTTP: archival, the presigned redirect, the streamed proxy with Range,
moving local copies with `tracker archive --missing`, and the AWS keys kept out of logs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.support.factory import load_task
from tests.support.held import partials
from tests.support.media import SAMPLE, SAMPLE_JPG, add_completed, sha, sim_completed
from tests.support.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, Bucket, S3Server
from tests.support.waiting import wait_for
from tracker import storage
from tracker.db import Database
from tracker.flows import archive as media
from tracker.flows import worker
from tracker.settings import Settings, SettingsError
from tracker.settings import load as load_settings
from tracker.storage.s3 import S3Store
from tracker.storage.stores import StorageError
from tracker.tasks import heartbeats
from tracker.upstream.client import LumaClient

TRACKER = Path(sys.executable).parent / "tracker"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_server: S3Server) -> Bucket:
    return s3_server.new_bucket()


def archive_one_completed(db: Database, sim: Any, settings: Settings) -> int:
    """A task completed in the simulator, archived by one worker pass."""
    upstream_id, client = sim_completed(sim)
    update = client.query(upstream_id).update
    task_id = add_completed(
        db, update.video_url, thumbnail_url=update.thumbnail_url, upstream_id=upstream_id
    )
    assert media.archive_due(db, settings, client) == 1
    return task_id


# -- settings -----------------------------------------------------------------------------------


def test_media_url_is_checked_at_start(tmp_path: Path) -> None:
    settings = load_settings(
        {"TRACKER_MEDIA_URL": "s3://my-bucket/some/prefix/"}, instance=tmp_path
    )
    assert settings.media_url == "s3://my-bucket/some/prefix" and settings.archives
    for bad in ("/srv/media", "https://bucket.example.com/x", "s3://", "s3:///prefix"):
        with pytest.raises(SettingsError, match="TRACKER_MEDIA_URL"):
            load_settings({"TRACKER_MEDIA_URL": bad}, instance=tmp_path)
    with pytest.raises(SettingsError, match="TRACKER_MEDIA_PROXY"):
        load_settings({"TRACKER_MEDIA_PROXY": "maybe"}, instance=tmp_path)
    with pytest.raises(SettingsError, match="AWS_ENDPOINT_URL"):
        load_settings({"AWS_ENDPOINT_URL": "minio:9000"}, instance=tmp_path)
    # the secret key is never part of the settings' repr (tracebacks, debug prints)
    secret = load_settings({"AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}, instance=tmp_path)
    assert SECRET_ACCESS_KEY not in repr(secret)


# -- end to end: callback, worker pass, bucket, presigned redirect ------------------------------


def test_a_task_completed_by_callback_is_archived_into_the_bucket_and_redirects(
    db: Database, sim: Any, live: Any, bucket: Bucket, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(luma_api_base=sim.url, **bucket.settings())
    app = live(luma_api_base=sim.url, **bucket.settings())
    created = requests.post(
        f"{app.url}/api/tasks", json={"user_prompt": "a kite over the dunes"}, timeout=5
    )
    assert created.status_code == 201
    task_id = created.json()["id"]
    wait_for(lambda: load_task(db, task_id).state == "completed")  # by the simulator's callback

    summary = worker.run_once(settings, db=db)  # one worker pass
    assert summary["archived"] == 1

    # both settings are given: the bucket wins, the folder stays empty
    assert bucket.keys() == [f"videos/{task_id}.jpg", f"videos/{task_id}.mp4"]
    assert not Path(settings.media_dir).exists() or not list(Path(settings.media_dir).iterdir())
    assert sha(bucket.read(f"{task_id}.mp4")) == sha(SAMPLE)

    shown = requests.get(f"{app.url}/api/tasks/{task_id}", timeout=5).json()
    assert shown["media_url"] == f"/media/{task_id}/video"
    answer = requests.get(app.url + shown["media_url"], allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(f"{bucket.server.endpoint}/{bucket.name}/videos/{task_id}.mp4?")
    assert "X-Amz-Signature=" in location and "X-Amz-Expires=300" in location
    assert answer.headers["Cache-Control"] == "no-store"
    video = requests.get(location, timeout=5)
    assert video.status_code == 200 and sha(video.content) == sha(SAMPLE)
    assert video.headers["Content-Type"] == "video/mp4"

    thumb = requests.get(f"{app.url}{shown['thumbnail_media_url']}", timeout=5)
    assert thumb.status_code == 200 and thumb.content == SAMPLE_JPG  # redirect followed
    assert thumb.headers["Content-Type"] == "image/jpeg"

    # the next pass finds it in the bucket: nothing to do, no download
    downloads = len([r for r in sim.requests if r.route == "file"])
    assert media.archive_due(db, settings, LumaClient(sim.url, "")) == 0
    assert len([r for r in sim.requests if r.route == "file"]) == downloads


def test_proxy_mode_streams_ranges_from_the_bucket(
    db: Database, sim: Any, live: Any, bucket: Bucket, make_settings: Callable[..., Settings]
) -> None:
    task_id = archive_one_completed(db, sim, make_settings(**bucket.settings()))
    app = live(media_proxy=True, **bucket.settings())
    url = f"{app.url}/media/{task_id}/video"

    whole = requests.get(url, allow_redirects=False, timeout=5)
    assert whole.status_code == 200 and whole.content == SAMPLE
    assert whole.headers["Content-Type"] == "video/mp4"
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["X-Content-Type-Options"] == "nosniff"

    part = requests.get(url, headers={"Range": "bytes=100-1099"}, timeout=5)
    assert part.status_code == 206
    assert part.content == SAMPLE[100:1100]
    assert part.headers["Content-Range"] == f"bytes 100-1099/{len(SAMPLE)}"
    assert part.headers["Content-Length"] == "1000"

    tail = requests.get(url, headers={"Range": "bytes=-500"}, timeout=5)
    assert tail.status_code == 206 and tail.content == SAMPLE[-500:]
    open_ended = requests.get(url, headers={"Range": f"bytes={len(SAMPLE) - 10}-"}, timeout=5)
    assert open_ended.status_code == 206 and open_ended.content == SAMPLE[-10:]

    beyond = requests.get(url, headers={"Range": f"bytes={len(SAMPLE) + 10}-"}, timeout=5)
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(SAMPLE)}"

    etag = whole.headers["ETag"]
    assert requests.get(url, headers={"If-None-Match": etag}, timeout=5).status_code == 304
    # a Range for another version of the file gets the whole current one
    stale = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'}, timeout=5)
    assert stale.status_code == 200 and stale.content == SAMPLE
    same = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}, timeout=5)
    assert same.status_code == 206 and same.content == SAMPLE[:10]

    thumb = requests.get(f"{app.url}/media/{task_id}/thumbnail", timeout=5)
    assert thumb.status_code == 200 and thumb.content == SAMPLE_JPG
    assert thumb.headers["Content-Type"] == "image/jpeg"


def test_bucket_media_keeps_the_dashboard_door_and_404s(
    db: Database, sim: Any, live: Any, bucket: Bucket, make_settings: Callable[..., Settings]
) -> None:
    task_id = archive_one_completed(db, sim, make_settings(**bucket.settings()))
    not_archived = add_completed(db, None, due=False)
    app = live(api_token="admin-token-for-media", **bucket.settings())
    url = f"{app.url}/media/{task_id}/video"
    assert requests.get(url, allow_redirects=False, timeout=5).status_code == 401
    bearer = {"Authorization": "Bearer admin-token-for-media"}
    assert requests.get(url, headers=bearer, allow_redirects=False, timeout=5).status_code == 302
    for path in (f"/media/{not_archived}/video", "/media/999999/video"):
        assert requests.get(app.url + path, headers=bearer, timeout=5).status_code == 404

    # an object gone from the bucket is a 404, not a redirect to an error page
    bucket.server.client.delete_object(Bucket=bucket.name, Key=f"videos/{task_id}.mp4")
    assert requests.get(url, headers=bearer, allow_redirects=False, timeout=5).status_code == 404


def test_a_missing_or_unreachable_bucket_is_a_retried_archive_error_404_or_503(
    db: Database, sim: Any, live: Any, bucket: Bucket, make_settings: Callable[..., Settings]
) -> None:
    gone = {**bucket.settings(), "media_url": "s3://no-such-bucket-here/videos"}
    upstream_id, client = sim_completed(sim)
    task_id = add_completed(db, client.query(upstream_id).update.video_url, upstream_id=upstream_id)

    assert media.archive_due(db, make_settings(**gone), client) == 0
    task = load_task(db, task_id)
    assert task.archive_error == "upload to the bucket failed (NoSuchBucket)"
    assert task.archive_attempts == 1 and task.next_archive_at is not None  # retried later
    assert task.media_path is None

    with_media = archive_one_completed(db, sim, make_settings(**bucket.settings()))
    missing = live(**gone)
    answer = requests.get(f"{missing.url}/media/{with_media}/video", timeout=5)
    assert answer.status_code == 404  # no such bucket: nothing to serve

    down = live(**{**bucket.settings(), "aws_endpoint_url": "http://127.0.0.1:9"})
    answer = requests.get(f"{down.url}/media/{with_media}/video", timeout=30)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.json() == {"error": "the bucket did not answer (EndpointConnectionError)"}


# -- large files go up in parts -----------------------------------------------------------------


def test_a_large_file_is_uploaded_in_parts_and_verified(
    bucket: Bucket, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    store = storage.primary(make_settings(**bucket.settings()))
    assert isinstance(store, S3Store)
    big = tmp_path / "7.mp4"
    chunk = os.urandom(1024 * 1024)
    with big.open("wb") as f:
        for _ in range(20):  # 20 MB: three parts of at most 8 MB
            f.write(chunk)
    assert store.put("7.mp4", big) == 20 * 1024 * 1024
    stored = store.stat("7.mp4")
    assert stored is not None and stored.size == 20 * 1024 * 1024
    assert stored.etag is not None and stored.etag.strip('"').endswith("-3")  # multipart
    assert bucket.read("7.mp4") == big.read_bytes()
    assert store.names() == {"7.mp4"}
    for bad in ("../7.mp4", ".hidden", "a/b.mp4", ""):
        assert store.stat(bad) is None
        with pytest.raises(StorageError):
            store.put(bad, big)


# -- what a killed upload leaves behind ----------------------------------------------------------


def test_an_upload_is_staged_in_the_media_folder_and_a_dead_writers_file_is_swept(
    db: Database, bucket: Bucket, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(**bucket.settings())
    store = storage.primary(settings)
    assert isinstance(store, S3Store)
    media_dir = Path(settings.media_dir)
    beat = heartbeats.Heartbeat(db, heartbeats.new_id())
    beat.register()
    live_tag = heartbeats.file_tag(beat.id)

    with store.receive("5.mp4", live_tag) as dest:
        dest.write_bytes(b"a whole video")
        assert dest.parent == media_dir and live_tag in dest.name
        assert media.remove_stale_partials(db, settings) == 0  # its writer is alive
    assert bucket.read("5.mp4") == b"a whole video"
    assert partials(media_dir) == []  # uploaded: nothing left to sweep

    with pytest.raises(RuntimeError), store.receive("6.mp4", live_tag) as dest:
        dest.write_bytes(b"half a video")
        raise RuntimeError("the download failed")
    assert partials(media_dir) == [] and store.stat("6.mp4") is None

    # a process killed mid-upload never leaves the block: its staged file stays behind
    killed = store.receive("7.mp4", "0123456789ab")  # a writer with no heartbeat any more
    killed.__enter__().write_bytes(b"half a video")
    held = store.receive("8.mp4", live_tag)  # a live writer, still uploading
    held.__enter__().write_bytes(b"half a video")
    assert len(partials(media_dir)) == 2
    assert media.remove_stale_partials(db, settings) == 1
    assert [name.split(".")[1] for name in partials(media_dir)] == ["8"]


# -- moving local copies into the bucket --------------------------------------------------------


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRACKER_"))}
    full.update(env)
    return subprocess.run(
        [str(TRACKER), *args], env=full, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow  # starts a process
def test_archive_missing_moves_local_copies_into_the_bucket(
    db: Database, sim: Any, live: Any, bucket: Bucket, make_settings: Callable[..., Settings]
) -> None:
    local = make_settings()  # archived on one machine's disk first
    task_id = archive_one_completed(db, sim, local)
    folder = Path(local.media_dir)
    assert sorted(p.name for p in folder.iterdir()) == [f"{task_id}.jpg", f"{task_id}.mp4"]

    # after the switch, before the move: still served, from the folder
    app = live(**bucket.settings())
    answer = requests.get(f"{app.url}/media/{task_id}/video", allow_redirects=False, timeout=5)
    assert answer.status_code == 200 and answer.content == SAMPLE

    env = {
        "DATABASE_URL": db.url,
        "TRACKER_MEDIA_DIR": local.media_dir,
        "LUMA_API_BASE": "http://127.0.0.1:9",
        **bucket.env(),
    }
    done = run_cli(env, "archive", "--missing")
    assert done.returncode == 0, done.stderr
    assert f"moved 2 local copies into {bucket.url}" in done.stdout
    assert "archived 0 task(s)" in done.stdout
    assert bucket.read(f"{task_id}.mp4") == SAMPLE
    assert bucket.read(f"{task_id}.jpg") == SAMPLE_JPG
    assert list(folder.iterdir()) == []  # deleted once the upload was verified
    assert load_task(db, task_id).media_path == f"{task_id}.mp4"  # the same name, now in the bucket
    assert SECRET_ACCESS_KEY not in done.stdout + done.stderr

    answer = requests.get(f"{app.url}/media/{task_id}/video", allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    assert requests.get(answer.headers["Location"], timeout=5).content == SAMPLE

    again = run_cli(env, "archive", "--missing")
    assert again.returncode == 0 and "moved 0 local copies" in again.stdout


@pytest.mark.slow  # starts a process
def test_a_local_copy_stays_when_the_bucket_refuses(
    db: Database, sim: Any, bucket: Bucket, make_settings: Callable[..., Settings]
) -> None:
    local = make_settings()
    task_id = archive_one_completed(db, sim, local)
    env = {
        "DATABASE_URL": db.url,
        "TRACKER_MEDIA_DIR": local.media_dir,
        "LUMA_API_BASE": "http://127.0.0.1:9",
        **bucket.env(),
        "TRACKER_MEDIA_URL": "s3://no-such-bucket-here/videos",
    }
    done = run_cli(env, "archive", "--missing")
    assert done.returncode == 1
    assert "Error: cannot list the bucket (NoSuchBucket)" in done.stderr
    assert (Path(local.media_dir) / f"{task_id}.mp4").read_bytes() == SAMPLE


# -- secrets ------------------------------------------------------------------------------------


def test_aws_keys_never_reach_a_log_line(
    db: Database,
    sim: Any,
    live: Any,
    bucket: Bucket,
    make_settings: Callable[..., Settings],
    caplog: Any,
) -> None:
    live(**bucket.settings())  # the web process registers the keys at start
    with caplog.at_level(logging.DEBUG):  # botocore's own debug lines sign and send requests
        archive_one_completed(db, sim, make_settings(**bucket.settings()))
        logging.getLogger("tracker.test").warning("key %s / %s", ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "botocore" in {record.name.split(".")[0] for record in caplog.records}
    assert ACCESS_KEY_ID not in text and SECRET_ACCESS_KEY not in text
    assert "key [redacted] / [redacted]" in text
    assert urlsplit(bucket.server.endpoint).netloc  # the endpoint itself is no secret
