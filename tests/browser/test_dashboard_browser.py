"""The dashboard in headless Chromium against the app in a real server thread and the
simulated upstream: what a person sees and does. `make screenshots` refreshes the README's
pictures in docs/img/ from the last test here; a plain test run leaves them alone.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.dashboard import PNG, SCREENSHOTS, add_task
from tests.support.receiver import Receiver
from tests.support.waiting import api_task, wait_for
from tracker.db import Database
from tracker.flows import archive as media
from tracker.flows.notify import Sender
from tracker.flows.services import make_client
from tracker.settings import Settings
from tracker.tasks import heartbeats
from tracker.tasks.models import Delivery

pytestmark = pytest.mark.browser

TOKEN = "browser-admin-token-0123456789"
HOSTILE = (
    "<script>window.__pwned = 1; alert('script')</script>"
    "<img src=x onerror=\"window.__pwned = 2; alert('img')\"> a lighthouse"
)


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def submit(server: Any, prompt: str, **fields: Any) -> dict[str, Any]:
    response = requests.post(
        f"{server.url}/api/tasks", json={"user_prompt": prompt, **fields}, timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()


def state_of(server: Any, task_id: int) -> str:
    return api_task(server.url, task_id)["state"]


def row(page: Any, task_id: int) -> Any:
    return page.locator(f'tr[data-task-id="{task_id}"]')


def ids_on(page: Any) -> list[int]:
    return [
        int(x)
        for x in page.locator("tr[data-task-id]").evaluate_all(
            "rows => rows.map(r => r.dataset.taskId)"
        )
    ]


# -- the list -------------------------------------------------------------------------------


def test_the_list_shows_tasks_and_the_tabs_and_search_filter_it(
    live: Callable[..., Any], db: Database, page: Any
) -> None:
    server = live()
    done = add_task(db, "A lighthouse in a storm, waves crashing", state="completed")
    failed = add_task(
        db, "Desert caravan at noon", state="failed", failure_reason="Frame moderation failed"
    )
    running = add_task(db, "Lighthouse beam sweeping the fog", state="processing")
    page.goto(server.url + "/")
    expect(page.locator("tr[data-task-id]")).to_have_count(3)
    assert ids_on(page) == [running, failed, done]
    expect(row(page, failed)).to_contain_text("Frame moderation failed")
    expect(page.locator(".tabs a", has_text="failed")).to_contain_text("1")

    page.locator(".tabs a", has_text="failed").click()
    page.wait_for_url("**/?state=failed")
    assert ids_on(page) == [failed]

    page.locator(".tabs a", has_text="All").click()
    page.fill("#q", "lighthouse")
    page.press("#q", "Enter")
    page.wait_for_url("**/?q=lighthouse")
    assert ids_on(page) == [running, done]
    expect(page.locator(".summary")).to_contain_text("lighthouse")

    page.locator(".tabs a", has_text="completed").click()  # the search stays
    page.wait_for_url("**/?state=completed&q=lighthouse")
    assert ids_on(page) == [done]
    expect(page.locator("#q")).to_have_value("lighthouse")

    page.fill("#q", "zeppelin")
    page.press("#q", "Enter")
    expect(page.locator(".empty")).to_contain_text("Nothing matches zeppelin")


def test_live_refresh_shows_a_task_complete_without_a_reload(
    live: Callable[..., Any], slow_sim: Any, db: Database, page: Any
) -> None:
    server = live(luma_api_base=slow_sim.url)
    for n in range(40):  # a page long enough to scroll, all matching the search
        add_task(db, f"lighthouse study {n}", state="completed")
    task = submit(server, "A lighthouse at dusk, slow push in")
    wait_for(lambda: state_of(server, task["id"]) == "processing")

    page.goto(server.url + "/?q=lighthouse")
    badge = row(page, task["id"]).locator(".badge")
    expect(badge).to_have_text("processing")
    expect(page.locator("[data-live-status]")).to_contain_text("Live")
    page.evaluate("window.__sameDocument = true")
    # an unchanged row keeps its node: nothing is rebuilt, no thumbnail fetched again
    page.evaluate("document.querySelector('tr[data-task-id]:last-child').__kept = true")
    page.fill("#q", "lighthouse at")  # typed, not submitted: the refresh must not eat it
    page.mouse.move(600, 500)
    page.mouse.wheel(0, 600)
    page.wait_for_function("() => window.scrollY > 300")
    scrolled = page.evaluate("window.scrollY")

    slow_sim.set_state(task["upstream_id"], "completed")
    assert slow_sim.send_callback(task["upstream_id"]) == 200

    expect(badge).to_have_text("completed")
    assert page.evaluate("window.__sameDocument") is True, "no reload"
    assert page.evaluate("document.querySelector('tr[data-task-id]:last-child').__kept") is True
    assert page.url.endswith("/?q=lighthouse")
    assert abs(page.evaluate("window.scrollY") - scrolled) < 2
    expect(page.locator("#q")).to_have_value("lighthouse at")
    expect(page.locator(".tabs a", has_text="processing")).to_contain_text("0")


def test_the_detail_of_a_running_task_shows_the_video_when_it_arrives(
    live: Callable[..., Any], slow_sim: Any, page: Any
) -> None:
    server = live(luma_api_base=slow_sim.url)
    task = submit(server, "A kite over the dunes")
    wait_for(lambda: state_of(server, task["id"]) == "processing")
    page.goto(f"{server.url}/tasks/{task['id']}")
    expect(page.locator(".placeholder")).to_contain_text("when it is ready")
    page.evaluate("window.__sameDocument = true")
    page.locator(".timeline summary").first.click()  # an open payload stays open

    slow_sim.set_state(task["upstream_id"], "completed")
    assert slow_sim.send_callback(task["upstream_id"]) == 200

    expect(page.locator("video")).to_have_count(1)
    expect(page.locator(".detail-head .badge")).to_have_text("completed")
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator(".timeline details").first.get_attribute("open") is not None
    assert page.locator("#task-detail").get_attribute("data-live-url") is None  # final: stops


def test_the_refresh_pauses_while_the_tab_is_hidden(
    live: Callable[..., Any], db: Database, page: Any
) -> None:
    server = live()
    add_task(db, "anything", state="processing")
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if r.headers.get("x-live") else None)
    page.clock.install()  # the page's timers run on a clock the test moves, not in real time
    page.goto(server.url + "/")
    with page.expect_request(lambda r: r.headers.get("x-live") == "1", timeout=8000):
        page.clock.run_for(3000)  # the first refresh, the list's 3 s interval in
    page.evaluate(HIDE)
    expect(page.locator("[data-live-status]")).to_contain_text("Paused")
    seen = len(fetched)
    page.clock.run_for(4000)  # longer than the 3 s interval: every timer due by then fires
    page.wait_for_timeout(500)  # (real time) for a request a timer may have started
    assert len(fetched) == seen, "no refresh while hidden"
    with page.expect_request(lambda r: r.headers.get("x-live") == "1", timeout=1500):
        page.evaluate(HIDE.replace("'hidden'", "'visible'"))  # back: refreshed at once
    expect(page.locator("[data-live-status]")).to_contain_text("Live")


HIDE = """() => {
    Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
    document.dispatchEvent(new Event('visibilitychange'));
}"""


# -- the detail, the chain and the form -----------------------------------------------------


def test_the_detail_plays_the_video_shows_the_timeline_and_extends(
    live: Callable[..., Any], sim: Any, page: Any
) -> None:
    server = live(luma_api_base=sim.url)
    task = submit(server, "A paper boat on a rainy street, macro")
    wait_for(lambda: state_of(server, task["id"]) == "completed")
    video_url = api_task(server.url, task["id"])["video_url"]

    page.goto(f"{server.url}/tasks/{task['id']}")
    video = page.locator("video")
    expect(video).to_have_attribute("src", video_url)
    page.wait_for_function("() => document.querySelector('video').readyState >= 1")  # real MP4
    assert page.evaluate("document.querySelector('video').videoWidth") == 320
    events = page.locator(".timeline .event")
    assert events.count() >= 3  # submit, accepted; callbacks processing and completed
    expect(page.locator(".timeline")).to_contain_text("callback")
    payload = events.filter(has_text="callback").last.locator("details")
    payload.locator("summary").click()
    expect(payload.locator("pre")).to_contain_text('"state": "completed"')

    page.get_by_role("link", name="Extend").click()
    page.wait_for_url(lambda url: "/tasks/new?source=" in url)
    expect(page.locator("#source_task_id")).to_have_value(task["upstream_id"])
    page.fill("#user_prompt", "The boat drifts into a storm drain")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url("**/tasks/*")
    expect(page.locator(".flash-ok")).to_contain_text("submitted")
    expect(page.locator(".chain")).to_contain_text(f"#{task['id']}")
    child_id = int(page.url.rsplit("/", 1)[1])
    page.locator(".chain a", has_text=f"#{task['id']}").click()
    expect(page.locator(".chain")).to_contain_text(f"#{child_id}")


def test_the_form_shows_errors_beside_fields_and_then_submits(
    live: Callable[..., Any], sim: Any, db: Database, page: Any
) -> None:
    server = live(luma_api_base=sim.url)
    page.goto(server.url + "/tasks/new")
    expect(page.locator("#source_task_id")).to_be_hidden()  # a generation's fields: no source
    page.select_option("#kind", "extend")
    page.fill("#source_task_id", "bad id!")
    page.fill("#image_url", "ftp://example.com/a.png")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#user_prompt-error")).to_have_text("Prompt must not be empty")
    expect(page.locator("#source_task_id-error")).to_contain_text("not a valid task id")
    expect(page.locator("#image_url-error")).to_contain_text("http(s) URL")
    expect(page.locator("#source_task_id")).to_have_value("bad id!")  # kept
    expect(page.locator("#user_prompt")).to_have_attribute("aria-invalid", "true")

    page.select_option("#kind", "generate")  # the source id is hidden, and not sent
    expect(page.locator("#source_task_id")).to_be_hidden()
    page.fill("#image_url", "")
    page.fill("#user_prompt", "A hot-air balloon over terraced fields")
    page.set_input_files(
        "#image_url_file", files=[{"name": "start.png", "mimeType": "image/png", "buffer": PNG}]
    )
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url("**/tasks/*")
    expect(page.locator(".flash-ok")).to_contain_text("submitted")
    task_id = int(page.url.rsplit("/", 1)[1])
    stored = requests.get(f"{server.url}/api/tasks/{task_id}", timeout=5).json()
    assert stored["image_url"].startswith("data:image/png;base64,")
    assert stored["kind"] == "generate"
    with db.read() as session:
        from tracker.tasks.models import Task

        full = session.get(Task, task_id)
        assert full is not None
        assert full.image_url == "data:image/png;base64," + base64.b64encode(PNG).decode()


def test_a_hostile_prompt_stays_text(
    live: Callable[..., Any], db: Database, page: Any, dialogs: list[str]
) -> None:
    server = live()
    task_id = add_task(
        db,
        HOSTILE,
        state="processing",
        failure_reason=HOSTILE,
        events=[{"state": "processing", "prompt": HOSTILE}],
    )
    page.goto(server.url + "/")
    expect(row(page, task_id).locator(".prompt")).to_contain_text("<script>window.__pwned")
    page.goto(f"{server.url}/tasks/{task_id}")
    expect(page.locator(".prompt-full")).to_have_text(HOSTILE)
    page.locator(".timeline summary").first.click()
    expect(page.locator(".timeline pre").first).to_contain_text("onerror")
    page.wait_for_timeout(2500)  # a live refresh swaps the region in: still text
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("main script").count() == 0
    assert dialogs == []


def test_signing_in_with_the_token(live: Callable[..., Any], db: Database, page: Any) -> None:
    server = live(api_token=TOKEN)
    task_id = add_task(db, "behind the login", state="completed")
    page.goto(f"{server.url}/tasks/{task_id}")
    page.wait_for_url(lambda url: "/login?next=" in url)
    page.fill("#token", "not it")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".flash-error")).to_contain_text("not the token")
    page.fill("#token", TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/tasks/{task_id}")
    expect(page.locator(".prompt-full")).to_have_text("behind the login")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login")


def test_the_pages_fit_a_phone(live: Callable[..., Any], db: Database, browser: Any) -> None:
    server = live()
    task_id = add_task(
        db,
        "A very long prompt " * 30,
        state="failed",
        upstream_id="u" * 60,
        failure_reason="a reason that goes on " * 20,
    )
    long_target = "https://hooks.example/" + "a-very-long-path/" * 12
    add_delivery(db, task_id, "failed", [ATTEMPT | {"response": "no " * 80}], target=long_target)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = context.new_page()
    try:
        for path in ("/", f"/tasks/{task_id}", "/tasks/new"):
            phone.goto(server.url + path)
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{path} is {width}px wide on a 390px phone"
        phone.goto(server.url + "/")
        assert_placeholder_whole(phone.locator("#upstream_id"))
    finally:
        context.close()


ATTEMPT = {"at": "2026-03-04T05:06:07.123456Z", "status": 503, "latency_ms": 41}


def add_delivery(
    db: Database, task_id: int, state: str, attempts: list[Any], target: str = "https://h.example/"
) -> None:
    """A webhook row of the task, as a worker leaves it."""
    with db.write() as session:
        session.add(
            Delivery(
                task_id=task_id,
                webhook_id=f"msg_{task_id}_{state}",
                type="task.failed",
                target=target,
                target_kind="task",
                state=state,
                attempts=attempts,
            )
        )


PLACEHOLDER_FITS = """el => {
    const style = getComputedStyle(el);
    const pen = document.createElement('canvas').getContext('2d');
    pen.font = style.font;
    const room = el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return [pen.measureText(el.placeholder).width, room];
}"""


def assert_placeholder_whole(field: Any) -> None:
    needed, room = field.evaluate(PLACEHOLDER_FITS)
    assert needed <= room, f"the placeholder needs {needed:.0f}px, the field has {room:.0f}px"


@pytest.mark.parametrize("path", ["/no/such/page", "/tasks/987654"])
def test_the_404_page_is_centred(live: Callable[..., Any], page: Any, path: str) -> None:
    server = live()
    page.goto(server.url + path)
    box = page.locator(".message").bounding_box()
    middle = box["x"] + box["width"] / 2
    for part in (".status-code", "h1", ".message > p:not(.status-code)"):
        found = page.locator(part).first.bounding_box()
        assert abs(found["x"] + found["width"] / 2 - middle) < 2, part
    expect(page.locator(".status-code")).to_have_text("404")


def test_the_import_field_and_the_deliveries_card_use_the_width(
    live: Callable[..., Any], db: Database, page: Any
) -> None:
    server = live()
    page.goto(server.url + "/")
    assert_placeholder_whole(page.locator("#upstream_id"))
    assert_placeholder_whole(page.locator("#import_notify_url"))
    task_id = add_task(db, "with webhooks", state="completed", upstream_id="up-1")
    add_delivery(db, task_id, "failed", [ATTEMPT | {"response": "busy"}])
    page.goto(f"{server.url}/tasks/{task_id}")
    card = page.locator("section.deliveries")
    expect(card).to_contain_text("2026-03-04 05:06:07 UTC")
    table, box = page.locator(".deliveries-table").bounding_box(), card.bounding_box()
    timeline = page.locator("section.timeline").bounding_box()
    assert (box["x"], box["width"]) == (timeline["x"], timeline["width"]), "a card as Timeline's"
    assert table["width"] >= box["width"] - 2 * 17, "the table spans its card"
    look = "el => [getComputedStyle(el).backgroundColor, getComputedStyle(el).borderTopWidth]"
    assert card.evaluate(look) == page.locator("section.timeline").evaluate(look)


# -- screenshots for the README -------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # taken once
def test_screenshots(
    live: Callable[..., Any],
    sim: Any,
    db: Database,
    page: Any,
    tmp_path: Any,
    make_settings: Callable[..., Settings],
    receiver: Receiver,
) -> None:
    """The dashboard a newcomer sees after `make run`, as the README shows it: every task in
    the list with its state and a live worker, and an extension's page playing its archived
    video, with the webhooks sent for it. The pictures go to docs/img/ only under `make
    screenshots` (UPDATE_SCREENSHOTS=1), so that running the tests never changes the checkout.

    The worker is this test's own: its heartbeat (tasks/heartbeats.py, as `tracker worker`
    keeps one) and, under its name, the worker's archive and delivery passes, run here rather
    than in a loop so that the queued task stays queued for the picture."""
    folder = SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    settings = make_settings(luma_api_base=sim.url, notify_allow_private=True)
    server = live(luma_api_base=sim.url, notify_allow_private=True)
    with heartbeats.Heartbeat(db, heartbeats.new_id()).running() as worker:
        _take_screenshots(server, sim, db, page, folder, settings, receiver, worker)
    for name in ("list.png", "detail.png"):
        assert (folder / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def _take_screenshots(
    server: Any,
    sim: Any,
    db: Database,
    page: Any,
    folder: Path,
    settings: Settings,
    receiver: Receiver,
    worker: heartbeats.Heartbeat,
) -> None:
    prompts = [
        "A lighthouse at dusk, waves breaking, slow push in",
        "Continue: the beam sweeps across the fog bank",
        "Paper boat drifting down a rainy street, macro lens",
        "Neon-lit alley in the rain, camera tracking a cyclist",
        "Time-lapse of clouds over a mountain lake",
    ]
    tasks = [submit(server, prompt) for prompt in prompts]
    wait_for(lambda: state_of(server, tasks[0]["id"]) == "completed")
    extension = submit(
        server,
        "Continue: the keeper climbs the stairs as the light turns",
        source_task_id=tasks[0]["upstream_id"],
        notify_url=receiver.url + "/hooks/luma",
    )
    tasks.append(extension)
    add_task(
        db,
        "Fail: a crowd scene the moderator will not like",
        state="failed",
        upstream_id="3f1c0b8e-5a0d-4c1e-9e57-2f6b1d0c9a11",
        failure_reason="Frame moderation failed",
    )
    add_task(
        db,
        "Extend with a sunrise",
        state="rejected",
        source="not-a-real-id",
        failure_reason="upstream refused: Luma extends only a completed generation",
    )
    wait_for(lambda: all(state_of(server, t["id"]) == "completed" for t in tasks))
    add_task(
        db,
        "Snow falling on a quiet village square",
        state="processing",
        upstream_id="9b2e7d4c-1f3a-4e6b-8c5d-7a9f0e1d2c3b",
    )
    queued = add_task(db, "A fox crossing a frozen river at dawn", state="queued")
    # the worker's passes, under its heartbeat's name: the videos archived, the webhooks sent
    client = make_client(settings)

    def archived() -> bool:
        media.archive_due(db, settings, client, limit=10, holder=worker)
        return all(api_task(server.url, task["id"])["media_url"] for task in tasks)

    try:
        wait_for(archived)
    finally:
        client.close()
    sender = Sender(settings, db, worker.id)
    try:
        sent = sender.run_once()
    finally:
        sender.close()
    kinds = [body["type"] for _, body in receiver.got]
    assert sent == len(kinds) and {"task.completed", "task.archived"} <= set(kinds), kinds

    page.goto(server.url + "/")
    expect(page.locator("tr[data-task-id]")).to_have_count(10)
    for task in tasks:
        expect(row(page, task["id"])).to_contain_text("completed")
    expect(row(page, queued)).to_contain_text("queued")
    expect(page.locator("#no-worker")).to_have_count(0)
    expect(page.locator("#workers summary")).to_contain_text("1 live")
    assert_placeholder_whole(page.locator("#upstream_id"))
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "list.png"), full_page=True)

    page.goto(f"{server.url}/tasks/{extension['id']}")
    expect(page.locator("body")).to_contain_text(f"Extend of {tasks[0]['upstream_id']}")
    expect(page.locator(".media")).to_contain_text("Archived copy.")
    page.wait_for_function("() => document.querySelector('video').readyState >= 2")
    deliveries = page.locator("section.deliveries")
    expect(deliveries.locator("tr.delivery")).to_have_count(sent)
    expect(deliveries.locator(".badge", has_text="succeeded")).to_have_count(sent)
    expect(deliveries.locator(".attempt time").first).to_have_text(re.compile(r" UTC$"))
    page.locator(".timeline summary").last.click()
    page.screenshot(path=str(folder / "detail.png"), full_page=True)
