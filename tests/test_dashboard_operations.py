"""The dashboard and the operations of a dialect (issue 20): the new-task form offers the kinds
the tracker's upstream offers, shows and sends only the chosen kind's fields, and a task's page
offers the operations on its video (or animates its image); the chain never lists a task as
its own source or as made from itself.

Flask's test client, on SQLite (and PostgreSQL when set), against a scripted upstream. What
a person sees in Chromium: tests/browser/test_operations_browser.py.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any, ClassVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape

from tests.support.dashboard import add_task, csrf_of, get
from tests.support.factory import set_fields
from tests.support.scripted import ScriptedUpstream
from tracker.db import Database
from tracker.flows import validate
from tracker.tasks.models import Task
from tracker.tasks.schema import task_json
from tracker.upstream import dialects

ALWAYS = {"csrf_token", "shown", "kind", "notify_url"}
# what the form shows and sends of each kind on Luma's own API (bodies.py, less what the
# dialect refuses: expand_prompt; a start image for an extend; files: URLs only)
ON_LUMA = {
    "generate": {"user_prompt", "image_url", "image_end_url", "aspect_ratio", "resolution",
                 "loop", "duration", "model_name"},
    "extend": {"source_task_id", "user_prompt", "image_end_url", "model_name"},
    "upscale": {"source_task_id", "resolution"},
    "audio": {"source_task_id", "user_prompt", "negative_prompt"},
    "modify": {"source_task_id", "source_video_url", "mode", "user_prompt", "first_frame_url",
               "model_name"},
    "reframe": {"source_task_id", "source_video_url", "user_prompt", "aspect_ratio", "model_name"},
    "image": {"user_prompt", "image_url", "style_url", "aspect_ratio", "model_name"},
}  # fmt: skip
ON_PROXY = {
    "generate": ON_LUMA["generate"] | {"expand_prompt", "image_url_file", "image_end_url_file"},
    "extend": {"source_task_id", "user_prompt", "expand_prompt", "image_url", "image_url_file",
               "image_end_url", "image_end_url_file", "model_name"},
}  # fmt: skip
# one value for every field of any kind: a form carrying all of them
EVERYTHING = {
    "source_task_id": "src-123",
    "source_video_url": "https://videos.example/in.mp4",
    "mode": "flex_2",
    "user_prompt": "a lighthouse at dusk",
    "negative_prompt": "wind noise",
    "expand_prompt": "true",
    "image_url": "https://images.example/start.png",
    "image_end_url": "https://images.example/end.png",
    "first_frame_url": "https://images.example/first.png",
    "style_url": "https://images.example/style.png",
    "aspect_ratio": "9:16",
    "resolution": "1080p",
    "loop": "true",
    "duration": "5s",
    "model_name": "ray-2",
}


class _Controls(HTMLParser):
    """The form controls a browser would send, with their values: none disabled, none inside a
    `hidden` or `disabled` element (the page as it is without JavaScript)."""

    VOID: ClassVar = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
                      "meta", "source", "track", "wbr"}  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, bool]] = []
        self.sent: dict[str, str] = {}
        self.ids: dict[str, str] = {}  # a control's name -> its id
        self.open: str | None = None  # the select or textarea being read, by its name
        self.options = 0  # of the open select, read so far
        self.chosen = False  # the open select's value is known (an option marked selected)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        off = (self.stack[-1][1] if self.stack else False) or any(
            name in found for name in ("hidden", "disabled")
        )
        if tag in ("input", "select", "textarea") and not off and found.get("name"):
            self.sent[found["name"]] = found.get("value", "")
            self.ids[found["name"]] = found.get("id", "")
            self.open = found["name"] if tag != "input" else None
            self.chosen, self.options = False, 0
        elif tag == "option" and self.open and not self.chosen:  # the selected one, else the first
            self.chosen, self.options = "selected" in found, self.options + 1
            if self.chosen or self.options == 1:
                self.sent[self.open] = found.get("value", "")
        if tag not in self.VOID:
            self.stack.append((tag, off))

    def handle_data(self, data: str) -> None:
        if self.open and self.stack and self.stack[-1][0] == "textarea":
            self.sent[self.open] += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("select", "textarea"):
            self.open = None
        while self.stack:
            if self.stack.pop()[0] == tag:
                break


def controls(page: str) -> _Controls:
    form = page[page.index('<form class="task-form"') : page.index("</form>") + 7]
    parser = _Controls()
    parser.feed(form)
    return parser


def offered_kinds(page: str) -> list[str]:
    select = re.search(r'<select id="kind" name="kind".*?</select>', page, re.S)
    assert select, "a kind select"
    return re.findall(r'<option value="([a-z]+)"', select.group(0))


def chain_of(page: str) -> str:
    return page[page.index('<section class="chain"') : page.index("</section>", page.index(
        '<section class="chain"'))]  # fmt: skip


@pytest.fixture
def luma(make_app: Callable[..., Flask], upstream: ScriptedUpstream) -> FlaskClient:
    """A tracker speaking Luma's own API (its upstream scripted: every create accepted)."""
    return make_app(luma_api_base=upstream.url, luma_api_flavor="luma").test_client()


