"""Every setting, read from the environment in one place and checked at start.

A bad value stops the process with one line naming the variable, rather than
failing minutes later inside a request or a worker pass.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A setting has a value the service cannot run with; the message names it."""


MIN_API_TOKEN_LENGTH = 16
N = TypeVar("N", int, float)
DEFAULT_STALE_AFTER = 60.0
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
# the dialects (upstream APIs, tracker/upstream/dialects.py) LUMA_API_FLAVOR names, the first by
# default, and the base URL of each when LUMA_API_BASE is not set
DEFAULT_BASES = {
    "proxy": "https://www.kkiai.com",
    "luma": "https://api.lumalabs.ai/dream-machine/v1",
}
DIALECTS = tuple(DEFAULT_BASES)
LUMA_MODELS = ("ray-2", "ray-flash-2")  # Luma's video models (its SDK requires one a create)
ACCOUNT_PREFIX = "LUMA_ACCOUNT_"


@dataclass(frozen=True)
class Settings:
    database_url: str = ""
    # the upstream's dialect (one of DIALECTS): "proxy" (the reseller's) or "luma" (Luma's own)
    luma_api_flavor: str = DIALECTS[0]
    luma_api_base: str = DEFAULT_BASES[DIALECTS[0]]
    luma_api_key: str = field(default="", repr=False)
    luma_model: str = LUMA_MODELS[0]  # sent on every video create of the luma dialect
    # LUMA_ACCOUNT_<NAME>_* as given: a pool of accounts (read by tracker.upstream.accounts.pool)
    account_env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    public_base_url: str = ""
    port: int = 8000
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    # the worker (queries and dispatch)
    poll_after: float = 60.0
    poll_max_interval: float = 600.0
    task_timeout: float = 21600.0
    poll_concurrency: int = 4
    max_in_flight: int = 10
    submits_per_minute: int = 20
    worker_interval: float = 1.0
    lease_seconds: float = 120.0
    # the web side
    api_token: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    max_callback_bytes: int = 1_000_000
    max_body_bytes: int = 20_000_000
    trusted_proxies: int = 0
    session_lifetime: float = 43200.0
    # archival
    media_dir: str = ""
    media_max_bytes: int = 500_000_000
    media_allow_private: bool = False
    # object storage: s3://bucket/prefix wins over media_dir (then the local folder only
    # holds copies waiting for `tracker archive --missing` to move them into the bucket)
    media_url: str = ""
    media_proxy: bool = False
    aws_endpoint_url: str = ""
    aws_region: str = ""
    aws_access_key_id: str = field(default="", repr=False)
    aws_secret_access_key: str = field(default="", repr=False)
    # outgoing webhooks (tasks/webhooks.py, flows/notify.py): every task's events go to
    # notify_url, a task's own notify_url gets its own; signed with each of notify_secrets
    notify_url: str = ""
    notify_secrets: tuple[str, ...] = field(default=(), repr=False)
    notify_retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    notify_allow_private: bool = False
    # operations: Prometheus metrics (tracker/metrics.py) and the log format (tracker/logs.py)
    metrics: bool = True
    metrics_dir: str = ""  # PROMETHEUS_MULTIPROC_DIR; "" is instance/metrics (metrics_files)
    log_format: str = "text"

    def __post_init__(self) -> None:
        # here rather than in `load`, so that no way of building settings (tests, tools) can
        # run with a guessable token, or one too short for the log masking (tracker/redact.py)
        if 0 < len(self.api_token) < MIN_API_TOKEN_LENGTH:
            raise SettingsError(
                f"TRACKER_API_TOKEN must be at least {MIN_API_TOKEN_LENGTH} characters long "
                "(for example: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )

    def with_overrides(self, **changes: Any) -> Settings:
        """Tests and tools take the environment's settings and change a few."""
        return replace(self, **changes)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def archives(self) -> bool:
        """Archival is on: into a bucket (TRACKER_MEDIA_URL) or a folder (TRACKER_MEDIA_DIR)."""
        return bool(self.media_url or self.media_dir)

    def callback_url(self, token: str) -> str | None:
        if not self.public_base_url:
            return None
        return f"{self.public_base_url}/callbacks/luma/{token}"


def number(env: Mapping[str, str], name: str, default: N, *, minimum: float) -> N:
    """A number of the default's type: an int setting refuses "2.5", a float one takes "2"."""
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = type(default)(raw)
    except ValueError:
        kind = {int: "an integer", float: "a number"}[type(default)]
        raise SettingsError(f"{name} must be {kind}, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw not in ("", "0", "false", "no", "off", "1", "true", "yes", "on"):
        raise SettingsError(f"{name} must be 1 or 0, got {raw!r}")
    return raw in ("1", "true", "yes", "on")


def http_url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = (env.get(name, "").strip() or default).rstrip("/")
    parts = urlsplit(raw)
    if raw and (parts.scheme not in ("http", "https") or not parts.netloc):
        raise SettingsError(f"{name} must be an http:// or https:// URL, got {raw!r}")
    return raw


def _media_url(env: Mapping[str, str]) -> str:
    raw = env.get("TRACKER_MEDIA_URL", "").strip().rstrip("/")
    parts = urlsplit(raw)
    if raw and (parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment):
        raise SettingsError(f"TRACKER_MEDIA_URL must be s3://bucket/prefix, got {raw!r}")
    return raw


def _notify_secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    """TRACKER_NOTIFY_SECRET: one or more `whsec_<base64>` secrets separated by spaces."""
    secrets = tuple(env.get("TRACKER_NOTIFY_SECRET", "").split())
    for number, secret in enumerate(secrets, 1):
        body = secret.removeprefix("whsec_")
        try:
            key = base64.b64decode(body, validate=True) if secret.startswith("whsec_") else b""
        except binascii.Error:
            key = b""
        if len(key) < 16:
            # the value itself is never echoed: it is a secret
            raise SettingsError(
                f"TRACKER_NOTIFY_SECRET: secret {number} must be whsec_ followed by the base64 "
                "of at least 16 bytes (`tracker notify secret --new` makes one)"
            )
    return secrets


def _notify_url(env: Mapping[str, str]) -> str:
    """TRACKER_NOTIFY_URL as given (a receiver's path may end in a slash it needs)."""
    raw = env.get("TRACKER_NOTIFY_URL", "").strip()
    return raw and http_url({"TRACKER_NOTIFY_URL": raw}, "TRACKER_NOTIFY_URL", "") and raw


def _schedule(env: Mapping[str, str]) -> tuple[float, ...]:
    raw = env.get("TRACKER_NOTIFY_RETRY_SCHEDULE", "").strip()
    if raw == "":
        return DEFAULT_RETRY_SCHEDULE
    try:
        delays = tuple(float(part) for part in raw.split(","))
    except ValueError:
        delays = (-1.0,)
    if not all(0 <= delay < 10**7 for delay in delays) or len(delays) > 50:
        raise SettingsError(
            f"TRACKER_NOTIFY_RETRY_SCHEDULE must be comma-separated seconds, got {raw[:40]!r}"
        )
    return delays


def choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or choices[0]
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def normalize_database_url(raw: str, *, name: str = "DATABASE_URL") -> str:
    """SQLAlchemy's spelling of a sqlite:// or postgresql:// URL (`name` is told when bad)."""
    # Heroku-style URLs name the scheme "postgres"; SQLAlchemy wants a driver.
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw[len("postgres://") :]
    if raw.startswith("postgresql://"):
        raw = "postgresql+psycopg://" + raw[len("postgresql://") :]
    if not (raw.startswith("sqlite") or raw.startswith("postgresql")):
        raise SettingsError(f"{name} must be a sqlite:// or postgresql:// URL, got {raw[:20]!r}")
    return raw


def worker_stale_after(env: Mapping[str, str] | None = None) -> float:
    """TRACKER_WORKER_STALE_AFTER: seconds without a heartbeat before a process counts as dead
    (read at import by tasks/heartbeats.py, which has no settings at hand; checked by `load`)."""
    env = os.environ if env is None else env
    return number(env, "TRACKER_WORKER_STALE_AFTER", DEFAULT_STALE_AFTER, minimum=3)


def _database_url(env: Mapping[str, str], instance: Path) -> str:
    # only an instance/ folder (the default's) is made on its own (tracker/db.py): no typo's tree
    raw = env.get("DATABASE_URL", "").strip()
    if not raw:
        return f"sqlite:///{instance / 'tracker.db'}"
    url = normalize_database_url(raw)
    path = url.partition("://")[2].partition("?")[0][1:]  # sqlite:///rel.db, sqlite:////abs.db
    folder = Path(path).absolute().parent
    made = folder.is_dir() or (folder.name == "instance" and folder.parent.is_dir())
    if url.startswith("sqlite") and path not in ("", ":memory:") and not made:
        raise SettingsError(f"DATABASE_URL names a SQLite file in {folder}, which does not exist")
    return url


def load(env: Mapping[str, str] | None = None, *, instance: Path | None = None) -> Settings:
    """Read and check every setting; raise SettingsError naming the first bad one."""
    env = os.environ if env is None else env
    instance = instance or Path.cwd() / "instance"
    media_raw = env.get("TRACKER_MEDIA_DIR")
    media_dir = str(instance / "media") if media_raw is None else media_raw.strip()
    dialect = choice(env, "LUMA_API_FLAVOR", DIALECTS)
    worker_stale_after(env)  # checked here, read by tracker/tasks/heartbeats.py
    settings = Settings(
        database_url=_database_url(env, instance),
        luma_api_flavor=dialect,
        luma_api_base=http_url(env, "LUMA_API_BASE", DEFAULT_BASES[dialect]),
        luma_api_key=env.get("LUMA_API_KEY", "").strip(),
        luma_model=choice(env, "LUMA_MODEL", LUMA_MODELS),
        account_env=tuple(sorted((k, v) for k, v in env.items() if k.startswith(ACCOUNT_PREFIX))),
        public_base_url=http_url(env, "PUBLIC_BASE_URL", ""),
        port=number(env, "PORT", 8000, minimum=1),
        connect_timeout=number(env, "LUMA_CONNECT_TIMEOUT", 5.0, minimum=0.1),
        read_timeout=number(env, "LUMA_READ_TIMEOUT", 30.0, minimum=0.1),
        poll_after=number(env, "TRACKER_POLL_AFTER", 60.0, minimum=0),
        poll_max_interval=number(env, "TRACKER_POLL_MAX_INTERVAL", 600.0, minimum=1),
        task_timeout=number(env, "TRACKER_TASK_TIMEOUT", 21600.0, minimum=1),
        poll_concurrency=number(env, "TRACKER_POLL_CONCURRENCY", 4, minimum=1),
        max_in_flight=number(env, "TRACKER_MAX_IN_FLIGHT", 10, minimum=1),
        submits_per_minute=number(env, "TRACKER_SUBMITS_PER_MINUTE", 20, minimum=1),
        worker_interval=number(env, "TRACKER_WORKER_INTERVAL", 1.0, minimum=0.01),
        lease_seconds=number(env, "TRACKER_LEASE_SECONDS", 120.0, minimum=1),
        api_token=env.get("TRACKER_API_TOKEN", "").strip(),
        secret_key=env.get("TRACKER_SECRET_KEY", "").strip(),
        max_callback_bytes=number(env, "TRACKER_MAX_CALLBACK_BYTES", 1_000_000, minimum=1),
        max_body_bytes=number(env, "TRACKER_MAX_BODY_BYTES", 20_000_000, minimum=1),
        trusted_proxies=number(env, "TRACKER_TRUSTED_PROXIES", 0, minimum=0),
        session_lifetime=number(env, "TRACKER_SESSION_LIFETIME", 43200.0, minimum=60),
        media_dir=media_dir,
        media_max_bytes=number(env, "TRACKER_MEDIA_MAX_BYTES", 500_000_000, minimum=1),
        media_allow_private=flag(env, "TRACKER_MEDIA_ALLOW_PRIVATE"),
        media_url=_media_url(env),
        media_proxy=flag(env, "TRACKER_MEDIA_PROXY"),
        # boto3's own variables, read here so that they are checked at start with the others
        aws_endpoint_url=http_url(env, "AWS_ENDPOINT_URL", ""),
        aws_region=env.get("AWS_DEFAULT_REGION", "").strip(),
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID", "").strip(),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", "").strip(),
        notify_url=_notify_url(env),
        notify_secrets=_notify_secrets(env),
        notify_retry_schedule=_schedule(env),
        notify_allow_private=flag(env, "TRACKER_NOTIFY_ALLOW_PRIVATE"),
        metrics=env.get("TRACKER_METRICS", "").strip() == "" or flag(env, "TRACKER_METRICS"),
        metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR", "").strip() or str(instance / "metrics"),
        log_format=choice(env, "TRACKER_LOG_FORMAT", ("text", "json")),
    )
    if settings.notify_url and not settings.notify_secrets and not settings.is_sqlite:
        # several machines may sign: one generated here would differ from the next one's
        raise SettingsError(
            "TRACKER_NOTIFY_SECRET must be set when TRACKER_NOTIFY_URL is and the database is "
            "PostgreSQL (every machine must sign with the same secret)"
        )
    # a send must end before its lease does, or the task is given up while it is still in flight
    floor = 2 * (settings.connect_timeout + settings.read_timeout)
    if settings.lease_seconds < floor:
        raise SettingsError(
            f"TRACKER_LEASE_SECONDS must be at least twice LUMA_CONNECT_TIMEOUT + "
            f"LUMA_READ_TIMEOUT ({floor:g}), got {settings.lease_seconds:g}"
        )
    return settings
