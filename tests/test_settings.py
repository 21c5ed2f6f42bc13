"""Settings are read in one place; a bad value names its variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tracker.settings import Settings, SettingsError, load, worker_stale_after


def test_defaults(tmp_path: Path) -> None:
    settings = load({}, instance=tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path / 'tracker.db'}"
    assert settings.luma_api_base == "https://www.kkiai.com"
    assert settings.public_base_url == ""
    assert settings.port == 8000
    assert settings.poll_after == 60
    assert settings.max_in_flight == 10
    assert settings.media_dir == str(tmp_path / "media")


def test_postgres_urls_get_a_driver(tmp_path: Path) -> None:
    for given in ("postgres://u@h/d", "postgresql://u@h/d"):
        url = load({"DATABASE_URL": given}, instance=tmp_path).database_url
        assert url == "postgresql+psycopg://u@h/d"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "0"),
        ("DATABASE_URL", "mysql://x"),
        ("LUMA_API_BASE", "ftp://x"),
        ("PUBLIC_BASE_URL", "localhost:8000"),
        ("TRACKER_POLL_AFTER", "soon"),
        ("TRACKER_MAX_IN_FLIGHT", "0"),
        ("TRACKER_MEDIA_ALLOW_PRIVATE", "maybe"),
        ("TRACKER_LEASE_SECONDS", "30"),  # shorter than a send may take
        ("TRACKER_WORKER_STALE_AFTER", "1"),  # under its minimum of 3
        ("TRACKER_WORKER_STALE_AFTER", "a minute"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load({name: value}, instance=tmp_path)


def test_the_heartbeat_reads_its_staleness_from_the_environment(monkeypatch: Any) -> None:
    """tasks/heartbeats.py reads TRACKER_WORKER_STALE_AFTER at import (no settings at hand)."""
    from tracker.tasks import heartbeats as heartbeat

    monkeypatch.delenv("TRACKER_WORKER_STALE_AFTER", raising=False)
    assert heartbeat._stale_after() == worker_stale_after() == 60.0
    monkeypatch.setenv("TRACKER_WORKER_STALE_AFTER", "5")
    assert heartbeat._stale_after() == 5.0
    # a bad value is settings.load's to report, with its one line; the default stands in
    monkeypatch.setenv("TRACKER_WORKER_STALE_AFTER", "soon")
    assert heartbeat._stale_after() == 60.0
    assert heartbeat.BEAT_EVERY == heartbeat.STALE_AFTER / 6


@pytest.mark.slow  # starts a process
def test_a_bad_setting_stops_the_cli_with_one_line(tmp_path: Path) -> None:
    tracker = Path(sys.executable).parent / "tracker"
    result = subprocess.run(
        [str(tracker), "db", "upgrade"],
        env={"PORT": "eighty", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode != 0
    assert "PORT must be an integer" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # starts a process
def test_a_short_api_token_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="TRACKER_API_TOKEN"):
        load({"TRACKER_API_TOKEN": "fifteen-chars!!"}, instance=tmp_path)
    with pytest.raises(SettingsError, match="TRACKER_API_TOKEN"):
        Settings(api_token="short")  # no way round it, so no short token escapes masking
    assert load({"TRACKER_API_TOKEN": "sixteen-chars!!!"}, instance=tmp_path).api_token

    bin_dir = Path(sys.executable).parent
    env = {"PATH": "/usr/bin:/bin", "TRACKER_API_TOKEN": "abc123", "HOME": str(tmp_path)}
    root = Path(__file__).resolve().parent.parent
    for command in (
        [str(bin_dir / "tracker"), "db", "upgrade"],
        [str(bin_dir / "gunicorn"), "wsgi:app", "-c", "gunicorn.conf.py", "-b", "127.0.0.1:0"],
    ):
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, cwd=root, timeout=60
        )
        assert result.returncode != 0, command
        output = result.stdout + result.stderr
        assert "TRACKER_API_TOKEN must be at least 16 characters" in output, output
        assert "Traceback" not in output, output
        assert "abc123" not in output


def test_session_lifetime_setting(tmp_path: Path) -> None:
    assert load({}, instance=tmp_path).session_lifetime == 12 * 3600
    assert load({"TRACKER_SESSION_LIFETIME": "3600"}, instance=tmp_path).session_lifetime == 3600
    with pytest.raises(SettingsError, match="TRACKER_SESSION_LIFETIME"):
        load({"TRACKER_SESSION_LIFETIME": "soon"}, instance=tmp_path)
    with pytest.raises(SettingsError, match="TRACKER_TRUSTED_PROXIES"):
        load({"TRACKER_TRUSTED_PROXIES": "-1"}, instance=tmp_path)
