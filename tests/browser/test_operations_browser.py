"""The operations of Luma's own API in the dashboard, in headless Chromium: a tracker speaking
the luma dialect against the simulator (lumasim, flavor luma). A person picks a kind and sees
only its fields, with JavaScript and without; a completed video's page offers its operations;
every kind, submitted through the form, ends completed with its archived copy on its page, with
callbacks and with a worker's queries alone (issue 20). The form's server side, kind by kind:
tests/test_dashboard_operations.py; the same by the API: tests/test_operations_end_to_end.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.support.waiting import api_task, wait_for

pytestmark = pytest.mark.browser

# the fields of the form that belong to one kind or another (notify_url is every kind's)
FIELDS = (
    "source_task_id", "source_video_url", "mode", "user_prompt", "negative_prompt",
    "image_url", "image_end_url", "first_frame_url", "style_url", "aspect_ratio", "resolution",
    "loop", "duration", "model_name", "image_model",
)  # fmt: skip
SHOWN = {
    "upscale": {"source_task_id", "resolution"},
    "audio": {"source_task_id", "user_prompt", "negative_prompt"},
    "image": {"user_prompt", "image_url", "style_url", "aspect_ratio", "image_model"},
    "modify": {"source_task_id", "source_video_url", "mode", "user_prompt", "first_frame_url",
               "model_name"},
}  # fmt: skip


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


@pytest.fixture
def luma_sim() -> Iterator[Any]:
    """The simulator speaking Luma's own API; its generations complete in under a second."""
    from lumasim.simulator import Simulator

    simulator = Simulator(flavor="luma", processing_after=0.2, complete_after=0.6).start()
    yield simulator
    simulator.stop()


def visible_fields(page: Any) -> set[str]:
    return {name for name in FIELDS if page.locator(f"#{name}").is_visible()}


def completed_video(server: Any, prompt: str) -> dict[str, Any]:
    answer = requests.post(f"{server.url}/api/tasks", json={"user_prompt": prompt}, timeout=10)
    assert answer.status_code == 201, answer.text
    task = answer.json()
    wait_for(lambda: api_task(server.url, task["id"])["state"] == "completed")
    return api_task(server.url, task["id"])


def test_a_completed_luma_video_offers_its_operations_and_upscale_sends_only_its_fields(
    live: Callable[..., Any], luma_sim: Any, page: Any
) -> None:
    server = live(luma_api_base=luma_sim.url, luma_api_flavor="luma")
    source = completed_video(server, "A lighthouse at dusk, slow push in")

    page.goto(f"{server.url}/tasks/{source['id']}")
    actions = page.locator(".detail-head .actions")
    for label in ("Extend", "Upscale", "Add audio", "Modify", "Reframe"):
        expect(actions.get_by_role("link", name=label, exact=True)).to_be_visible()

    page.goto(server.url + "/tasks/new")  # a generation's fields first
    expect(page.locator("#user_prompt")).to_be_visible()
    page.select_option("#kind", "upscale")
    expect(page.locator("#user_prompt")).to_be_hidden()
    assert visible_fields(page) == SHOWN["upscale"]
    expect(page.get_by_role("heading", name="Upscale a video", exact=True)).to_be_visible()
    page.fill("#source_task_id", source["upstream_id"])
    page.select_option("#resolution", "1080p")
    page.get_by_role("button", name="Submit").click()

    page.wait_for_url(lambda url: "/tasks/new" not in url)
    expect(page.locator(".flash-ok")).to_contain_text("submitted")
    task_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator(".fields dl").first).to_contain_text("upscale")
    expect(page.locator(".chain")).to_contain_text("Upscale of")
    expect(page.locator(".chain")).to_contain_text(f"#{source['id']}")
    expect(page.locator(".chain a")).to_have_count(1)  # its source, never itself
    stored = api_task(server.url, task_id)
    assert (stored["kind"], stored["source_task_id"]) == ("upscale", source["upstream_id"])
    assert stored["options"] == {"resolution": "1080p"}
    assert stored["state"] not in ("rejected", "failed"), stored.get("failure_reason")
    # the simulator remakes the source under its id; the page shows the new video when done
    expect(page.locator(".detail-head .badge")).to_have_text("completed")
    expect(page.locator(".media video")).to_have_count(1)


