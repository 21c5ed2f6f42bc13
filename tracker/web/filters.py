"""What the dashboard's templates call: filters that turn stored values into what a person reads.

Each is a plain function (tested as one); `init_app` names them for Jinja, with the state
lists the templates draw their tabs from.
"""

from __future__ import annotations

import json
from datetime import datetime

from flask import Flask

from tracker import jsontext
from tracker.tasks import store
from tracker.tasks.serialize import short_image
from tracker.tasks.states import FINAL_STATES, STATES
from tracker.web import links


def ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "—"
    seconds = int(((now or store.utcnow()) - value).total_seconds())
    if seconds < 5:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def dollars(cents: int | None) -> str:
    """A balance in US cents, as a person reads it."""
    if cents is None:
        return "—"
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def wait(seconds: int | None) -> str:
    """The upstream's wait estimate as a person reads it: "about 3 min"."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"about {seconds} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def safe_url(value: str | None) -> str | None:
    """Only http(s) and this site's own paths go into href/src: never `javascript:`.

    URLs that users or the upstream gave go through `links.web_link` instead (absolute
    http(s) only): a path there could still be read by a browser as another site.
    """
    return links.local_path(value) or links.web_link(value)


def pretty(payload: str | None) -> str:
    """A stored payload, indented; text as it is. Never fails, whatever the row holds."""
    if payload is None:
        return ""
    value = jsontext.loads_stored(payload)
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False)


def short(value: str | None, limit: int = 120) -> str:
    if not value:
        return ""
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(
        ago=ago,
        when=when,
        wait=wait,
        safe_url=safe_url,
        web_link=links.web_link,
        pretty=pretty,
        short=short,
        image=short_image,
        dollars=dollars,
    )
    app.jinja_env.globals.update(STATES=STATES, FINAL_STATES=FINAL_STATES)
