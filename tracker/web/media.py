"""Archived videos and thumbnails, served with HTTP Range so that browsers can seek.

The same door as the dashboard: the admin token (Bearer or Basic), or a session signed
in through the dashboard's login. The login's mark is bound to the token (`csrf.signed_in`),
so changing TRACKER_API_TOKEN shuts the videos to old sessions as it shuts the dashboard;
the bare `authenticated` flag alone would outlive the change. werkzeug's
`send_file(conditional=True)` answers Range (206), bad ranges (416) and conditional GETs.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, send_file, session

from .. import services
from ..media import stored_file
from ..models import Task
from . import csrf
from .auth import request_has_token
from .errors import error

bp = Blueprint("media", __name__, url_prefix="/media")

_IMAGE_TYPES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF8", "image/gif"),
)


@bp.before_request
def require_login():  # type: ignore[no-untyped-def]
    token = services().settings.api_token
    if request_has_token() or (session.get("authenticated") and csrf.signed_in(current_app, token)):
        return None
    response, status = error(401, "log in, or send the token (Authorization: Bearer <token>)")
    response.headers["WWW-Authenticate"] = 'Bearer realm="tracker"'
    return response, status


def _image_type(path: Path) -> str:
    """Thumbnails are stored as <id>.jpg whatever the upstream sent; the bytes say what it is."""
    with path.open("rb") as f:
        head = f.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for magic, mimetype in _IMAGE_TYPES:
        if head.startswith(magic):
            return mimetype
    return "application/octet-stream"


def _serve(task_id: int, column: str, mimetype: str | None):  # type: ignore[no-untyped-def]
    svc = services()
    with svc.db.read() as db_session:
        task = db_session.get(Task, task_id)
        relative = getattr(task, column) if task is not None else None
    path = stored_file(svc.settings, relative)
    if path is None:
        return error(404, "not found")
    response: Response = send_file(
        path,
        mimetype=mimetype or _image_type(path),
        conditional=True,
        max_age=3600,
    )
    # the bytes came from elsewhere: never let a browser read them as a page
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


@bp.get("/<int:task_id>/video")
def video(task_id: int):  # type: ignore[no-untyped-def]
    return _serve(task_id, "media_path", "video/mp4")


@bp.get("/<int:task_id>/thumbnail")
def thumbnail(task_id: int):  # type: ignore[no-untyped-def]
    return _serve(task_id, "thumbnail_path", None)
