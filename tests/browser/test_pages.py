"""The pages in a real browser: dashboard, trace list, trace detail, failures, big traces.

Data arrives through the real ingest path (the OpenTelemetry SDK over OTLP/HTTP) once per
module; each test filters by this module's own service names, since the session's server
is shared with other test modules.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from playwright.sync_api import Page, expect

from tests.browser import MS, Spans, hex_span_id, hex_trace_id, now_ns
from tests.server import MsgtraceServer

SHOP = "browser-shop"  # four agent runs, one of them failing and one three days old
BILLING = "browser-billing"  # one run: what the service filter must leave out
BULK = "browser-bulk"  # 55 one-span traces: more than a page
DOOMED = "browser-doomed"  # traces the delete tests remove
BIG = "browser-big"  # one trace of 1,200 spans

QUESTION = "Where is my order #1234? It was due on Monday."
ANSWER = "Order #1234 shipped yesterday and arrives on Thursday."
BIG_SPANS = 1200
UNKNOWN_ID = "0123456789abcdef0123456789abcdef"


def _messages(*turns: tuple[str, dict]) -> str:
    return json.dumps([{"role": role, "parts": [part]} for role, part in turns])


def _text(content: str) -> dict:
    return {"type": "text", "content": content}


def _chat(spans: Spans, parent, start_ns: int, duration_ms: float, tokens: tuple, **extra):
    model = extra.pop("model", "gpt-4o")
    return spans.span(
        f"chat {model}",
        parent=parent,
        start_ns=start_ns,
        duration_ms=duration_ms,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": tokens[0],
            "gen_ai.usage.output_tokens": tokens[1],
            **extra,
        },
    )


def _root(spans: Spans, agent: str, workflow: str, start_ns: int, duration_ms: float, **extra):
    return spans.span(
        f"invoke_agent {agent}",
        start_ns=start_ns,
        duration_ms=duration_ms,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "workflow.name": workflow,
            **extra,
        },
    )


def _triage(spans: Spans) -> SimpleNamespace:
    """A support agent: chat, a search tool (with an HTTP call under it), chat again."""
    t0 = now_ns(ago_s=120)
    root = _root(spans, "triage", "triage", t0, 2400, **{"session.id": "sess-42"})
    first = _chat(
        spans,
        root,
        t0 + 20 * MS,
        880,
        (1200, 300),
        **{
            "gen_ai.input.messages": _messages(
                ("system", _text("You are a helpful support agent.")), ("user", _text(QUESTION))
            ),
            "gen_ai.output.messages": _messages(
                (
                    "assistant",
                    {
                        "type": "tool_call",
                        "id": "call_1",
                        "name": "search",
                        "arguments": {"query": "order 1234"},
                    },
                )
            ),
        },
    )
    tool = spans.span(
        "execute_tool search",
        parent=root,
        start_ns=t0 + 950 * MS,
        duration_ms=450,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "search",
            "gen_ai.tool.call.id": "call_1",
            "gen_ai.tool.call.arguments": json.dumps({"query": "order 1234"}),
            "gen_ai.tool.call.result": json.dumps({"status": "shipped"}),
        },
    )
    http = spans.span(
        "GET /v1/search",
        parent=tool,
        start_ns=t0 + 960 * MS,
        duration_ms=400,
        attributes={"http.request.method": "GET", "url.path": "/v1/search"},
    )
    second = _chat(
        spans,
        root,
        t0 + 1450 * MS,
        900,
        (1600, 400),
        **{
            "gen_ai.input.messages": _messages(("user", _text(QUESTION))),
            "gen_ai.output.messages": _messages(("assistant", _text(ANSWER))),
        },
    )
    return SimpleNamespace(
        id=hex_trace_id(root),
        spans=5,
        root=hex_span_id(root),
        chat=hex_span_id(first),
        tool=hex_span_id(tool),
        http=hex_span_id(http),
        second_chat=hex_span_id(second),
    )


def _refund(spans: Spans) -> SimpleNamespace:
    """An agent run whose tool fails with an exception."""
    t0 = now_ns(ago_s=90)
    root = _root(spans, "refunds", "refund", t0, 1300)
    _chat(spans, root, t0 + 10 * MS, 400, (500, 80))
    tool = spans.span(
        "execute_tool lookup_order",
        parent=root,
        start_ns=t0 + 420 * MS,
        duration_ms=300,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "lookup_order",
            "gen_ai.tool.call.arguments": json.dumps({"order": 42}),
        },
        error="lookup_order failed",
        exception=_raised(ValueError("order 42 not found")),
    )
    return SimpleNamespace(id=hex_trace_id(root), spans=3, tool=hex_span_id(tool))


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # a real traceback, as an instrumented app records it
        return caught


def _short_run(spans: Spans, agent: str, workflow: str, *, ago_s: float, duration_ms: float):
    t0 = now_ns(ago_s=ago_s)
    root = _root(spans, agent, workflow, t0, duration_ms)
    _chat(spans, root, t0 + 5 * MS, duration_ms / 2, (200, 50), model="gpt-4o-mini")
    return SimpleNamespace(id=hex_trace_id(root), spans=2)


def _one_span(spans: Spans, name: str, *, ago_s: float) -> str:
    return hex_trace_id(spans.span(name, start_ns=now_ns(ago_s=ago_s), duration_ms=5))


def _big(spans: Spans) -> str:
    """Root, three steps under it, and 1,196 fetches spread over the steps."""
    t0 = now_ns(ago_s=300)
    root = _root(spans, "crawler", "crawl", t0, 60_000)
    steps = [
        spans.span(f"step {n}", parent=root, start_ns=t0 + n * 20_000 * MS, duration_ms=19_000)
        for n in range(3)
    ]
    for i in range(BIG_SPANS - 4):
        step = i % 3
        start = t0 + step * 20_000 * MS + (i // 3) * 40 * MS
        spans.span(f"fetch page {i}", parent=steps[step], start_ns=start, duration_ms=35)
    return hex_trace_id(root)


@pytest.fixture(scope="module")
def seeded(otel, live_server_process) -> SimpleNamespace:
    shop, billing, bulk, doomed, big = (otel(name) for name in (SHOP, BILLING, BULK, DOOMED, BIG))
    data = SimpleNamespace(
        triage=_triage(shop),
        refund=_refund(shop),
        summarize=_short_run(shop, "summarizer", "summarize", ago_s=60, duration_ms=600),
        nightly=_short_run(shop, "reporter", "nightly-report", ago_s=3 * 86400, duration_ms=3100),
        invoices=_short_run(billing, "billing", "invoices", ago_s=30, duration_ms=900),
        # ping 54 is the newest: the list shows 54..5 on page 1 and 4..0 on page 2.
        bulk=[_one_span(bulk, f"ping {i:02d}", ago_s=600 - i) for i in range(55)],
        doomed=[_one_span(doomed, f"cleanup {i}", ago_s=200 + i) for i in range(3)],
        purge=_short_run(doomed, "janitor", "purge-me", ago_s=250, duration_ms=700),
        big=_big(big),
    )
    for spans in (shop, billing, bulk, doomed, big):
        spans.send()
    runs = [data.triage, data.refund, data.summarize, data.nightly, data.invoices, data.purge]
    for run in runs:
        live_server_process.wait_for_trace(run.id, run.spans)
    for trace_id in data.bulk + data.doomed:
        live_server_process.wait_for_trace(trace_id, 1)
    live_server_process.wait_for_trace(data.big, BIG_SPANS)
    return data


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory, free_port):
    """A fresh install on its own database: it has never received a trace."""
    server = MsgtraceServer.start(tmp_path_factory.mktemp("empty"), free_port())
    yield server
    server.stop()


def _rows(page: Page):
    return page.locator("#results tbody tr[data-nav-row]")


def _row_ids(page: Page) -> list[str]:
    return page.locator("#results input[name=ids]").evaluate_all("boxes => boxes.map(b => b.value)")


def _span_rows(page: Page):
    return page.locator(".span-row")


def _span_row(page: Page, name: str):
    return page.locator(".span-row", has=page.get_by_role("link", name=name, exact=True))


def _traces_total(page: Page) -> int:
    card = page.locator(".stat", has=page.locator(".stat-label", has_text=re.compile("^Traces$")))
    return int(card.locator(".stat-sub").inner_text().split()[0])


def _mark_page(page: Page) -> None:
    """A flag on ``window`` that survives HTMX swaps and dies with a full page load."""
    page.evaluate("window.__samePage = true")


def _assert_same_page(page: Page) -> None:
    assert page.evaluate("window.__samePage") is True, "the page reloaded"


def _api_status(server, trace_id: str) -> int:
    return server.request("GET", f"/api/v1/traces/{trace_id}")[0]


# --- Dashboard ----------------------------------------------------------------------------


def test_dashboard_shows_the_totals_and_recent_traces_link_to_their_page(page, server, seeded):
    page.goto(server.url + "/")
    # 64 of this module's traces started in the last 24 h; the delete tests remove 3.
    assert _traces_total(page) >= 61
    expect(page.locator(".stat-bad .stat-label")).to_have_text("Error rate")
    recent = page.locator("section.card", has=page.get_by_role("heading", name="Recent traces"))
    link = recent.locator("a.trace-mini-link").first
    name = link.locator(".trace-mini-name").inner_text()
    link.click()
    expect(page).to_have_url(re.compile(r"/traces/[0-9a-f]{32}$"))
    expect(page.locator(".trace-head h1")).to_have_text(name)


def test_dashboard_window_switch_updates_stats_and_url_without_a_reload(page, server, seeded):
    page.goto(server.url + "/")
    day = _traces_total(page)
    _mark_page(page)
    window = page.get_by_role("navigation", name="Time window")
    stat = page.locator(".stat", has=page.locator(".stat-label", has_text=re.compile("^Traces$")))

    window.get_by_role("link", name="all", exact=True).click()
    expect(page).to_have_url(server.url + "/?window=all")
    expect(stat.locator(".stat-sub")).not_to_have_text(f"{day} total")
    everything = _traces_total(page)
    assert everything >= day + 1  # the nightly report ran three days ago
    expect(window.locator("[aria-current]")).to_have_text("all")

    window.get_by_role("link", name="1h", exact=True).click()
    expect(page).to_have_url(server.url + "/?window=1h")
    expect(stat.locator(".stat-sub")).not_to_have_text(f"{everything} total")
    assert _traces_total(page) <= everything - 1
    expect(window.locator("[aria-current]")).to_have_text("1h")
    _assert_same_page(page)


def test_empty_install_shows_how_to_send_a_first_trace_to_this_server(new_context, empty_server):
    page = new_context(permissions=["clipboard-read", "clipboard-write"]).new_page()
    page.goto(empty_server.url + "/")
    expect(page.get_by_role("heading", name="Send your first trace")).to_be_visible()
    endpoint = f"http://127.0.0.1:{empty_server.port}/v1/traces"
    snippet = page.locator("#snippet-otel")
    expect(snippet).to_contain_text(f"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT={endpoint}")
    expect(page.locator(".onboarding > p code")).to_have_text(endpoint)

    page.locator(".snippet", has=snippet).get_by_role("button", name="Copy").click()
    expect(page.locator("#toasts .toast")).to_have_text("Copied to the clipboard")
    assert page.evaluate("navigator.clipboard.readText()") == snippet.text_content()


# --- Trace list ---------------------------------------------------------------------------


def test_service_filter_shows_only_that_service_in_the_url_and_after_reload(page, server, seeded):
    page.goto(server.url + "/traces")
    _mark_page(page)
    page.get_by_label("Service").select_option(SHOP)
    expect(page).to_have_url(re.compile(r"[?&]service=browser-shop(&|$)"))
    expect(_rows(page)).to_have_count(4)
    assert set(_rows(page).locator("td:nth-child(4)").all_inner_texts()) == {SHOP}
    _assert_same_page(page)
    shown = _row_ids(page)
    assert set(shown) == {
        seeded.triage.id,
        seeded.refund.id,
        seeded.summarize.id,
        seeded.nightly.id,
    }

    page.reload()
    expect(_rows(page)).to_have_count(4)
    assert _row_ids(page) == shown
    expect(page.get_by_label("Service")).to_have_value(SHOP)


def test_errors_only_keeps_the_traces_with_an_error_span(page, server, seeded):
    page.goto(f"{server.url}/traces?service={SHOP}")
    expect(_rows(page)).to_have_count(4)
    page.get_by_label("Errors only").check()
    expect(page).to_have_url(re.compile(r"[?&]has_errors=true"))
    expect(_rows(page)).to_have_count(1)
    assert _row_ids(page) == [seeded.refund.id]
    expect(_rows(page).first.locator(".badge-error")).to_have_text("1")


def test_search_box_applies_a_query_after_typing_stops(page, server, seeded):
    page.goto(f"{server.url}/traces?service={SHOP}")
    expect(_rows(page)).to_have_count(4)
    page.locator("#q").fill("error:true")
    expect(page).to_have_url(re.compile(r"[?&]q=error%3Atrue"))
    expect(_rows(page)).to_have_count(1)
    assert _row_ids(page) == [seeded.refund.id]


def test_an_invalid_query_shows_the_error_and_no_rows(page, server, seeded):
    page.goto(f"{server.url}/traces?service={SHOP}")
    expect(_rows(page)).to_have_count(4)
    with page.expect_response(lambda r: "/traces?" in r.url and "q=duration" in r.url) as answer:
        page.locator("#q").fill("duration:>")
    assert answer.value.status == 400
    alert = page.locator("#results [role=alert]")
    expect(alert).to_contain_text("These filters could not be applied")
    expect(alert).to_contain_text("Search:")
    expect(alert.locator("pre.query-error")).to_contain_text("duration:>")
    expect(_rows(page)).to_have_count(0)
    expect(page.locator("#results table")).to_have_count(0)


def test_clicking_the_duration_header_sorts_and_a_second_click_flips(page, server, seeded):
    page.goto(f"{server.url}/traces?service={SHOP}")
    expect(_rows(page)).to_have_count(4)
    by_duration = [seeded.nightly.id, seeded.triage.id, seeded.refund.id, seeded.summarize.id]
    assert _row_ids(page) != by_duration  # newest first to begin with

    page.locator("thead a", has_text="Duration").click()
    expect(page).to_have_url(re.compile(r"[?&]sort=-duration(&|$)"))
    expect(page.locator("th[aria-sort=descending]")).to_contain_text("Duration")
    assert _row_ids(page) == by_duration

    page.locator("thead a", has_text="Duration").click()
    expect(page).to_have_url(re.compile(r"[?&]sort=duration(&|$)"))
    expect(page.locator("th[aria-sort=ascending]")).to_contain_text("Duration")
    assert _row_ids(page) == by_duration[::-1]


def test_next_page_and_back_button(page, server, seeded):
    page.goto(f"{server.url}/traces?service={BULK}")
    expect(_rows(page)).to_have_count(50)
    first_page = _row_ids(page)
    assert first_page == seeded.bulk[::-1][:50]
    expect(page.locator(".pager")).to_contain_text("1–50 of 55")

    page.get_by_role("link", name="Next →").click()
    expect(page).to_have_url(re.compile(r"[?&]page=2(&|$)"))
    expect(_rows(page)).to_have_count(5)
    assert _row_ids(page) == seeded.bulk[4::-1]
    expect(page.locator(".pager")).to_contain_text("51–55 of 55")

    page.go_back()
    expect(page).not_to_have_url(re.compile(r"page=2"))
    expect(_rows(page)).to_have_count(50)
    assert _row_ids(page) == first_page


def test_deleting_two_selected_traces_after_confirming(page, server, seeded):
    doomed = seeded.doomed[:2]
    page.goto(f"{server.url}/traces?service={DOOMED}")
    for trace_id in doomed:
        page.locator(f"#results input[name=ids][value='{trace_id}']").check()
    expect(page.locator("[data-selected-count]")).to_have_text("2 selected")

    dialogs = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Delete selected").click()
    expect(page.locator("#toasts .toast")).to_have_text("Deleted 2 traces")
    for trace_id in doomed:
        expect(page.locator(f"#results input[value='{trace_id}']")).to_have_count(0)
    expect(page.locator(f"#results input[value='{seeded.doomed[2]}']")).to_have_count(1)
    expect(page.locator("[data-selected-count]")).to_have_text("No traces selected")
    assert dialogs and "Delete the selected traces" in dialogs[0]
    assert [_api_status(server, trace_id) for trace_id in doomed] == [404, 404]


def test_j_and_k_move_the_current_row_and_enter_opens_it(page, server, seeded):
    page.goto(f"{server.url}/traces?service={SHOP}")
    rows = _rows(page)
    expect(rows).to_have_count(4)
    ids = _row_ids(page)
    page.keyboard.press("j")
    expect(rows.nth(0)).to_have_class(re.compile(r"\bis-current\b"))
    page.keyboard.press("j")
    page.keyboard.press("j")
    expect(rows.nth(2)).to_have_class(re.compile(r"\bis-current\b"))
    page.keyboard.press("k")
    expect(rows.nth(1)).to_have_class(re.compile(r"\bis-current\b"))
    expect(page.locator("tr.is-current")).to_have_count(1)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{server.url}/traces/{ids[1]}")


def test_slash_focuses_the_search_box(page, server, seeded):
    page.goto(server.url + "/traces")
    expect(page.locator("#q")).not_to_be_focused()
    page.keyboard.press("/")
    expect(page.locator("#q")).to_be_focused()


def test_a_failed_request_shows_an_error_with_retry_that_recovers(page, server, seeded):
    page.goto(f"{server.url}/traces?service={SHOP}")
    expect(_rows(page)).to_have_count(4)
    page.route("**/traces?*", lambda route: route.fulfill(status=500, body="x"))
    page.get_by_label("Errors only").check()
    results = page.locator("#results")
    expect(results.locator(".error-state")).to_contain_text(
        "The server answered with an error (500)."
    )
    retry = results.get_by_role("button", name="Retry")
    expect(retry).to_be_visible()

    page.unroute("**/traces?*")
    retry.click()
    expect(_rows(page)).to_have_count(1)
    assert _row_ids(page) == [seeded.refund.id]


# --- Trace detail -------------------------------------------------------------------------


def _fact(page: Page, label: str):
    term = page.locator("dt", has_text=re.compile(f"^{label}$"))
    return page.locator(".trace-head .facts > div", has=term).locator("dd")


def test_trace_header_shows_name_span_count_and_tokens(page, server, seeded):
    page.goto(f"{server.url}/traces/{seeded.triage.id}")
    expect(page.locator(".trace-head h1")).to_have_text("triage")
    expect(page.locator(".trace-root")).to_have_text("root span invoke_agent triage")
    expect(page.locator(".trace-head .badge-ok")).to_have_text("OK")
    expect(_fact(page, "Service")).to_have_text(SHOP)
    expect(_fact(page, "Spans")).to_have_text("5")
    expect(_fact(page, "Tokens")).to_contain_text("3.5k")
    expect(_fact(page, "Tokens")).to_contain_text("2.8k in · 700 out")
    expect(_fact(page, "Models")).to_have_text("gpt-4o")
    expect(_fact(page, "Duration")).to_have_text("2.40 s")


def test_timeline_rows_are_in_tree_order_with_children_indented(page, server, seeded):
    page.goto(f"{server.url}/traces/{seeded.triage.id}")
    rows = _span_rows(page)
    expect(rows).to_have_count(5)
    assert rows.locator(".span-link").all_inner_texts() == [
        "invoke_agent triage",
        "chat gpt-4o",
        "execute_tool search",
        "GET /v1/search",
        "chat gpt-4o",
    ]
    indent = [row.locator(".caret, .caret-space").bounding_box()["x"] for row in rows.all()]
    assert indent[0] < indent[1] == indent[2] == indent[4] < indent[3]
    expect(page.locator(".timeline-header .col-name")).to_contain_text("5 spans")


def test_collapsing_a_subtree_hides_it_and_expanding_shows_it(page, server, seeded):
    page.goto(f"{server.url}/traces/{seeded.triage.id}")
    rows = _span_rows(page)
    expect(rows).to_have_count(5)
    root_caret = rows.nth(0).locator("[data-toggle]")

    root_caret.click()
    expect(root_caret).to_have_attribute("aria-expanded", "false")
    expect(rows.locator("visible=true")).to_have_count(1)
    root_caret.click()
    expect(rows.locator("visible=true")).to_have_count(5)

    rows.nth(2).locator("[data-toggle]").click()  # execute_tool search
    expect(rows.nth(3)).to_be_hidden()
    expect(rows.nth(4)).to_be_visible()

    page.get_by_role("button", name="Expand all").click()
    expect(rows.locator("visible=true")).to_have_count(5)
    page.get_by_role("button", name="Collapse all").click()
    expect(rows.locator("visible=true")).to_have_count(1)
    expect(rows.nth(0)).to_be_visible()


def test_span_filter_narrows_to_matches_and_their_ancestors(page, server, seeded):
    page.goto(f"{server.url}/traces/{seeded.triage.id}")
    _mark_page(page)
    page.locator("#span-filter").fill("v1/search")
    rows = _span_rows(page)
    expect(rows).to_have_count(3)
    assert rows.locator(".span-link").all_inner_texts() == [
        "invoke_agent triage",
        "execute_tool search",
        "GET /v1/search",
    ]
    expect(page.locator(".timeline-header .col-name")).to_contain_text("3 of 5 spans match")
    expect(page).to_have_url(re.compile(r"[?&]filter=v1(%2F|/)search"))
    _assert_same_page(page)


def test_tree_view_shows_duration_tokens_and_model_columns(page, server, seeded):
    page.goto(f"{server.url}/traces/{seeded.triage.id}")
    tree = page.locator(".timeline-tools label", has_text="Tree")
    tree.click()
    expect(page).to_have_url(re.compile(r"[?&]view=tree"))
    expect(page.locator(".timeline-view")).to_have_class(re.compile(r"\bview-tree\b"))
    expect(page.locator(".timeline-header .tree-cols")).to_contain_text("Model")
    chat = _span_rows(page).nth(1).locator(".tree-cols")
    expect(chat).to_contain_text("880 ms")
    expect(chat).to_contain_text("1.2k → 300")
    expect(chat).to_contain_text("gpt-4o")
    expect(page.locator(".col-bar")).to_have_count(0)
    # The switch shows which view is on (its highlight follows the checked radio).
    expect(tree.locator("input")).to_be_checked()
    expect(
        page.locator(".timeline-tools label", has_text="Timeline").locator("input")
    ).not_to_be_checked()
    highlight = "getComputedStyle(document.querySelector('{}')).fontWeight"
    bold = page.evaluate(highlight.format(".timeline-tools label:has(input[value=tree])"))
    plain = page.evaluate(highlight.format(".timeline-tools label:has(input[value=timeline])"))
    assert int(bold) > int(plain)


def test_clicking_an_llm_span_shows_its_attributes_and_the_conversation(page, server, seeded):
    trace = seeded.triage
    page.goto(f"{server.url}/traces/{trace.id}")
    _mark_page(page)
    row = _span_rows(page).nth(1)
    row.locator(".col-bar").click()  # anywhere on the row, not only its name
    expect(page).to_have_url(f"{server.url}/traces/{trace.id}/spans/{trace.chat}")
    panel = page.locator("#panel")
    expect(panel.locator(".panel-title")).to_have_text("chat gpt-4o")
    model = panel.locator(
        ".kv tr", has=page.locator("th", has_text=re.compile(r"^gen_ai\.request\.model$"))
    )
    expect(model.locator("td")).to_have_text("gpt-4o")
    expect(panel.locator(".turn.role-user .turn-content")).to_have_text(QUESTION)
    expect(panel.locator(".tool-call .tool-name")).to_contain_text("search")
    expect(row).to_have_class(re.compile(r"\bis-selected\b"))
    _assert_same_page(page)


def test_a_failing_tool_span_shows_its_exception_and_status(page, server, seeded):
    trace = seeded.refund
    page.goto(f"{server.url}/traces/{trace.id}")
    _span_row(page, "execute_tool lookup_order").get_by_role("link").click()
    expect(page).to_have_url(f"{server.url}/traces/{trace.id}/spans/{trace.tool}")
    panel = page.locator("#panel")
    expect(panel.locator(".status-line .badge-error")).to_have_text("ERROR")
    expect(panel.locator(".status-message")).to_have_text("lookup_order failed")
    exception = panel.locator(".exception")
    expect(exception).to_contain_text("ValueError: order 42 not found")
    expect(exception.locator("pre")).to_contain_text("Traceback")


def test_jump_to_first_error_opens_the_failing_span(page, server, seeded):
    trace = seeded.refund
    page.goto(f"{server.url}/traces/{trace.id}")
    page.get_by_role("link", name="Jump to first error").click()
    expect(page).to_have_url(f"{server.url}/traces/{trace.id}/spans/{trace.tool}")
    expect(page.locator("#panel .panel-title")).to_have_text("execute_tool lookup_order")
    expect(_span_row(page, "execute_tool lookup_order")).to_have_class(
        re.compile(r"\bis-selected\b")
    )


def test_escape_closes_the_span_panel(page, server, seeded):
    trace = seeded.triage
    page.goto(f"{server.url}/traces/{trace.id}/spans/{trace.tool}")
    expect(page.locator("#panel .panel-title")).to_have_text("execute_tool search")
    page.keyboard.press("Escape")
    expect(page.locator("#panel .span-panel")).to_have_count(0)
    expect(page.locator("#panel")).to_contain_text("Select a span")
    expect(page).to_have_url(f"{server.url}/traces/{trace.id}")
    expect(page.locator(".span-row.is-selected")).to_have_count(0)


def test_deleting_a_trace_from_its_page_lands_on_the_list_with_a_message(page, server, seeded):
    trace_id = seeded.purge.id
    page.goto(f"{server.url}/traces/{trace_id}")
    dialogs = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    page.locator(".trace-head").get_by_role("button", name="Delete").click()
    expect(page).to_have_url(server.url + "/traces")
    expect(page.locator("#toasts .toast")).to_have_text(f"Deleted trace {trace_id}")
    assert dialogs and "Delete this trace and its 2 spans?" in dialogs[0]
    assert _api_status(server, trace_id) == 404


def test_an_unknown_trace_id_is_a_404_page_naming_it(page, server, seeded):
    response = page.goto(f"{server.url}/traces/{UNKNOWN_ID}")
    assert response.status == 404
    expect(page.locator("h1")).to_have_text(f"No trace {UNKNOWN_ID}")
    expect(page.locator(".not-found")).to_contain_text("msgtrace has no trace with this id")


def test_a_malformed_trace_id_is_called_out_as_not_a_trace_id(page, server, seeded):
    response = page.goto(f"{server.url}/traces/order-1234")
    assert response.status == 404
    expect(page.locator("h1")).to_have_text("No trace order-1234")
    expect(page.locator(".not-found")).to_contain_text("This is not a trace id")


def test_a_big_trace_shows_500_rows_then_more_on_demand(page, server, seeded):
    page.goto(f"{server.url}/traces/{seeded.big}")
    _mark_page(page)
    rows = _span_rows(page)
    expect(rows).to_have_count(500)
    more = page.locator("a.more")
    expect(more).to_have_text("Show next 500 of 700 more spans")
    header = page.locator(".timeline-header .col-name")
    expect(header).to_contain_text("1200 spans · 500 shown")

    more.click()
    expect(rows).to_have_count(1000)
    expect(page.locator("a.more")).to_have_text("Show 200 more spans")
    _assert_same_page(page)
    # The header must not go on claiming that only the first 500 are shown.
    expect(header).to_contain_text("1200 spans · 1000 shown")


def test_export_menus_download_the_trace_and_carry_the_lists_filters(
    page, server, seeded, screenshot
):
    page.goto(f"{server.url}/traces?service={SHOP}")
    _mark_page(page)
    page.get_by_label("Service").select_option(BILLING)  # an htmx swap, not a page load
    menu = page.locator("#export-menu details")
    menu.locator("summary").click()
    csv_link = menu.locator("a[data-export=csv]")
    expect(csv_link).to_have_attribute(
        "href", re.compile(rf"^/traces/export\?(.*&)?service={BILLING}&.*format=csv$")
    )
    _assert_same_page(page)
    screenshot(page, "export-list-menu")

    trace = seeded.triage
    page.goto(f"{server.url}/traces/{trace.id}")
    menu = page.locator(".trace-head .export-menu")
    menu.locator("summary").click()
    screenshot(page, "export-trace-menu")
    with page.expect_download() as started:
        menu.locator("a[data-export=json]").click()
    download = started.value
    assert re.fullmatch(rf"msgtrace-trace-{trace.id}-\d{{8}}T\d{{6}}Z\.json",
                        download.suggested_filename)  # fmt: skip
    with open(download.path(), "rb") as file:
        document = json.load(file)
    assert [t["trace_id"] for t in document["traces"]] == [trace.id]
    assert len(document["traces"][0]["spans"]) == trace.spans
    expect(menu).not_to_have_attribute("open", "")  # the menu closes behind the download


# --- Screenshots --------------------------------------------------------------------------


def test_selecting_two_traces_and_compare_lands_on_the_comparison(page, server, seeded):
    triage, refund = seeded.triage, seeded.refund
    page.goto(f"{server.url}/traces?service={SHOP}")
    compare = page.get_by_role("button", name="Compare")
    expect(compare).to_be_disabled()
    for trace_id in (triage.id, refund.id):
        page.locator(f"input[name=ids][value='{trace_id}']").check()
    expect(compare).to_be_enabled()
    compare.click()
    # The earlier of the two is the baseline, A.
    starts = {
        trace_id: server.get_json(f"/api/v1/traces/{trace_id}")["start_time_unix_nano"]
        for trace_id in (triage.id, refund.id)
    }
    a, b = sorted(starts, key=starts.get)
    expect(page).to_have_url(f"{server.url}/traces/compare?a={a}&b={b}")
    expect(page.locator(".summary-table")).to_contain_text("Duration")
    expect(page.locator(".compare-table tbody tr").first).to_be_visible()
    # Hovering a matched span in the table highlights its partner in both timelines.
    root = page.locator(".compare-table tbody tr").filter(has_text="invoke_agent").first
    pair = root.get_attribute("data-pair")
    root.hover()
    expect(page.locator(f".compare-timeline [data-pair='{pair}'].is-paired")).to_have_count(2)


def test_help_examples_autocomplete_and_saved_filters(page, server, seeded):
    page.goto(f"{server.url}/traces")
    # A help example fills the box and runs.
    page.locator("#search-help summary").click()
    page.get_by_role("button", name="duration:>2s AND error:true").click()
    expect(page).to_have_url(re.compile(r"q=duration%3A%3E2s"))
    expect(page.locator("#search-help")).not_to_have_attribute("open", "")
    # Field names complete: "serv" + Tab becomes "service:".
    box = page.locator("#q")
    box.fill("")
    box.press_sequentially("serv")
    expect(page.locator("#q-suggestions li").first).to_have_text("service")
    box.press("Tab")
    expect(box).to_have_value("service:")
    box.press_sequentially(SHOP)
    expect(page).to_have_url(re.compile(rf"q=service%3A{SHOP}"))
    expect(_rows(page).first).to_be_visible()
    # Save what is in the box now, under a name; it is listed and applies with a click.
    page.locator("#search-menus summary", has_text="Saved").click()
    page.locator(".save-form input[name=name]").fill("Shop runs")
    page.locator(".save-form button").click()
    expect(page.locator("#toasts")).to_contain_text("Saved “Shop runs”")
    saved = page.locator("#search-menus .menu-item", has_text="Shop runs")
    expect(saved).to_contain_text(f"service:{SHOP}")
    page.goto(f"{server.url}/traces")
    page.locator("#search-menus summary", has_text="Saved").click()
    page.locator("#search-menus .menu-item", has_text="Shop runs").click()
    expect(page.locator("#q")).to_have_value(f"service:{SHOP}")
    # The searches just run are in Recent, newest first.
    page.locator("#search-menus summary", has_text="Recent").click()
    expect(page.locator("#search-menus .menu-item").first).to_contain_text(f"service:{SHOP}")
    # Delete the saved filter (the dialog is accepted).
    page.locator("#search-menus summary", has_text="Saved").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete Shop runs").click()
    expect(page.locator("#search-menus")).not_to_contain_text("Shop runs")


def test_with_javascript_off_every_page_can_still_be_read(new_context, server, seeded):
    page = new_context(java_script_enabled=False).new_page()
    triage = seeded.triage
    # Filters are a plain form: submitting it loads the filtered list as a page.
    page.goto(f"{server.url}/traces")
    page.locator("select[name=service]").select_option(SHOP)
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(rf"service={SHOP}"))
    assert set(_row_ids(page)) >= {triage.id, seeded.refund.id}
    assert seeded.invoices.id not in _row_ids(page)
    # Names are links; a span is a page of its own with its details beside the timeline.
    page.get_by_role("link", name="triage", exact=True).click()
    expect(page).to_have_url(f"{server.url}/traces/{triage.id}")
    page.locator(f".span-row[data-span='{triage.chat}'] a.span-link").click()
    expect(page).to_have_url(f"{server.url}/traces/{triage.id}/spans/{triage.chat}")
    expect(page.locator("#panel .turn.role-user")).to_contain_text(QUESTION)
    # Sorting is a link too.
    page.goto(f"{server.url}/traces?service={SHOP}")
    page.get_by_role("link", name="Duration").click()
    expect(page).to_have_url(re.compile(r"sort=-duration"))


def test_screenshots_of_every_page_in_light_and_dark(
    page, server, seeded, empty_server, screenshot
):
    """Written to tests/screenshots/ for a person to look at; asserts only that pages load."""
    triage, refund = seeded.triage, seeded.refund
    shots = [
        ("dashboard", f"{server.url}/", ".stat-grid"),
        ("dashboard-empty", f"{empty_server.url}/", ".onboarding"),
        ("trace-list", f"{server.url}/traces", "#results tbody tr"),
        ("trace-list-query-error", f"{server.url}/traces?q=duration:>", ".query-error"),
        ("trace-llm-span", f"{server.url}/traces/{triage.id}/spans/{triage.chat}", ".chat"),
        ("trace-error-span", f"{server.url}/traces/{refund.id}/spans/{refund.tool}", ".exception"),
        ("trace-tree", f"{server.url}/traces/{triage.id}?view=tree", ".view-tree"),
        ("trace-big", f"{server.url}/traces/{seeded.big}", "a.more"),
        ("not-found", f"{server.url}/traces/{UNKNOWN_ID}", ".not-found"),
        ("compare", f"{server.url}/traces/compare?a={triage.id}&b={refund.id}", ".compare-table"),
    ]
    for name, url, ready in shots:
        page.goto(url)
        expect(page.locator(ready).first).to_be_visible()
        screenshot(page, name)