@pytest.fixture
def proxy(make_app: Callable[..., Flask], upstream: ScriptedUpstream) -> FlaskClient:
    return make_app(luma_api_base=upstream.url).test_client()


def post_form(client: FlaskClient, data: dict[str, Any]) -> tuple[int, str, str]:
    _, page = get(client, "/tasks/new")
    response = client.post("/tasks/new", data={"csrf_token": csrf_of(page), **data})
    return (
        response.status_code,
        response.get_data(as_text=True),
        response.headers.get("Location", ""),
    )


# -- the kinds and their fields ---------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ON_LUMA))
def test_on_luma_the_form_shows_only_the_kinds_fields(luma: FlaskClient, kind: str) -> None:
    status, page = get(luma, f"/tasks/new?kind={kind}")
    assert status == 200
    assert offered_kinds(page) == list(ON_LUMA)
    assert set(controls(page).sent) == ALWAYS | ON_LUMA[kind]
    assert f'<option value="{kind}" selected>' in page
    assert re.search(rf'<span data-kinds="{kind}">[^<]+</span>', page), "its heading shows"
    assert re.search(r'<label for="user_prompt">Prompt', page)


def test_on_luma_an_image_is_asked_its_model_from_a_list(luma: FlaskClient) -> None:
    _, page = get(luma, "/tasks/new?kind=image")
    assert controls(page).ids["model_name"] == "image_model"
    select = re.search(r'<select id="image_model" name="model_name">.*?</select>', page, re.S)
    assert select and re.findall(r'<option value="([^"]*)"', select.group(0)) == [
        "",
        "photon-1",
        "photon-flash-1",
    ]
    _, page = get(luma, "/tasks/new?kind=modify")
    select = re.search(r'<select id="mode" name="mode">.*?</select>', page, re.S)
    assert select and len(re.findall(r'<option value="\w+_[123]"', select.group(0))) == 9
    assert controls(page).ids["model_name"] == "model_name"  # a video's: typed


@pytest.mark.parametrize("kind", ["generate", "extend"])
def test_the_proxy_offers_generate_and_extend_only(proxy: FlaskClient, kind: str) -> None:
    status, page = get(proxy, f"/tasks/new?kind={kind}")
    assert status == 200
    assert offered_kinds(page) == ["generate", "extend"]
    assert set(controls(page).sent) == ALWAYS | ON_PROXY[kind]
    for name in ("mode", "negative_prompt", "source_video_url", "first_frame_url", "style_url"):
        assert f'name="{name}"' not in page, name  # no field of a kind it does not offer


def test_a_link_fills_in_the_kind_and_its_source(luma: FlaskClient) -> None:
    _, page = get(luma, "/tasks/new?kind=upscale&source=up-42")
    sent = controls(page).sent
    assert (sent["kind"], sent["shown"], sent["source_task_id"]) == ("upscale", "upscale", "up-42")
    _, page = get(luma, "/tasks/new?source=up-42")  # a source alone: an extend, as before
    assert controls(page).sent["kind"] == "extend"
    image = "https://cdn.example/still.jpg?sig=a&b=c"
    _, page = get(luma, "/tasks/new", query_string={"kind": "generate", "image_url": image})
    sent = controls(page).sent
    assert (sent["kind"], sent["image_url"]) == ("generate", image)


# -- each form offers only what its dialect takes (issue 22) ----------------------------------


