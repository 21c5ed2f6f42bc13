"""The operations of Luma's own API in the dashboard, in headless Chromium: a tracker speaking
the luma dialect against the simulator (lumasim, flavor luma). A person picks a kind and sees
only its fields, with JavaScript and without; a completed video's page offers its operations.
The form's server side, kind by kind: tests/test_dashboard_operations.py.
"""

from __future__ import annotations

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
