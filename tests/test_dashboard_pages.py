"""The pages as a newcomer reads them (issue 22, item 5): the Deliveries card and its times, a
rejected task's upstream id, errors in the form's words, and the 404 page (the forms that
offer only what their dialect takes: tests/test_dashboard_operations.py).

Flask's test client on the rendered HTML (and the stylesheet's rules for the card); what a
person sees in Chromium, and the README's pictures: tests/browser/test_dashboard_browser.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.support.dashboard import add_task, csrf_of, get
from tracker.db import Database
from tracker.tasks.models import Delivery
from tracker.web import pages


def add_delivery(
    db: Database,
    task_id: int,
    state: str,
    attempts: list[dict[str, Any]],
    target: str = "https://hooks.example/in?token=abc",
) -> int:
    """A webhook row of the task, as the worker leaves it."""
    with db.write() as session:
        row = Delivery(
            task_id=task_id,
            webhook_id=f"msg_{task_id}_{state}",
            type="task.completed",
            target=target,
            target_kind="task",
            state=state,
            attempts=attempts,
        )
        session.add(row)
        session.flush()
        return row.id


def section(page: str, css_class: str) -> str:
    start = page.index(f'<section class="{css_class}"')
    return page[start : page.index("</section>", start)]


# -- the task's page ------------------------------------------------------------------------


def test_the_deliveries_are_a_card_with_their_times_in_utc(
    client: FlaskClient, db: Database
) -> None:
    task_id = add_task(db, "with webhooks", state="completed", upstream_id="up-1")
    add_delivery(
        db,
        task_id,
        "failed",
        [{"at": "2026-03-04T05:06:07.123456Z", "status": 503, "latency_ms": 41, "response": "x"}],
    )
    add_delivery(
        db,
        task_id,
        "succeeded",
        [{"at": "2026-03-04T05:07:08.5Z", "status": 200, "latency_ms": 12, "response": "ok"}],
    )
    add_delivery(db, task_id, "pending", [])
    status, page = get(client, f"/tasks/{task_id}")
    assert status == 200
    card = section(page, "deliveries")
    assert 'aria-labelledby="deliveries-h"' in card and "3 webhooks" in card
    # times read as the rest of the page reads them; the ISO text only in datetime=""
    assert '<time datetime="2026-03-04T05:06:07.123456Z">2026-03-04 05:06:07 UTC</time>' in card
    assert ">2026-03-04 05:07:08 UTC</time>" in card
    assert re.findall(r">[^<]*\d{4}-\d\d-\d\dT[^<]*<", card) == [], "no raw ISO text shown"
    assert "not sent yet" in card
    badges = re.findall(r'<span class="badge (state-\w+)">(\w+)</span>', card)
    assert badges == [  # newest first
        ("state-queued", "pending"),
        ("state-completed", "succeeded"),
        ("state-failed", "failed"),
    ]
    assert 'class="delivery state-' not in card, "a row is not coloured as a badge"
    # the card is drawn as the Timeline's, and its table takes the card's width
    _, css = get(client, "/assets/dashboard.css")
    card_rule = re.search(r"^([^{}]*\.timeline) \{ background: var\(--panel\)", css, re.M)
    assert card_rule and ".deliveries" in card_rule.group(1).split(", ")
    assert re.search(r"table\.deliveries-table \{ width: 100%;", css)
    assert 'class="deliveries-table"' in card


def test_a_rejected_task_says_why_it_has_no_upstream_id(client: FlaskClient, db: Database) -> None:
    def upstream_id_of(task_id: int) -> str:
        _, page = get(client, f"/tasks/{task_id}")
        found = re.search(r'<dt>Upstream id</dt><dd class="upstream-id">(.*?)</dd>', page)
        assert found, "the Upstream id line"
        return re.sub(r"<[^>]+>", "", found.group(1))

    refused = add_task(db, state="rejected", failure_reason="upstream refused: too short")
    assert upstream_id_of(refused) == "none — refused before it got one"
    lost = add_task(db, state="rejected", outcome_unknown=True, failure_reason="timed out")
    assert upstream_id_of(lost) == "none known — the create's answer never came"
    assert upstream_id_of(add_task(db, state="queued")) == "not yet"
    assert upstream_id_of(add_task(db, state="submitting")) == "not yet"
    late = add_task(db, state="rejected", upstream_id="up-9", failure_reason="refused later")
    assert upstream_id_of(late) == "up-9"


# -- errors in the form's words ---------------------------------------------------------------


def test_the_forms_errors_name_fields_by_their_labels_and_the_api_keeps_the_names(
    client: FlaskClient, db: Database
) -> None:
    _, page = get(client, "/tasks/new")
    label = re.search(r'<label for="user_prompt">([^<]+)</label>', page)
    assert label and label.group(1) == pages.LABELS["user_prompt"] == "Prompt"
    answer = client.post(
        "/tasks/new", data={"csrf_token": csrf_of(page), "kind": "generate", "user_prompt": ""}
    )
    shown = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert '<p class="field-error" id="user_prompt-error">Prompt must not be empty</p>' in shown
    api = client.post("/api/tasks", json={"user_prompt": ""})
    assert api.status_code == 400
    said = api.get_json()
    assert (said["error"], said["field"]) == ("user_prompt must not be empty", "user_prompt")


@pytest.mark.parametrize(
    ("message", "kind", "said"),
    [
        ("user_prompt must not be empty", "generate", "Prompt must not be empty"),
        ("mode is required", "modify", "Mode is required"),
        ("kind must be one of generate, extend", "", "Operation must be one of generate, extend"),
        (
            "give source_task_id or source_video_url, not both",
            "modify",
            "give Source task id or Source video URL, not both",
        ),
        ("image_url must be an http(s) URL", "image", "Reference image must be an http(s) URL"),
        ("image_url_file is odd", "generate", "image_url_file is odd"),  # not a field of the form
        ("a kind of mode", "generate", "a kind of mode"),  # plain words stay words
    ],
)
def test_labelled_says_field_names_as_the_form_labels_them(
    message: str, kind: str, said: str
) -> None:
    assert pages.labelled(message, kind) == said


def test_the_import_fields_error_uses_its_label(client: FlaskClient) -> None:
    _, page = get(client, "/")
    answer = client.post(
        "/tasks/import",
        data={"csrf_token": csrf_of(page), "upstream_id": "x", "notify_url": "ftp://nope"},
        follow_redirects=True,
    )
    shown = answer.get_data(as_text=True)
    assert "Nothing imported: Webhook URL must be an http:// or https:// URL." in shown


# -- the 404 page ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/no/such/page", "/tasks/987654", "/tasks/not-a-number"])
def test_every_404_page_is_the_centred_message_page(client: FlaskClient, path: str) -> None:
    status, page = get(client, path)
    assert status == 404
    assert '<div class="empty message status-404">' in page, "centred, as every message page"
    assert '<p class="status-code">404</p>' in page and 'href="/assets/dashboard.css"' in page
    assert 'class="button" href="/">All tasks</a>' in page
    _, css = get(client, "/assets/dashboard.css")
    assert re.search(r"^\.empty \{ text-align: center;", css, re.M)
    # its big status code too: a box of .empty p's width, centred by its auto margins
    assert re.search(r"^\.status-code \{[^}]* margin: 0 auto !important; \}", css, re.M)


def test_a_404_for_a_program_stays_json(client: FlaskClient) -> None:
    for path, accept in (("/no/such/page", "application/json"), ("/api/nope", "text/html")):
        answer = client.get(path, headers={"Accept": accept})
        assert answer.status_code == 404 and answer.get_json() == {"error": "not found"}