def test_the_luma_extend_form_offers_no_start_image(luma: FlaskClient) -> None:
    _, page = get(luma, "/tasks/new?kind=extend&source=up-42")
    shown = controls(page).sent
    assert "image_url" not in shown and "image_url_file" not in shown
    assert "image_end_url" in shown  # its last frame is still offered
    fieldset = re.search(
        r'<fieldset[^>]*data-kinds="([^"]*)"[^>]*>\s*<legend>.*?for="image_url"', page, re.S
    )
    assert fieldset and "extend" not in fieldset.group(1).split()
    # and Luma's own API would refuse it (upstream/luma.py `_refused`)
    with pytest.raises(validate.ValidationError) as refused:
        validate.new_task(
            {"kind": "extend", "source_task_id": "up-42", "user_prompt": "on",
             "image_url": "https://images.example/a.png"},
            "luma",
        )  # fmt: skip
    assert refused.value.field == "image_url"


VALUES = EVERYTHING | {"expand_prompt": True, "loop": True}  # as JSON has them
REQUIRED = {
    "generate": {"user_prompt": "a kite"},
    "extend": {"source_task_id": "up-42", "user_prompt": "on"},
    "upscale": {"source_task_id": "up-42"},
    "audio": {"source_task_id": "up-42"},
    "modify": {"source_task_id": "up-42", "mode": "flex_2"},
    "reframe": {"source_task_id": "up-42", "aspect_ratio": "9:16"},
    "image": {"user_prompt": "a kite", "model_name": "photon-1"},
}


@pytest.mark.parametrize("flavor", ["luma", "proxy"])
def test_no_form_offers_a_field_its_dialect_refuses(
    make_app: Callable[..., Flask], upstream: ScriptedUpstream, flavor: str
) -> None:
    """Every field the form shows for a kind, filled in, passes the dialect's own checks."""
    client = make_app(luma_api_base=upstream.url, luma_api_flavor=flavor).test_client()
    expected = ON_LUMA if flavor == "luma" else ON_PROXY
    for kind in dialects.get(flavor).kinds:
        _, page = get(client, f"/tasks/new?kind={kind}")
        shown = set(controls(page).sent) - {"csrf_token", "shown", "kind", "notify_url"}
        assert shown == expected[kind], kind
        for name in shown - {"image_url_file", "image_end_url_file"}:
            body = {
                "kind": kind,
                **REQUIRED[kind],
                name: REQUIRED[kind].get(name, VALUES[name]),
            }
            if name == "source_video_url":
                body.pop("source_task_id")  # one source or the other
            try:
                validate.new_task(body, flavor)
            except validate.ValidationError as exc:
                pytest.fail(f"{flavor} {kind} offers {name}, which it refuses: {exc.message}")


# -- a kind the upstream does not offer ---------------------------------------------------------


def test_a_kind_the_proxy_does_not_offer_is_an_error_beside_the_kind(
    proxy: FlaskClient, db: Database, upstream: ScriptedUpstream
) -> None:
    status, page = get(proxy, "/tasks/new?kind=upscale&source=up-1")
    assert status == 400
    assert 'id="kind-error"' in page and "LUMA_API_FLAVOR=luma" in page
    assert controls(page).sent["kind"] == "generate"  # the fields shown: a kind it offers
    status, page, _ = post_form(proxy, {"kind": "upscale", "source_task_id": "up-1"})
    assert status == 400
    error = re.search(r'<p class="field-error" id="kind-error">([^<]+)</p>', page)
    assert error and "Operation upscale is offered by Luma" in error.group(1)
    assert 'aria-describedby="kind-error"' in page
    with db.read() as session:
        assert session.query(Task).count() == 0
    assert upstream.creates() == []


def test_an_unknown_kind_is_an_error_beside_the_kind(luma: FlaskClient, db: Database) -> None:
    status, page = get(luma, "/tasks/new?kind=teleport")
    assert status == 400 and 'id="kind-error"' in page
    status, page, _ = post_form(luma, {"kind": "teleport", "user_prompt": "x"})
    assert status == 400 and 'id="kind-error"' in page and "Operation must be one of" in page
    with db.read() as session:
        assert session.query(Task).count() == 0


