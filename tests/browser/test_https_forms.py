"""The dashboard's forms in Chromium over real https, as in production.

Over https the CSRF check also wants a same-origin `Referer`, which a browser sends only
if the page's Referrer-Policy lets it: this is the one place where that shows, since the
other tests and `make run` speak plain http.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from werkzeug.serving import WSGIRequestHandler, generate_adhoc_ssl_context, make_server

from tracker.db import Database
from tracker.settings import Settings
from tracker.web.app import create_app

pytestmark = pytest.mark.browser

TOKEN = "https-admin-token-0123456789"


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture
def https_url(make_settings: Callable[..., Settings], db: Database) -> Iterator[str]:
    """The tracker on https://127.0.0.1:<port> with a throwaway self-signed certificate."""
    holder: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return holder["app"](environ, start_response)

    server = make_server(
        "127.0.0.1",
        0,
        app,
        threaded=True,
        request_handler=_Quiet,
        ssl_context=generate_adhoc_ssl_context(),
    )
    url = f"https://127.0.0.1:{server.port}"
    holder["app"] = create_app(make_settings(public_base_url=url, api_token=TOKEN), db=db)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield url
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_signing_in_and_submitting_work_over_https(browser: Any, https_url: str) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(ignore_https_errors=True)  # the certificate is self-signed
    page = context.new_page()
    try:
        page.goto(f"{https_url}/tasks/new")
        page.wait_for_url(lambda url: "/login?next=" in url)
        page.fill("#token", TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/tasks/new")
        page.fill("#user_prompt", "A lighthouse seen from a ferry")
        page.get_by_role("button", name="Submit").click()
        page.wait_for_url(lambda url: url.rsplit("/", 1)[1].isdigit())
        expect(page.locator(".flash-ok")).to_contain_text("submitted")
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/login")
    finally:
        context.close()
