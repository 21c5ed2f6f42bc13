"""Where the benchmarks put their figures: their own sections of docs/benchmarks.md.

A section is a `## ` heading and what follows it up to the next one; a benchmark writes its
own and leaves the others alone. `replace_section` suits a benchmark whose section is one
run with subsections of its own (worker, dashboard, webhooks); `add_run` keeps the earlier
runs below the new one, each under its `### ` heading, so a figure's history stays
readable in one place (ingest, slow clients).
"""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def _split(text: str, heading: str) -> tuple[str, str | None, str]:
    """(before the section, its body without the heading or None when absent, after it)."""
    start = text.find(f"\n{heading}\n")
    if start < 0:
        return text.rstrip("\n") + "\n\n", None, ""
    after = start + len(heading) + 2
    end = text.find("\n## ", after)
    body = text[after:] if end < 0 else text[after:end]
    return text[: start + 1], body, "" if end < 0 else text[end:]


def _read() -> str:
    return DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"


def _write(text: str) -> None:
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def replace_section(heading: str, body: str) -> None:
    """`body` (starting with `heading`) in place of the section's current text."""
    before, _old, after = _split(_read(), heading)
    _write(before + body.rstrip("\n") + "\n" + after)


def add_run(heading: str, body: str) -> None:
    """`body` (`heading`, then this run under a `### ` heading) first; earlier runs after it."""
    before, old, after = _split(_read(), heading)
    earlier = (old or "").strip("\n")
    if earlier and not earlier.startswith("### "):
        earlier = "### An earlier run\n\n" + earlier
    _write(before + body.rstrip("\n") + ("\n\n" + earlier if earlier else "") + "\n" + after)
