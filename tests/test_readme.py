"""The README is a newcomer's page that leads into docs/, and the pages hold together.

- the README is short, and its first screen (60 lines) has the two commands and an extend;
- every relative link of the README and of docs/*.md names a file of the repository, and every
  #anchor a heading of its target (GitHub's slugs);
- no link leaves the repository: no other site, nothing above the checkout;
- every page of docs/ is linked from the README;
- the settings page names every variable the code reads;
- no example assumes that the task just submitted is task 1 (`make run` submits three demo tasks).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SETTINGS_PAGE = DOCS / "settings.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
# [text](target "title"), ![alt](target); the text may hold one level of brackets (a badge)
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)"
)
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]*)>")
BARE_URL = re.compile(r"(?:\bhttps?://|\bwww\.)\S+", re.I)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose(text: str) -> str:
    """The text as GitHub renders links in it: without code blocks and code spans."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    body = prose(text)
    return INLINE_LINK.findall(body) + REFERENCE.findall(body) + AUTOLINK.findall(body)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower-cased, punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", path.read_text()).splitlines():
        heading = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_helpers_read_links_and_slugs_as_github_does() -> None:
    text = (
        'See [a](docs/a.md#x), ![b](img/b.png "t"), <https://example.com>, '
        "`[not](a/link.md)`, and\n```sh\n[nor](this.md)\n```\n[ref]: docs/c.md\n"
    )
    assert links(text) == ["docs/a.md#x", "img/b.png", "docs/c.md", "https://example.com"]
    assert slug("What `make run` chooses") == "what-make-run-chooses"
    assert slug("Luma's SDK, the contract") == "lumas-sdk-the-contract"
    assert slug("Operations: deploying, at scale") == "operations-deploying-at-scale"
    assert slug("TRACKER_DEV_ENV and [the CLI](cli.md)") == "tracker_dev_env-and-the-cli"


def test_the_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) < 300, f"README.md has {len(lines)} lines: move a section into docs/"


def test_the_first_screen_goes_from_clone_to_an_extended_video() -> None:
    first = "\n".join(README.read_text().splitlines()[:60])
    assert "make run" in first
    assert "make test" in first
    assert "127.0.0.1:8000" in first  # where to open it
    assert "--source" in first or "source_task_id" in first, "an extend example"
    assert ".venv/bin/tracker submit" in first and "--wait" in first  # the CLI beside make run
    assert re.search(r"!\[[^\]]*\]\(docs/img/[^)]+\.png\)", first), "the picture"


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_relative_link_resolves_inside_the_repository(page: Path) -> None:
    broken = []
    for target in links(page.read_text()):
        if SCHEME.match(target):
            continue  # another site: the next test's
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_relative_to(ROOT) or not file.exists():
            broken.append(f"{target}: no such file in the repository")
            continue
        if anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {name(file)}")
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_no_link_leaves_the_repository(page: Path) -> None:
    text = page.read_text()
    outside = [target for target in links(text) if SCHEME.match(target)]
    outside += BARE_URL.findall(prose(text))  # GitHub links a bare URL too
    assert outside == [], "a link to another site (name it in code, or drop it)"
    if page == README:  # it once sent readers to ../shared/docs/upstream.md, outside the checkout
        assert "../shared" not in text


def test_the_readme_links_every_page_of_docs() -> None:
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for target in links(README.read_text())
        if not SCHEME.match(target)
    }
    assert [name(page) for page in sorted(DOCS.glob("*.md")) if page not in linked] == []


def test_no_example_takes_task_1_for_the_one_just_submitted() -> None:
    """`make run` submits three demo tasks on an empty database: yours is not task 1."""
    for page in PAGES:
        assert not re.search(r"/api/tasks/1\b", page.read_text()), name(page)


def test_every_setting_is_documented() -> None:
    code = "".join(path.read_text() for path in sorted((ROOT / "tracker").rglob("*.py")))
    code += (ROOT / "gunicorn.conf.py").read_text() + (ROOT / "wsgi.py").read_text()
    read = set(
        re.findall(
            r'"((?:(?:LUMA|TRACKER|PUBLIC|DATABASE|SIMULATOR|WEB|GUNICORN|AWS|PROMETHEUS)_'
            r'[A-Z0-9_]*)|PORT|HOST)"',
            code,
        )
    )
    assert {"DATABASE_URL", "TRACKER_POLL_AFTER", "TRACKER_DEV_ENV", "PORT"} <= read
    page = SETTINGS_PAGE.read_text()
    missing = sorted(
        variable for variable in read if not variable.endswith("_") and f"`{variable}`" not in page
    )
    assert missing == [], "add them to docs/settings.md"
    # a prefix (LUMA_ACCOUNT_) is documented with each of its suffixes, as the code spells them
    from tracker.upstream.accounts import _SETTING, ACCOUNT_PREFIX

    suffixes = re.search(r"\(((?:[A-Z_]+\|)+[A-Z_]+)\)", _SETTING.pattern)
    assert suffixes is not None
    for suffix in suffixes.group(1).split("|"):
        assert f"`{ACCOUNT_PREFIX}<NAME>_{suffix}`" in page or f"`_{suffix}`" in page, suffix
