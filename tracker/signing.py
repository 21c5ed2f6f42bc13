"""The signing secrets, the Standard Webhooks headers, and signed expiring media links.

Secrets: TRACKER_NOTIFY_SECRET (`whsec_<base64>`, several separated by spaces while one is
rotated in); each body is signed with every one, and the `webhook-signature` header holds
all the signatures (the spec allows several). Without the variable, on SQLite a secret is
generated once into `notify_secret` beside the database (`tracker notify secret` prints
it); on PostgreSQL settings refuse to start instead (several machines would disagree).

Media links: a webhook's receiver is not signed in, so `media_url` and
`thumbnail_media_url` in a body are absolute links carrying `expires` and `signature`
(HMAC-SHA256 with a key derived from a notify secret), good for LINK_LIFETIME. The media
routes accept them in place of the admin token. The secret itself is never written anywhere
but that file, and is masked in logs (`redact.register`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets as random_secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from standardwebhooks.webhooks import Webhook

from tracker import redact
from tracker.settings import Settings

LINK_LIFETIME = 24 * 3600
USER_AGENT = "luma-tracker-webhooks/0.1"
_LINK_PURPOSE = b"tracker media link"
_cache: dict[Path, str] = {}


def secret_file(settings: Settings) -> Path:
    """`notify_secret` beside a SQLite database file, else in ./instance."""
    database = make_url(settings.database_url).database if settings.is_sqlite else None
    if database and database != ":memory:":
        return Path(database).resolve().parent / "notify_secret"
    return Path.cwd() / "instance" / "notify_secret"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(32)).decode()


def signing_secrets(settings: Settings, *, create: bool = True) -> tuple[str, ...]:
    """Every secret a body is signed with; () when there is none (PostgreSQL, unset)."""
    if settings.notify_secrets:
        return settings.notify_secrets
    if not settings.is_sqlite:
        return ()
    path = secret_file(settings)
    cached = _cache.get(path)
    if cached is None:
        if not create and not path.exists():
            return ()
        cached = _cache[path] = read_or_create(path, new_secret)
        redact.register(cached)
    return (cached,)


def headers(secrets: tuple[str, ...], webhook_id: str, body: str, now: float) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt (signed with the `standardwebhooks` lib)."""
    stamp = datetime.fromtimestamp(int(now), UTC)
    signatures = " ".join(Webhook(secret).sign(webhook_id, stamp, body) for secret in secrets)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": signatures,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }


# -- signed media links -----------------------------------------------------------------------


def _link_key(secret: str) -> bytes:
    raw = base64.b64decode(secret.removeprefix("whsec_") + "==")
    return hmac.new(raw, _LINK_PURPOSE, hashlib.sha256).digest()


def _link_signature(secret: str, path: str, expires: int) -> str:
    message = f"{path}\n{expires}".encode()
    return hmac.new(_link_key(secret), message, hashlib.sha256).hexdigest()


def signed_link(settings: Settings, path: str, now: float | None = None) -> str:
    """`path` (/media/<id>/video) as an absolute link good for LINK_LIFETIME."""
    secrets = signing_secrets(settings)
    base = settings.public_base_url
    if not secrets:
        return base + path
    expires = int(now if now is not None else time.time()) + LINK_LIFETIME
    signature = _link_signature(secrets[0], path, expires)
    return f"{base}{path}?expires={expires}&signature={signature}"


def link_valid(settings: Settings, path: str, expires: str | None, signature: str | None) -> bool:
    """A signed media link that has not expired, signed with any current secret."""
    if not expires or not signature or not expires.isascii() or not expires.isdigit():
        return False
    if len(expires) > 12 or int(expires) < time.time():
        return False
    for secret in signing_secrets(settings, create=False):
        if hmac.compare_digest(_link_signature(secret, path, int(expires)), signature):
            return True
    return False


def sign_links(settings: Settings, body: dict[str, Any], now: float) -> dict[str, Any]:
    """The stored body with its media paths turned into signed absolute links."""
    data = body.get("data")
    if isinstance(data, dict):
        data = dict(data)
        for key in ("media_url", "thumbnail_media_url"):
            if isinstance(data.get(key), str) and data[key].startswith("/media/"):
                data[key] = signed_link(settings, data[key], now)
        body = {**body, "data": data}
    return body


# -- a secret kept in a file of its own, made once by whichever process gets there first -------
# The dashboard's session key and the webhooks' signing secret (on SQLite, when none is set)
# both live beside the database; processes that start together must all end up with one value.


def read_or_create(path: Path, make: Callable[[], str]) -> str:
    """The file's value, or `make()`'s written there once (mode 0600).

    A private temporary file is linked into place: of several processes starting together
    exactly one link succeeds, and every one of them reads the winner's value.
    """
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{random_secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(make())
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_text().strip()
