"""Bad input never gets a 5xx: the OpenAPI document drives schemathesis against the live app,
and hypothesis throws arbitrary bodies at the callback route."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.scripted import ScriptedUpstream
from tracker.web.openapi import SPEC, SPECS

schema = schemathesis.openapi.from_dict(SPEC)


@pytest.fixture
def app_url(live, upstream: ScriptedUpstream) -> str:  # type: ignore[no-untyped-def]
    return live(luma_api_base=upstream.url).url


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_and_never_500s(case, app_url: str) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(base_url=app_url)


luma_schema = schemathesis.openapi.from_dict(SPECS["luma"]).include(
    path="/api/tasks", method="POST"
)


@pytest.fixture
def luma_url(live, upstream: ScriptedUpstream) -> str:  # type: ignore[no-untyped-def]
    return live(luma_api_base=upstream.url, luma_api_flavor="luma").url


@luma_schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_kind_of_submit_conforms_and_never_500s_on_luma(case, luma_url: str) -> None:  # type: ignore[no-untyped-def]
    """Luma's own API offers every kind. A schema cannot say "one source of the two", so a
    schema-valid body may still be a 400 here; it is never a 5xx, and every answer is as
    documented."""
    case.call_and_validate(base_url=luma_url, excluded_checks=[positive_data_acceptance])


def test_openapi_document_is_served(app_url: str) -> None:
    served = requests.get(f"{app_url}/api/openapi.json", timeout=5).json()
    assert served["openapi"].startswith("3.")
    assert "/api/tasks" in served["paths"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["id", "task_id", "state", "status", "data", "video", "failure_reason"])
            | st.text(max_size=8),
            children,
            max_size=6,
        )
    ),
    max_leaves=25,
)


@given(body=json_values | st.binary(max_size=300))
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_callback_route_never_500s(app_url: str, upstream: ScriptedUpstream, body: object) -> None:
    if not upstream.posts():  # one real task, whose own callback URL is fuzzed too
        requests.post(f"{app_url}/api/tasks", json={"user_prompt": "fuzz me"}, timeout=5)
    real_hook = upstream.posts()[0].body["notify_hook"]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    targets = [real_hook] + [
        f"{app_url}/callbacks/luma/{token}"
        for token in ("unknown-token", "x" * 300, "%00", "..%2F..%2Fapi")
    ]
    for url in targets:
        response = requests.post(
            url, data=data, headers={"Content-Type": "application/json"}, timeout=5
        )
        assert response.status_code < 500
        assert response.status_code == (200 if url == real_hook else 404)
    task = requests.get(f"{app_url}/api/tasks", timeout=5).json()["tasks"][0]
    # random bodies may finish the task, never move it back or make it something else
    assert task["state"] in ("pending", "processing", "completed", "failed")


# -- issue 9: the input classes an attack review found (deep nesting, lone surrogates,
# non-finite numbers, echoed tokens). After each, the task must still show, strictly.


def _depth(opening: bytes, closing: bytes, inner: bytes = b"") -> st.SearchStrategy[bytes]:
    return st.integers(60, 6000).map(lambda d: opening * d + inner + closing * d)


SURROGATES = ["\\ud800", "\\udbff", "\\udc00", "\\udfff", "\\ud83d\\ude00", "x", "é"]
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1.5", "null"]
ECHOES = {  # how an upstream might echo our notify_hook back
    "url": lambda hook: quote(hook, safe=""),
    "twice": lambda hook: quote(quote(hook, safe=""), safe=""),
    "form": lambda hook: f"hook={quote_plus(hook)}&a=1",
    "json": lambda hook: json.dumps({"notify_hook": hook}).replace("/", "\\/"),
    "bare": lambda hook: hook.rsplit("/", 1)[1],
    "bare-quoted": lambda hook: f'"{hook.rsplit("/", 1)[1]}"',
}

hostile_bodies = st.one_of(
    _depth(b"[", b"]"),
    _depth(b'{"a":', b"}", b'"completed"'),
    st.integers(60, 100_000).map(lambda d: b"[" * d),
    st.lists(st.sampled_from(SURROGATES), min_size=1, max_size=4).flatmap(
        lambda parts: st.sampled_from(
            [
                f'"{"".join(parts)}"',
                f'{{"id": "x", "state": "processing", "note": "{"".join(parts)}"}}',
                f'{{"{"".join(parts)}": 1, "status": "dreaming"}}',
            ]
        ).map(str.encode)
    ),
    st.lists(st.sampled_from(NON_FINITE), min_size=1, max_size=4).map(
        lambda values: (
            '{"state": "completed", "video": {"url": "https://cdn.example/v.mp4"}, "n": ['
            + ", ".join(values)
            + "]}"
        ).encode()
    ),
)


def _strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@given(body=hostile_bodies | st.sampled_from(sorted(ECHOES)))
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_hostile_callbacks_never_break_the_task(
    app_url: str, upstream: ScriptedUpstream, body: bytes | str
) -> None:
    if not upstream.posts():
        requests.post(f"{app_url}/api/tasks", json={"user_prompt": "fuzz me"}, timeout=5)
    hook = upstream.posts()[0].body["notify_hook"]
    token = hook.rsplit("/", 1)[1]
    if isinstance(body, str):  # an echo of our own hook, in one of its encodings
        body = json.dumps({"status": "dreaming", "echo": ECHOES[body](hook)}).encode()
    response = requests.post(
        hook, data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 200
    task_id = requests.get(f"{app_url}/api/tasks", timeout=5).json()["tasks"][0]["id"]
    answer = requests.get(f"{app_url}/api/tasks/{task_id}", timeout=10)
    assert answer.status_code == 200
    _strict(answer.content.decode("utf-8"))
    for headers in ({}, {"X-Live": "1"}):  # the page and its live refresh
        page = requests.get(f"{app_url}/tasks/{task_id}", headers=headers, timeout=10)
        assert page.status_code == 200
        assert token not in page.text
    assert token not in answer.text


api_hostile_bodies = st.one_of(
    _depth(b"[", b"]"),
    st.integers(60, 100_000).map(lambda d: b"[" * d),
    _depth(b'{"user_prompt": [', b"]}"),
    st.sampled_from(SURROGATES[:4]).map(lambda s: f'{{"user_prompt": "a {s} fox"}}'.encode()),
    st.tuples(
        st.sampled_from(["user_prompt", "loop", "duration", "expand_prompt", "x"]),
        st.sampled_from(NON_FINITE[:5]),
    ).map(lambda kv: f'{{"user_prompt": "a fox", "{kv[0]}": {kv[1]}}}'.encode()),
)


@given(body=api_hostile_bodies)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_hostile_api_bodies_get_a_400(app_url: str, body: bytes) -> None:
    response = requests.post(
        f"{app_url}/api/tasks", data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 400
    assert response.json()["error"]


# -- the dashboard: query strings, paths and the login's `next` -----------------------------

QUERY_KEYS = ["cursor", "state", "q", "limit", "next", "source"]
# digits that are not ASCII: "²" passes str.isdigit() and fails int(), "٣" passes both
odd_digits = st.text(
    st.sampled_from("0123456789")
    | st.characters(categories=["No"]).filter(str.isdigit)
    | st.characters(categories=["Nd", "Nl"]),
    min_size=1,
    max_size=6,
).filter(lambda text: not text.isascii())
numbers = st.integers(-(2**70), 2**70).map(str) | st.integers(0, 2**70).map(lambda n: f"#{n}")
tricky = st.sampled_from(
    [
        *("/\t/evil.example", "/\n/x", "/\r\n/x", "\\\\evil.example", "//evil.example", "/\\evil"),
        *("http:/\t/evil.example", "\x00", '"', "*", "_%", "NEAR(a b)", "a:*", "1" * 5000),
    ]
)
query_values = (st.text(max_size=40) | odd_digits | numbers | tricky | st.binary(max_size=20)).map(
    lambda v: v if isinstance(v, bytes) else v.encode("utf-8", "surrogatepass")
)
query_params = st.fixed_dictionaries({}, optional=dict.fromkeys(QUERY_KEYS, query_values))
task_ids = odd_digits | numbers.map(lambda s: s.lstrip("#")) | st.just("2147483648")
dashboard_paths = st.sampled_from(
    ["/", "/", "/login", "/login", "/tasks/new", "/tasks/{}", "/media/{}/video"]
)


@pytest.fixture
def dashboards(live, db) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Three views of the dashboard: open (no token), signed in, and a stranger to it."""
    from tests.support.dashboard import add_task, csrf_of

    for n in range(3):
        add_task(db, f"fuzzed harbour {n}", state="completed", upstream_id=f"up-fuzz-{n}")
    token = "fuzz-admin-token-0123456789abcdef"
    guarded = live(api_token=token).url
    signed_in = requests.Session()
    page = signed_in.get(f"{guarded}/login", timeout=5).text
    signed_in.post(
        f"{guarded}/login", data={"csrf_token": csrf_of(page), "token": token}, timeout=5
    )
    return {
        "open": (live().url, requests.Session()),
        "signed in": (guarded, signed_in),
        "stranger": (guarded, requests.Session()),
    }


