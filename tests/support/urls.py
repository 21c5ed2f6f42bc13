"""How a browser reads a link, and whether it stays on this site."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit


def browser_reads(url: str) -> SplitResult:
    """How a browser on an http(s) page parses a URL (WHATWG URL): C0 controls and spaces
    trimmed at the ends, tabs and newlines removed anywhere, backslashes read as slashes."""
    url = url.strip("".join(chr(c) for c in range(0x21)))
    url = re.sub("[\t\n\r]", "", url).replace("\\", "/")
    return urlsplit(url)


def stays_on_site(url: str) -> bool:
    parts = browser_reads(url)
    return not parts.scheme and not parts.netloc