def test_the_upscale_link_fills_in_the_form(
    live: Callable[..., Any], luma_sim: Any, page: Any
) -> None:
    server = live(luma_api_base=luma_sim.url, luma_api_flavor="luma")
    source = completed_video(server, "A paper boat on a rainy street")
    page.goto(f"{server.url}/tasks/{source['id']}")
    page.get_by_role("link", name="Add audio").click()
    page.wait_for_url(lambda url: "/tasks/new?kind=audio&source=" in url)
    expect(page.locator("#kind")).to_have_value("audio")
    expect(page.locator("#source_task_id")).to_have_value(source["upstream_id"])
    assert visible_fields(page) == SHOWN["audio"]


def test_picking_a_kind_shows_its_fields_only(
    live: Callable[..., Any], luma_sim: Any, page: Any
) -> None:
    server = live(luma_api_base=luma_sim.url, luma_api_flavor="luma")
    page.goto(server.url + "/tasks/new")
    for kind in ("image", "modify", "audio", "upscale"):
        page.select_option("#kind", kind)
        assert visible_fields(page) == SHOWN[kind], kind
    page.fill("#source_task_id", "not a valid id!")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#source_task_id-error")).to_contain_text("not a valid task id")
    expect(page.locator("#kind")).to_have_value("upscale")  # it comes back as it was
    assert visible_fields(page) == SHOWN["upscale"]


def test_without_javascript_the_kind_is_picked_by_submitting(
    live: Callable[..., Any], luma_sim: Any, browser: Any
) -> None:
    """No script: the page shows the kind it was drawn for; Submit with another kind picked
    brings that kind's fields, sending nothing."""
    server = live(luma_api_base=luma_sim.url, luma_api_flavor="luma")
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(server.url + "/tasks/new")
        expect(page.locator("#user_prompt")).to_be_visible()
        expect(page.locator("#source_task_id")).to_be_hidden()
        page.select_option("#kind", "upscale")
        page.get_by_role("button", name="Submit").click()
        expect(page.locator("#source_task_id")).to_be_visible()
        assert visible_fields(page) == SHOWN["upscale"]
        page.fill("#source_task_id", "up-123")
        page.get_by_role("button", name="Submit").click()
        page.wait_for_url(lambda url: "/tasks/new" not in url)
        task_id = int(page.url.rsplit("/", 1)[1])
        assert api_task(server.url, task_id)["kind"] == "upscale"
    finally:
        context.close()


# --- every kind, end to end: the form, the upstream, the archived copy on the task's page ---

SELECTS = {"kind", "mode", "resolution", "aspect_ratio", "image_model"}  # the rest are typed in
UNFINISHED = ("queued", "submitting", "pending", "processing")


@pytest.fixture(params=[True, False], ids=["callbacks", "queries"])
def followed(
    request: pytest.FixtureRequest, live: Callable[..., Any], make_settings: Any, db: Any
) -> Iterator[tuple[Any, Any, bool]]:
    """(a tracker on the luma dialect, its simulator, callbacks on?) with a worker following
    the tasks in a thread of this process, its passes as `tracker worker` runs them. With
    callbacks the simulator calls the tracker's PUBLIC_BASE_URL and the worker only archives
    (it would query a task after a minute of quiet); without, its queries alone finish a task."""
    from lumasim.simulator import Simulator
    from tracker.flows import worker

    hooks = bool(request.param)
    simulator = Simulator(flavor="luma", processing_after=0.1, complete_after=0.3).start()
    common: dict[str, Any] = {"luma_api_base": simulator.url, "luma_api_flavor": "luma"}
    if not hooks:
        common["poll_after"] = 0.0
    server = live(callbacks=hooks, **common)
    settings = make_settings(public_base_url=server.url if hooks else "", **common)
    stop = threading.Event()

    def follow() -> None:
        while not stop.is_set():
            worker.run_once(settings, db=db)
            stop.wait(0.1)

    thread = threading.Thread(target=follow, name="worker", daemon=True)
    thread.start()
    try:
        yield server, simulator, hooks
    finally:
        stop.set()
        thread.join(timeout=10)
        simulator.stop()


def submit_form(page: Any, base: str, kind: str, given: dict[str, str]) -> int:
    """What a person does: open the form, pick the kind, fill in its fields, press Submit.
    The new task's id, from the task page the form leads to."""
    page.goto(base + "/tasks/new")
    page.select_option("#kind", kind)
    assert set(given) <= visible_fields(page), (kind, visible_fields(page))
    for name, value in given.items():
        if name in SELECTS:
            page.select_option(f"#{name}", value)
        else:
            page.fill(f"#{name}", value)
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(lambda url: "/tasks/new" not in url)
    expect(page.locator(".flash-ok")).to_contain_text("submitted")
    expect(page.locator(".fields dl").first).to_contain_text(kind)
    return int(page.url.rsplit("/", 1)[1])