# -- what is sent -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ON_LUMA))
def test_each_kind_sends_its_own_fields_and_no_other(
    luma: FlaskClient, db: Database, upstream: ScriptedUpstream, kind: str
) -> None:
    """The form as a script would post it, every field of every kind filled in: only the
    chosen kind's reach the task (another kind's would be refused by the kind's model)."""
    data = {**EVERYTHING, "kind": kind, "shown": kind}
    if kind == "image":
        data["model_name"] = "photon-flash-1"
    if kind in ("modify", "reframe"):
        data.pop("source_task_id")  # one source or the other (a URL: sent at once)
    status, page, location = post_form(luma, data)
    assert status == 303, re.findall(r'class="field-error"[^>]*>([^<]+)', page)
    task_id = int(location.rsplit("/", 1)[1])
    with db.read() as session:
        task = session.get(Task, task_id)
        assert task is not None
        shown = task_json(task)
    assert shown["kind"] == kind
    given = {name for name in ON_LUMA[kind] if name in data and name != "user_prompt"}
    stored = {name for name in EVERYTHING if shown.get(name) or shown["options"].get(name)}
    assert stored - {"user_prompt"} == given, "its own fields, and no other kind's"
    sent = str(upstream.creates()[-1].body)  # what Luma was asked, in its words
    assert ("wind noise" in sent) == (kind == "audio")
    assert ("style.png" in sent) == (kind == "image")
    assert ("first.png" in sent) == (kind == "modify")


def test_empty_fields_are_not_sent_and_errors_show_beside_their_field(
    luma: FlaskClient, db: Database
) -> None:
    status, page, _ = post_form(luma, {"kind": "modify", "source_task_id": "", "mode": ""})
    assert status == 400
    assert 'id="mode-error">Mode is required' in page
    assert 'aria-describedby="mode-error"' in page
    status, page, _ = post_form(luma, {"kind": "reframe", "source_video_url": "ftp://x"})
    assert status == 400
    assert 'id="aspect_ratio-error">Aspect ratio is required' in page
    assert 'id="source_video_url-error">Source video URL must be an http(s) URL' in page
    status, page, _ = post_form(
        luma, {"kind": "image", "user_prompt": "  ", "model_name": "photon-9"}
    )
    assert status == 400
    assert 'id="user_prompt-error">Prompt must not be empty' in page
    assert 'id="image_model-error">Model must be one of photon-1, photon-flash-1' in page
    assert 'aria-describedby="image_model-error"' in page
    status, page, _ = post_form(
        luma, {"kind": "upscale", "source_task_id": "up-1", "resolution": ""}
    )
    assert status == 303  # an empty resolution: the upstream's default, not an error
    with db.read() as session:
        task = session.query(Task).one()
        assert (task.kind, task.options) == ("upscale", {})


def test_a_kind_picked_without_javascript_shows_its_fields_and_sends_nothing(
    luma: FlaskClient, db: Database, upstream: ScriptedUpstream
) -> None:
    """The page without JavaScript shows the fields of the kind it was drawn for (`shown`); a
    POST that picks another comes back with that kind's fields, the values kept."""
    status, page, _ = post_form(
        luma, {"shown": "generate", "kind": "audio", "user_prompt": "rain on a tin roof"}
    )
    assert status == 200
    sent = controls(page).sent
    assert set(sent) == ALWAYS | ON_LUMA["audio"]
    assert (sent["shown"], sent["kind"]) == ("audio", "audio")
    assert ">rain on a tin roof</textarea>" in page
    assert 'class="field-error"' not in page
    with db.read() as session:
        assert session.query(Task).count() == 0
    assert upstream.creates() == []


# -- the task's page --------------------------------------------------------------------------


OPERATIONS = {"upscale": "Upscale", "audio": "Add audio", "modify": "Modify", "reframe": "Reframe"}


def test_a_completed_luma_video_offers_its_operations(luma: FlaskClient, db: Database) -> None:
    task_id = add_task(
        db, state="completed", upstream="luma", upstream_id="lu-1",
        video_url="https://cdn.example/v.mp4",
    )  # fmt: skip
    _, page = get(luma, f"/tasks/{task_id}")
    assert 'href="/tasks/new?source=lu-1">Extend</a>' in page
    for kind, label in OPERATIONS.items():
        assert f'href="/tasks/new?kind={kind}&amp;source=lu-1">{label}</a>' in page, kind
    running = add_task(db, state="processing", upstream="luma", upstream_id="lu-2")
    _, page = get(luma, f"/tasks/{running}")
    assert "kind=upscale" not in page and ">Extend<" not in page


