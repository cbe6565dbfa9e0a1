"""Hostile span data stays text in a real browser, on every page that shows it.

Every field a span can carry (names, service, workflow, model, attribute keys and values,
events, exceptions, status, messages, tool calls, session and user, links, scope) holds
script, event-handler, ``javascript:`` and template payloads. Each page is checked in
Chromium: no payload ran, no dialog opened, the payload reads as literal text, and the DOM
holds no event-handler attribute and no ``javascript:`` URL.
"""

from __future__ import annotations

import json
import os
import re
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from opentelemetry.trace import Link, SpanContext, TraceFlags
from playwright.sync_api import Page, expect

from tests.browser import MS, hex_span_id, hex_trace_id, now_ns

SCRIPT = "<script>window.__xss=1</script>"
IMG = '<img src=x onerror="window.__xss=1">'
SVG = '"><svg onload="window.__xss=1">'
ALERT = "<img src=y onerror=alert(1)>"
JS_URL = "javascript:window.__xss=1"
TEMPLATE = "{{ 7*7 }}"
DEBUG = "{% debug %}"

SERVICE = f"xss {SVG}"
WORKFLOW = f"{IMG} {TEMPLATE}"
TEMPLATED = f"{TEMPLATE} {DEBUG}"

# Everything on the page that could run code or leave it: handler attributes, javascript:
# URLs, inline scripts, frames, and the payloads' own elements.
_ACTIVE = """() => {
  const found = [];
  for (const el of document.querySelectorAll("*")) {
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase();
      const value = attr.value.replace(/[\\s\\u0000-\\u001f]/g, "").toLowerCase();
      if (name.startsWith("on")) found.push(`${el.tagName} ${name}`);
      if (value.startsWith("javascript:")) found.push(`${el.tagName} ${name}=${attr.value}`);
    }
    if (el.tagName === "SCRIPT" && !el.src) found.push("inline script: " + el.textContent);
    if (["IFRAME", "OBJECT", "EMBED"].includes(el.tagName)) found.push(el.tagName);
    if (el.tagName === "IMG" && ["x", "y"].includes(el.getAttribute("src"))) found.push("img");
  }
  return found;
}"""


def _hostile_trace(spans) -> SimpleNamespace:
    t0 = now_ns()
    root = spans.span(
        SCRIPT,
        start_ns=t0,
        duration_ms=1500,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": ALERT,
            "workflow.name": WORKFLOW,
            "session.id": JS_URL,
            "user.id": f"{SVG} {DEBUG}",
            "url.full": JS_URL,
            SCRIPT: IMG,
            f"gen_ai.{IMG}": JS_URL,
        },
    )
    elsewhere = SpanContext(
        trace_id=int.from_bytes(os.urandom(16)),
        span_id=int.from_bytes(os.urandom(8)),
        is_remote=True,
        trace_flags=TraceFlags(1),
    )
    llm = spans.span(
        f"chat {IMG}",
        parent=root,
        start_ns=t0 + 10 * MS,
        duration_ms=600,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": SCRIPT,
            "gen_ai.usage.input_tokens": 120,
            "gen_ai.usage.output_tokens": 30,
            "gen_ai.input.messages": json.dumps(
                [
                    {"role": "system", "parts": [{"type": "text", "content": TEMPLATED}]},
                    {"role": "user", "parts": [{"type": "text", "content": f"{SCRIPT} {IMG}"}]},
                    {
                        "role": "assistant",
                        "parts": [
                            {
                                "type": "tool_call",
                                "id": SVG,
                                "name": ALERT,
                                "arguments": {SCRIPT: JS_URL},
                            }
                        ],
                    },
                    {
                        "role": f"tool {IMG}",
                        "parts": [{"type": "tool_call_response", "id": JS_URL, "response": SCRIPT}],
                    },
                ]
            ),
            "gen_ai.output.messages": json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": SVG}],
                        "finish_reason": IMG,
                    }
                ]
            ),
        },
        events=((SCRIPT, {IMG: SVG, "link": JS_URL}),),
        links=(Link(elsewhere, {SVG: SCRIPT, "href": JS_URL}),),
    )
    tool = spans.span(
        f"execute_tool {SVG}",
        parent=root,
        start_ns=t0 + 700 * MS,
        duration_ms=300,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": ALERT,
            "gen_ai.tool.call.id": SCRIPT,
            "gen_ai.tool.call.arguments": json.dumps({"q": SCRIPT, "url": JS_URL}),
            "gen_ai.tool.call.result": f"{TEMPLATED} {IMG}",
        },
        error=SVG,
        exception=ValueError(IMG),
        exception_attributes={
            "exception.type": SCRIPT,
            "exception.stacktrace": f"Traceback {SVG}\n  {TEMPLATE}\n{DEBUG}",
        },
    )
    templated = spans.span(
        TEMPLATED,
        parent=root,
        start_ns=t0 + 1100 * MS,
        duration_ms=100,
        attributes={"note": TEMPLATED},
    )
    return SimpleNamespace(
        id=hex_trace_id(root),
        root=hex_span_id(root),
        llm=hex_span_id(llm),
        tool=hex_span_id(tool),
        templated=hex_span_id(templated),
    )


