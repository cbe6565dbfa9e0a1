"""Live updates in a real browser: rows, toasts, a growing trace, pause, reconnect.

Spans go to the session's server through the OpenTelemetry SDK while the page is open;
what the page shows must change without a reload (a flag on ``window`` proves it).
Each test filters by its own service name: the session's server is shared.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser import MS, hex_trace_id, now_ns


def _open(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#live")).to_have_attribute("data-live-state", "live")
    page.evaluate("window.__samePage = true")


def _assert_same_page(page: Page) -> None:
    assert page.evaluate("window.__samePage") is True, "the page reloaded"


def _run(spans, workflow: str, *, duration_ms: float = 1200, error: str | None = None):
    """A root span and two children; returns the root (its trace can get more spans)."""
    t0 = now_ns(ago_s=5)
    root = spans.span(
        f"invoke_agent {workflow}",
        start_ns=t0,
        duration_ms=duration_ms,
        attributes={"workflow.name": workflow, "gen_ai.operation.name": "invoke_agent"},
        error=error,
    )
    spans.span("chat gpt-4o", parent=root, start_ns=t0 + 10 * MS, duration_ms=400)
    spans.span("search_orders", parent=root, start_ns=t0 + 500 * MS, duration_ms=300)
    return root


def test_a_new_trace_appears_at_the_top_of_the_list_with_a_toast(page, server, otel, screenshot):
    service = "browser-live-list"
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    older = otel(service)
    _run(older, "already here", duration_ms=800)
    older.send()
    _open(page, f"{server.url}/traces?service={service}")
    expect(page.locator("#trace-rows tr[data-nav-row]")).to_have_count(1)

    spans = otel(service)
    root = _run(spans, "refund-agent", duration_ms=2400)
    spans.send()

    rows = page.locator("#trace-rows tr[data-nav-row]")
    expect(rows).to_have_count(2)
    first = rows.first
    expect(first).to_have_id(f"trace-{hex_trace_id(root)}")
    expect(first).to_contain_text("refund-agent")
    expect(first).to_have_class(re.compile(r"\bis-new\b"))
    toast = page.locator("#toasts a.toast", has_text="New trace: refund-agent (2.40 s)")
    expect(toast).to_be_visible()
    expect(toast).to_have_attribute("href", f"/traces/{hex_trace_id(root)}")
    # The longest trace shown sets the bars' scale, the new one included.
    expect(first.locator(".dur-bar rect")).to_have_attribute("width", "100.0%")
    expect(rows.nth(1).locator(".dur-bar rect")).to_have_attribute("width", "33.3%")
    screenshot(page, "live-list-new-row")
    _assert_same_page(page)
    assert problems == []
    expect(first).not_to_have_class(re.compile(r"\bis-new\b"), timeout=8000)  # fades


def test_an_error_trace_toast_is_red_and_opens_the_trace(page, server, otel):
    service = "browser-live-error"
    _open(page, f"{server.url}/?window=1h")
    spans = otel(service)
    root = _run(spans, "failing-agent", error="tool timed out")
    spans.send()
    toast = page.locator("#toasts a.toast", has_text="New trace: failing-agent")
    expect(toast).to_have_class(re.compile(r"\btoast-error\b"))
    # The dashboard's recent lists and figures follow (re-rendered at most every 2 s).
    recent = page.locator(".card", has=page.get_by_role("heading", name="Recent errors"))
    expect(recent).to_contain_text("failing-agent")
    _assert_same_page(page)
    toast.click()
    expect(page).to_have_url(f"{server.url}/traces/{hex_trace_id(root)}")


def test_an_open_trace_grows_as_its_spans_arrive(page, server, otel):
    spans = otel("browser-live-detail")
    root = _run(spans, "long-run")
    spans.send()
    trace_id = hex_trace_id(root)
    server.wait_for_trace(trace_id, 3)
    _open(page, f"{server.url}/traces/{trace_id}")
    facts = page.locator(".trace-head .facts")
    spans_fact = facts.locator("div", has=page.locator("dt", has_text="Spans")).locator("dd")
    expect(spans_fact).to_have_text("3")
    expect(page.locator(".span-row")).to_have_count(3)

    more = otel("browser-live-detail")
    t0 = root.start_time
    more.span("chat gpt-4o-mini", parent=root, start_ns=t0 + 900 * MS, duration_ms=200)
    more.span("send_email", parent=root, start_ns=t0 + 1100 * MS, duration_ms=50, error="bounced")
    more.send()

    expect(spans_fact).to_have_text("5")
    expect(page.locator(".span-row")).to_have_count(5)
    expect(page.locator(".trace-head .badge-error")).to_have_text("1 error")
    expect(page.get_by_role("link", name="send_email", exact=True)).to_be_visible()
    _assert_same_page(page)


def test_pausing_holds_new_rows_and_counts_them(page, server, otel, screenshot):
    service = "browser-live-pause"
    _open(page, f"{server.url}/traces?service={service}")
    page.get_by_label("Pause live updates").check()
    spans = otel(service)
    for name in ("paused-one", "paused-two"):
        _run(spans, name)
    spans.send()

    notice = page.locator("#live-notice")
    expect(notice).to_have_text("2 new traces — show")
    expect(page.locator("#trace-rows tr[data-nav-row]")).to_have_count(0)
    screenshot(page, "live-list-paused")
    notice.click()
    expect(page.locator("#trace-rows tr[data-nav-row]")).to_have_count(2)
    expect(notice).to_be_hidden()
    _assert_same_page(page)


def test_changing_filters_changes_what_arrives_live(page, server, otel):
    _open(page, f"{server.url}/traces?service=browser-live-nobody")
    page.locator("#q").fill("workflow:filtered-in")
    expect(page).to_have_url(re.compile(r"q=workflow%3Afiltered-in"))
    page.locator('select[name="service"]').select_option("")
    expect(page).not_to_have_url(re.compile("service=browser-live-nobody"))
    spans = otel("browser-live-filters")
    _run(spans, "filtered-out")
    _run(spans, "filtered-in")
    spans.send()
    rows = page.locator("#trace-rows tr[data-nav-row]")
    expect(rows.filter(has_text="filtered-in")).to_have_count(1)
    expect(page.locator("#toasts")).to_contain_text("2 new traces")
    expect(rows.filter(has_text="filtered-out")).to_have_count(0)
    _assert_same_page(page)


def test_the_indicator_shows_a_lost_connection_and_the_page_catches_up(
    new_context, live_server_process, free_port, otel, screenshot
):
    # A server of our own to stop and start, on the session's database.
    other = live_server_process.sibling(free_port())
    try:
        page = new_context().new_page()
        service = "browser-live-reconnect"
        _open(page, f"{other.url}/traces?service={service}")
        screenshot(page, "live-indicator-live")
        other.stop()
        indicator = page.locator("#live")
        expect(indicator).to_have_attribute(
            "data-live-state", re.compile("reconnecting|offline"), timeout=5000
        )
        screenshot(page, "live-indicator-reconnecting")
        expect(indicator).to_have_attribute("data-live-state", "offline", timeout=20_000)
        screenshot(page, "live-indicator-offline")
        spans = otel(service)  # to the session's server: stored while the page is offline
        _run(spans, "while-offline")
        spans.send()
        other.launch()
        expect(indicator).to_have_attribute("data-live-state", "live", timeout=90_000)
        expect(indicator).to_have_text("live")
        expect(page.locator("#trace-rows")).to_contain_text("while-offline")
        _assert_same_page(page)
    finally:
        other.stop()