def test_a_proxy_video_offers_only_extend(
    luma: FlaskClient, proxy: FlaskClient, db: Database
) -> None:
    task_id = add_task(db, state="completed", upstream="proxy", upstream_id="px-1")
    for client in (luma, proxy):
        _, page = get(client, f"/tasks/{task_id}")
        assert 'href="/tasks/new?source=px-1">Extend</a>' in page
        assert "kind=upscale" not in page and "Add audio" not in page
    # a Luma video, on a tracker now speaking the proxy: nothing it could not send
    luma_task = add_task(db, state="completed", upstream="luma", upstream_id="lu-9")
    _, page = get(proxy, f"/tasks/{luma_task}")
    assert "kind=upscale" not in page and ">Extend</a>" in page


def test_an_image_task_shows_its_image_and_offers_animate(luma: FlaskClient, db: Database) -> None:
    still = "https://cdn.example/still.jpg?sig=a&x=1"
    task_id = add_task(
        db, state="completed", kind="image", upstream="luma", upstream_id="img-1",
        thumbnail_url=still,
    )  # fmt: skip
    _, page = get(luma, f"/tasks/{task_id}")
    assert "<video" not in page and ">Extend<" not in page and "kind=upscale" not in page
    assert f'<img class="still" src="{escape(still)}"' in page
    animate = re.search(r'<a class="button primary" href="([^"]+)">Animate</a>', page)
    assert animate, "an Animate button"
    _, form = get(luma, html.unescape(animate.group(1)))  # a new generation from the image
    sent = controls(form).sent
    assert (sent["kind"], sent["image_url"]) == ("generate", still)
    # the archived copy, once there is one
    set_fields(db, task_id, media_path=f"{task_id}.jpg")
    with db.read() as session:
        archived = task_json(session.get(Task, task_id))["media_url"]  # type: ignore[arg-type]
    _, page = get(luma, f"/tasks/{task_id}")
    assert f'<img class="still" src="{archived}"' in page and "Archived copy." in page


def test_an_image_that_would_leave_the_site_by_a_path_is_no_source(
    luma: FlaskClient, db: Database
) -> None:
    task_id = add_task(
        db, state="completed", kind="image", upstream_id="img-2", thumbnail_url="/\t/evil.example/x"
    )
    _, page = get(luma, f"/tasks/{task_id}")
    assert 'class="still"' not in page and "Animate" not in page


# -- the chain ----------------------------------------------------------------------------------


def test_the_chain_never_lists_a_task_as_its_own_source_or_extension(
    luma: FlaskClient, db: Database
) -> None:
    """Luma's upscale and audio keep the source's upstream id: their tasks share it."""
    source = add_task(db, "the original", state="completed", upstream="luma", upstream_id="X")
    upscale = add_task(db, state="completed", kind="upscale", source="X", upstream_id="X")
    audio = add_task(db, state="processing", kind="audio", source="X", upstream_id="X")
    extend = add_task(db, "further", state="completed", source="X", upstream_id="Y")

    chain = chain_of(get(luma, f"/tasks/{source}")[1])
    assert f'href="/tasks/{source}"' not in chain
    for made in (upscale, audio, extend):
        assert f'href="/tasks/{made}"' in chain, made
    assert "Made from it:" in chain

    for derived, words in ((upscale, "Upscale of"), (audio, "Audio added to")):
        chain = chain_of(get(luma, f"/tasks/{derived}")[1])
        assert words in chain
        assert re.findall(r'href="/tasks/(\d+)"', chain) == [str(source)], derived

    chain = chain_of(get(luma, f"/tasks/{extend}")[1])
    assert re.findall(r'href="/tasks/(\d+)"', chain) == [str(source)]  # not the remakes of X
    assert "Extend of" in chain

    # an upscale of a video this tracker did not make: nothing to link, never itself
    alone = add_task(db, state="completed", kind="upscale", source="Z", upstream_id="Z")
    chain = chain_of(get(luma, f"/tasks/{alone}")[1])
    assert "href=" not in chain and "did not make" in chain
