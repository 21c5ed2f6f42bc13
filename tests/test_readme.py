"""The README's settings table names every variable the code reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented() -> None:
    code = "".join(
        (ROOT / path).read_text() for path in ("tracker/settings.py", "tracker/cli/dev.py")
    )
    code += (ROOT / "gunicorn.conf.py").read_text()
    read = set(
        re.findall(r'"((?:LUMA|TRACKER|PUBLIC|DATABASE|PORT|SIMULATOR|WEB|GUNICORN)[A-Z_]*)"', code)
    )
    assert "DATABASE_URL" in read and "TRACKER_POLL_AFTER" in read
    readme = (ROOT / "README.md").read_text()
    missing = sorted(name for name in read if f"`{name}`" not in readme)
    assert missing == []