@pytest.fixture(scope="module")
def hostile(otel, live_server_process) -> SimpleNamespace:
    spans = otel(
        SERVICE,
        resource={IMG: SCRIPT, "deployment.environment": JS_URL},
        scope=(SCRIPT, IMG),
    )
    trace = _hostile_trace(spans)
    spans.send()
    live_server_process.wait_for_trace(trace.id, 4)
    return trace


@pytest.fixture
def dialogs(page: Page) -> list[str]:
    opened: list[str] = []
    page.on("dialog", lambda dialog: (opened.append(dialog.message), dialog.dismiss()))
    return opened


def _assert_inert(page: Page, dialogs: list[str], *texts: str, where: str = "body") -> None:
    """Nothing ran, nothing can run, and each text reads literally in ``where``."""
    assert page.evaluate("window.__xss") is None
    assert dialogs == []
    assert page.evaluate(_ACTIVE) == []
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    # Lower-cased: CSS upper-cases some labels (roles, headers) in the rendered text.
    shown = page.locator(where).inner_text().lower()
    missing = [text for text in texts if text.lower() not in shown]
    assert not missing, f"not shown as text: {missing}"


ROOT_TEXTS = (SCRIPT, IMG, JS_URL, f"gen_ai.{IMG}", SERVICE, f"{SVG} {DEBUG}", ALERT)
SPAN_TEXTS = {
    "root": (*ROOT_TEXTS, "deployment.environment", SCRIPT),
    "llm": (
        f"chat {IMG}",
        TEMPLATED,
        f"{SCRIPT} {IMG}",
        ALERT,
        SVG,
        f"tool {IMG}",
        f"finish: {IMG}",
        JS_URL,
    ),
    "tool": (
        f"execute_tool {SVG}",
        f"{SCRIPT}: {IMG}",
        f"Traceback {SVG}",
        TEMPLATE,
        DEBUG,
        ALERT,
        f"{TEMPLATED} {IMG}",
        JS_URL,
    ),
    "templated": (TEMPLATED,),
}
SPAN_NAMES = {
    "root": SCRIPT,
    "llm": f"chat {IMG}",
    "tool": f"execute_tool {SVG}",
    "templated": TEMPLATED,
}


def test_dashboard_shows_hostile_names_as_text(page, dialogs, server, hostile):
    page.goto(server.url + "/?window=all")
    expect(page.locator(".trace-mini-name", has_text=WORKFLOW).first).to_be_visible()
    _assert_inert(page, dialogs, WORKFLOW, SERVICE)
    # The template tags were not evaluated on the way.
    assert "49" not in page.locator(".trace-mini-name", has_text=IMG).first.inner_text()