def archived_on_its_page(page: Any, base: str, task_id: int, kind: str, hooks: bool) -> Any:
    """The task's page once its copy is archived (waited for by reading the task's JSON in
    the page's context, then the page opened): completed, the archived copy shown, and in its
    timeline its way there: queued first, completed by the simulator's callback or by a query.
    The task's JSON."""
    seen: dict[str, Any] = {}

    def finished() -> bool:
        seen.update(page.request.get(f"{base}/api/tasks/{task_id}").json())
        assert seen["state"] in (*UNFINISHED, "completed"), seen
        return bool(seen["media_url"])

    wait_for(finished, timeout=30, interval=0.1)
    what = "image" if kind == "image" else "video"
    page.goto(f"{base}/tasks/{task_id}")
    expect(page.locator(".detail-head .badge")).to_have_text("completed")
    copy = page.locator(f".media {'img.still' if what == 'image' else 'video'}")
    expect(copy).to_have_attribute("src", f"/media/{task_id}/{what}")
    expect(page.locator(".media")).to_contain_text("Archived copy.")
    expect(page.locator(".timeline li.event").first.locator(".badge")).to_have_text("queued")
    by, not_by = ("callback", "poll") if hooks else ("poll", "callback")
    into = page.locator(".transition .badge", has_text="completed")
    completed = page.locator(".timeline li.event").filter(has=into)
    expect(completed).to_have_count(1)
    expect(completed).to_have_class(f"event source-{by}")
    expect(page.locator(f".timeline li.source-{not_by}")).to_have_count(0)
    if what == "image":  # the browser shows it (a video's decoding rests on the codecs built in)
        page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=copy.element_handle())
    served = page.request.get(f"{base}/media/{task_id}/{what}")
    assert served.ok, served.status
    assert served.headers["content-type"].startswith("video/mp4" if what == "video" else "image/")
    return seen


def test_every_kind_goes_from_the_form_to_its_archived_copy(
    followed: tuple[Any, Any, bool], page: Any
) -> None:
    """Issue 20: generate, extend, upscale, audio, modify (of a task, and of a video by its
    URL), reframe and image, each submitted through the form in Chromium, end completed with
    their archived copy on their page; with callbacks, and with the worker's queries alone."""
    server, simulator, hooks = followed
    base = server.url
    made = submit_form(page, base, "generate", {"user_prompt": "A heron over a still lake"})
    source = archived_on_its_page(page, base, made, "generate", hooks)
    upstream_id, video_url, frame = (
        source[k] for k in ("upstream_id", "video_url", "thumbnail_url")
    )
    assert video_url.startswith(simulator.url + "/files/")  # a video the simulator serves

    # one source for them all; they go at once, but audio, which reruns the source itself
    # (as upscale does: Luma answers with the source's id), waits for the upscale to finish
    first: list[tuple[str, dict[str, str]]] = [
        ("extend", {"source_task_id": upstream_id, "user_prompt": "the heron lands"}),
        ("modify", {"source_task_id": upstream_id, "mode": "flex_2", "user_prompt": "in snow",
                    "first_frame_url": frame, "model_name": "ray-2"}),
        ("modify", {"source_video_url": video_url, "mode": "reimagine_3"}),
        ("reframe", {"source_task_id": upstream_id, "aspect_ratio": "9:16",
                     "user_prompt": "more sky"}),
        ("image", {"user_prompt": "a kite", "image_model": "photon-flash-1",
                   "aspect_ratio": "1:1", "style_url": frame}),
        ("upscale", {"source_task_id": upstream_id, "resolution": "1080p"}),
    ]  # fmt: skip
    then = (
        "audio",
        {"source_task_id": upstream_id, "user_prompt": "wings", "negative_prompt": "music"},
    )
    submitted = [(kind, given, submit_form(page, base, kind, given)) for kind, given in first]
    finished = [(k, g, archived_on_its_page(page, base, i, k, hooks)) for k, g, i in submitted]
    audio = submit_form(page, base, *then)
    finished.append((*then, archived_on_its_page(page, base, audio, then[0], hooks)))

    for kind, given, task in finished:
        assert task["kind"] == kind
        assert task["source_task_id"] == given.get("source_task_id")
        options = {
            ("model_name" if name == "image_model" else name): value
            for name, value in given.items()
            if name not in ("user_prompt", "source_task_id")
        }
        assert task["options"] == options, kind
        rerun = kind in ("upscale", "audio")  # the source's own id, a new video under it
        assert (task["upstream_id"] == upstream_id) is rerun, kind
        assert task["video_url"] != video_url, kind
    assert simulator.creates == 1 + len(finished)  # one create each, none sent twice
