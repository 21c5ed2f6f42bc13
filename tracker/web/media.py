"""Archived videos and thumbnails, served with HTTP Range so that browsers can seek.

A webhook's body carries signed links (`tracker.signing`) that open one file for 24 hours
without the token. Otherwise the same door as the dashboard: the admin token (Bearer or
Basic), or a session signed in through the dashboard's login. The login's mark is bound to
the token (`auth.signed_in`), so changing TRACKER_API_TOKEN shuts the videos to old
sessions as it shuts the dashboard; the bare `authenticated` flag alone would outlive the change.

From a folder, werkzeug's `send_file(conditional=True)` answers Range (206), bad ranges
(416) and conditional GETs. From a bucket, the answer is a redirect to a presigned URL good
for a few minutes (the bucket serves the bytes and the ranges), or with TRACKER_MEDIA_PROXY=1
the bytes stream through this process, one Range at a time, never whole in memory. Copies
still in the folder after the switch to a bucket are served from the folder until moved.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, redirect, request, send_file, session
from werkzeug.http import quote_etag, unquote_etag

from tracker import signing, storage
from tracker.storage.s3 import S3Store, status_of, why
from tracker.storage.stores import (
    LocalStore,
    StorageError,
    Stored,
    content_type,
    file_type,
    valid_name,
)
from tracker.tasks.models import Task
from tracker.web import Reply, error, services
from tracker.web.auth import request_has_token, signed_in

bp = Blueprint("media", __name__, url_prefix="/media")

CHUNK = 64 * 1024


@bp.before_request
def require_login() -> Reply | None:
    settings = services().settings
    token = settings.api_token
    expires, signature = request.args.get("expires"), request.args.get("signature")
    if expires and signing.link_valid(settings, request.path, expires, signature):
        return None  # a webhook's signed link (24 hours): its receiver is not signed in
    if request_has_token() or (session.get("authenticated") and signed_in(token)):
        return None
    response, status = error(401, "log in, or send the token (Authorization: Bearer <token>)")
    response.headers["WWW-Authenticate"] = 'Bearer realm="tracker"'
    return response, status


def _harden(response: Response) -> Response:
    # the bytes came from elsewhere: never let a browser read them as a page
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


def _serve(task_id: int, column: str, *, image: bool = False) -> Reply:
    """A task's archived file; an image task's result is its image, never its video."""
    svc = services()
    with svc.db.read() as db_session:
        task = db_session.get(Task, task_id)
        is_image = task is not None and task.kind == "image"
        name = getattr(task, column) if task is not None and is_image == image else None
    store = storage.primary(svc.settings)
    if store is None or not valid_name(name):
        return error(404, "not found")
    if isinstance(store, LocalStore):
        return _send_local(store, name)
    if not isinstance(store, S3Store):
        raise TypeError(f"no way to serve from a {type(store).__name__}")
    try:
        stored = store.stat(name)
    except StorageError as exc:
        response, status = error(503, exc.reason)
        response.headers["Retry-After"] = "5"
        return response, status
    if stored is None:
        local = storage.local_copies(svc.settings)
        if local is not None and local.path(name) is not None:
            return _send_local(local, name)  # not yet moved into the bucket
        return error(404, "not found")
    mimetype = stored.content_type or content_type(name, b"")
    if svc.settings.media_proxy:
        return _proxy(store, name, stored, mimetype)
    moved = redirect(store.presigned_url(name, mimetype), 302)
    moved.headers["Cache-Control"] = "no-store"  # the signed URL outlives no redirect
    return moved


def _send_local(store: LocalStore, name: str) -> Reply:
    path = store.path(name)
    if path is None:
        return error(404, "not found")
    response: Response = send_file(
        path, mimetype=file_type(name, path), conditional=True, max_age=3600
    )
    return _harden(response)


def _proxy(store: S3Store, name: str, stored: Stored, mimetype: str) -> Reply:
    """Stream the object through, answering Range, If-Range and If-None-Match like send_file."""
    etag = unquote_etag(stored.etag)[0] if stored.etag else None
    if etag and request.if_none_match.contains(etag):
        return _harden(Response(status=304, headers={"ETag": quote_etag(etag)}))
    wanted = request.range
    if_range = request.if_range
    if wanted is not None and (
        if_range.date is not None or (if_range.etag and if_range.etag != etag)
    ):
        wanted = None  # the client's copy is not this one (dates are not kept): send it whole
    headers: dict[str, Any] = {"Accept-Ranges": "bytes"}
    if etag:
        headers["ETag"] = quote_etag(etag)
    conditions: dict[str, str] = {}
    status = 200
    if wanted is not None:
        span = wanted.range_for_length(stored.size)
        if span is None:
            headers["Content-Range"] = f"bytes */{stored.size}"
            return _harden(Response(status=416, headers=headers))
        start, stop = span
        conditions["Range"] = f"bytes={start}-{stop - 1}"
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{stored.size}"
        status = 206
    try:
        answer = store.get(name, **conditions)
    except Exception as exc:  # gone since the HEAD, or the bucket broke off
        if status_of(exc) == 404:
            return error(404, "not found")
        response, code = error(503, f"the bucket did not answer ({why(exc)})")
        response.headers["Retry-After"] = "5"
        return response, code
    body = answer["Body"]
    headers["Content-Length"] = str(answer["ContentLength"])
    response = Response(
        body.iter_chunks(CHUNK),
        status=status,
        mimetype=mimetype,
        headers=headers,
        direct_passthrough=True,
    )
    response.call_on_close(body.close)
    return _harden(response)


@bp.get("/<int:task_id>/video")
def video(task_id: int) -> Reply:
    return _serve(task_id, "media_path")


@bp.get("/<int:task_id>/thumbnail")
def thumbnail(task_id: int) -> Reply:
    return _serve(task_id, "thumbnail_path")


@bp.get("/<int:task_id>/image")
def image(task_id: int) -> Reply:
    """An image task's archived image (`{id}.jpg` or `.png`)."""
    return _serve(task_id, "media_path", image=True)