def test_trace_list_shows_hostile_rows_as_text(page, dialogs, server, hostile):
    page.goto(f"{server.url}/traces?service={quote(SERVICE)}")
    expect(page.locator("#results tbody tr[data-nav-row]")).to_have_count(1)
    _assert_inert(page, dialogs, WORKFLOW, SCRIPT, SERVICE, where="#results")
    expect(page.get_by_label("Service")).to_have_value(SERVICE)


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        (f'"{SCRIPT}"', WORKFLOW),  # a phrase: finds the trace by its root span's name
        (WORKFLOW, WORKFLOW),
        (SVG, SVG),  # an unterminated string: the error quotes the query back
        (DEBUG, "No traces match these filters."),
    ],
    ids=["phrase", "workflow", "unterminated", "template-tag"],
)
def test_searching_for_a_hostile_string_keeps_it_text(page, dialogs, server, hostile, query, shown):
    page.goto(server.url + "/traces")
    with page.expect_response(lambda r: "q=" in r.url and "count=" not in r.url) as answer:
        page.locator("#q").fill(query)
    assert answer.value.request.headers.get("hx-request") == "true"
    expect(page.locator("#results")).not_to_have_class(re.compile(r"\bis-loading\b"))
    expect(page.locator("#results")).to_contain_text(shown)
    _assert_inert(page, dialogs, shown, where="#results")
    expect(page.locator("#q")).to_have_value(query)
    # The same search as a full page, and the list after it went into the search history.
    page.goto(f"{server.url}/traces?q={quote(query)}")
    _assert_inert(page, dialogs, shown, where="#results")
    page.goto(server.url + "/traces")
    _assert_inert(page, dialogs)


def test_trace_page_shows_hostile_fields_as_text(page, dialogs, server, hostile):
    page.goto(f"{server.url}/traces/{hostile.id}")
    expect(page.locator(".trace-head h1")).to_have_text(WORKFLOW)
    expect(page.locator(".span-row")).to_have_count(4)
    _assert_inert(
        page,
        dialogs,
        WORKFLOW,
        SCRIPT,
        SERVICE,
        JS_URL,
        f"{SVG} {DEBUG}",
        *SPAN_NAMES.values(),
    )
    session = page.get_by_role("link", name=JS_URL)
    expect(session).to_have_attribute("href", re.compile(r"^/traces\?q=session"))


@pytest.mark.parametrize("which", list(SPAN_NAMES))
def test_span_panel_shows_hostile_fields_as_text(page, dialogs, server, hostile, which):
    span_id = getattr(hostile, which)
    page.goto(f"{server.url}/traces/{hostile.id}")
    row = page.locator(f".span-row[data-span='{span_id}']")
    row.locator(".span-link").click()  # the panel arrives by HTMX
    expect(page).to_have_url(f"{server.url}/traces/{hostile.id}/spans/{span_id}")
    expect(page.locator("#panel .panel-title")).to_have_text(SPAN_NAMES[which])
    _assert_inert(page, dialogs, *SPAN_TEXTS[which], where="#panel")

    page.goto(f"{server.url}/traces/{hostile.id}/spans/{span_id}")  # the same as a full page
    expect(page.locator("#panel .panel-title")).to_have_text(SPAN_NAMES[which])
    _assert_inert(page, dialogs, *SPAN_TEXTS[which], where="#panel")


def test_tree_view_and_span_filter_keep_hostile_text(page, dialogs, server, hostile):
    page.goto(f"{server.url}/traces/{hostile.id}?view=tree")
    expect(page.locator(".view-tree .span-row")).to_have_count(4)
    _assert_inert(page, dialogs, *SPAN_NAMES.values(), where="#timeline-body")

    page.locator("#span-filter").fill(SCRIPT)  # the root's name and the LLM's model
    expect(page.locator(".span-row")).to_have_count(2)
    header = page.locator(".timeline-header .col-name")
    expect(header).to_contain_text(f"2 of 4 spans match “{SCRIPT}”")
    _assert_inert(page, dialogs, SCRIPT, where="#timeline-body")

    page.locator("#span-filter").fill(f"{IMG} nothing")
    expect(page.locator(".span-row")).to_have_count(0)
    expect(page.locator("#timeline-body")).to_contain_text(f"No span matches “{IMG} nothing”")
    _assert_inert(page, dialogs, IMG, where="#timeline-body")


def test_not_found_page_shows_a_hostile_id_as_text(page, dialogs, server, hostile):
    response = page.goto(f"{server.url}/traces/{quote(ALERT, safe='')}")
    assert response.status == 404
    expect(page.locator("h1")).to_have_text(f"No trace {ALERT}")
    _assert_inert(page, dialogs, ALERT, "This is not a trace id")