@example(path="/login", task_id="1", params={"next": b"/\t/evil.example"}, live_refresh=False)
@example(path="/login", task_id="1", params={"next": b"/\n/x"}, live_refresh=False)
@example(path="/", task_id="1", params={"cursor": "²".encode()}, live_refresh=False)
@example(path="/", task_id="1", params={"q": b"#3000000000"}, live_refresh=True)
@given(
    path=dashboard_paths,
    task_id=task_ids,
    params=query_params,
    live_refresh=st.booleans(),
)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_dashboard_query_strings_never_500_nor_lead_off_site(
    dashboards: dict[str, tuple[str, requests.Session]],
    path: str,
    task_id: str,
    params: dict[str, bytes],
    live_refresh: bool,
) -> None:
    from urllib.parse import quote, urlencode

    from tests.support.urls import browser_reads

    target = path.format(quote(task_id.encode("utf-8", "surrogatepass"), safe=""))
    query = urlencode(params)
    headers = {"X-Live": "1"} if live_refresh else {}
    for view, (base, session) in dashboards.items():
        response = session.get(
            f"{base}{target}?{query}", headers=headers, allow_redirects=False, timeout=10
        )
        assert response.status_code < 500, (view, target, query)
        location = response.headers.get("Location")
        if location is not None:
            parts = browser_reads(location)
            assert not parts.netloc or f"{parts.scheme}://{parts.netloc}" == base, location


url_pieces = st.sampled_from(
    [
        *("/", "\\", "\t", "\n", "\r", " ", "\x00", "\u3000", "\u2028", "http:", "https:"),
        *("HTTP:", "javascript:", "//", "evil.example", "a", ":", "@", "%09", "#", "?", "[", "]"),
    ]
)
url_like = st.lists(url_pieces, max_size=8).map("".join) | st.text(max_size=20)


@given(url_like)
@settings(max_examples=500)
def test_a_url_becomes_a_link_or_redirect_only_as_a_browser_would_read_it(url: str) -> None:
    """What `links` lets through is, read as a browser reads it, on this site or http(s)."""
    from tests.support.urls import browser_reads, stays_on_site
    from tracker.web import pages as links
    from tracker.web.pages import safe_url

    if links.local_path(url) is not None:
        assert stays_on_site(url) and browser_reads(url).path.startswith("/")
        assert links.safe_next(url, "/") == url
    else:
        assert links.safe_next(url, "/") == "/"
    if links.web_link(url) is not None:
        parts = browser_reads(url)
        assert parts.scheme.lower() in ("http", "https") and parts.hostname
    shown = safe_url(url)
    assert shown is None or stays_on_site(shown) or browser_reads(shown).scheme in ("http", "https")
