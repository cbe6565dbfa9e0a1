"""The analytics page in a real browser, on traces sent through the real ingest path.

The session's server is shared with other test modules, so every page here is filtered
to this module's own service with the page's query (``q=service:browser-analytics``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.browser import MS, Spans, hex_trace_id, now_ns

SERVICE = "browser-analytics"
QUERY = f"service:{SERVICE}"


def _run(spans: Spans, *, ago_s: float, model: str, ms: float, fail: bool = False) -> str:
    """An agent run: a root span and one chat span on ``model`` (failing when ``fail``)."""
    t0 = now_ns(ago_s=ago_s)
    root = spans.span(
        "invoke_agent helper",
        start_ns=t0,
        duration_ms=ms,
        attributes={"gen_ai.operation.name": "invoke_agent", "workflow.name": "answer"},
    )
    spans.span(
        f"chat {model}",
        parent=root,
        start_ns=t0 + 5 * MS,
        duration_ms=ms / 2,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 100,
            "gen_ai.usage.cost": 0.01,
        },
        error="rate limited" if fail else None,
    )
    return hex_trace_id(root)


@pytest.fixture(scope="module")
def seeded(otel, live_server_process) -> SimpleNamespace:
    spans = otel(SERVICE)
    recent = [
        _run(spans, ago_s=300, model="gpt-4o", ms=1200),
        _run(spans, ago_s=3 * 3600, model="gpt-4o", ms=800, fail=True),
        _run(spans, ago_s=7 * 3600, model="gpt-4o", ms=2600),
        _run(spans, ago_s=9 * 3600, model="claude-haiku", ms=400),
    ]
    old = _run(spans, ago_s=3 * 86400, model="claude-haiku", ms=5000)  # in 7d, not in 24h
    spans.send()
    for trace_id in [*recent, old]:
        live_server_process.wait_for_trace(trace_id, 2)
    return SimpleNamespace(recent=recent, old=old)


def _stat(page: Page, label: str):
    card = page.locator(".stat", has=page.locator(".stat-label", has_text=re.compile(f"^{label}$")))
    return card.locator(".stat-value")


def _open(page: Page, server, **params) -> None:
    query = "&".join(f"{key}={value}" for key, value in {"q": QUERY, **params}.items())
    page.goto(f"{server.url}/analytics?{query}")


def test_analytics_page_draws_the_charts_with_values_on_hover(page, server, seeded, screenshot):
    _open(page, server)
    expect(page.get_by_role("heading", name="Analytics", exact=True)).to_be_visible()
    expect(page.locator("nav.nav a[aria-current=page]")).to_have_text("Analytics")
    expect(_stat(page, "Traces")).to_have_text("4")
    expect(_stat(page, "Error rate")).to_have_text("25%")
    expect(page.locator("svg.chart-svg")).to_have_count(5)
    for title in ("Traces", "Error rate", "Trace duration", "Tokens", "Cost"):
        expect(page.locator("figure.chart h2", has_text=re.compile(f"^{title}$"))).to_be_visible()
    # Axes: labelled ticks on both, with units.
    expect(page.locator("#chart-duration .chart-y text").last).to_have_text(re.compile(r" s$"))
    expect(page.locator("#chart-cost .chart-y text").first).to_have_text("$0")
    assert page.locator("#chart-traces .chart-x text").count() >= 4

    # Each bucket's hover area carries its figures as a native tooltip (<title>).
    hits = page.locator("#chart-traces .chart-hits rect")
    assert hits.count() == 49  # 24 hours in 30-minute buckets, the first one partial
    titles = hits.locator("title").all_text_contents()
    with_traces = [t for t in titles if "No traces" not in t]
    assert len(with_traces) == 4
    assert sum(int(re.search(r"\n(\d+) traces?", t).group(1)) for t in with_traces) == 4
    failing = next(t for t in with_traces if "1 with errors" in t)
    assert re.search(r"p50 800 ms · p95 800 ms · p99 800 ms", failing)
    assert "Tokens: 1,000 in · 100 out" in failing
    # Hovering highlights the bucket under the pointer.
    busy = hits.nth(titles.index(failing))
    busy.hover()
    assert busy.evaluate("r => getComputedStyle(r).fillOpacity") == "0.07"

    by_model = page.locator("#breakdown-model")
    expect(by_model.locator("tbody tr[data-row-link]")).to_have_count(2)
    expect(by_model.locator("tbody tr").first).to_contain_text("gpt-4o")
    screenshot(page, "analytics-24h")


def test_window_switch_swaps_the_figures_and_the_url_without_a_reload(page, server, seeded):
    _open(page, server)
    expect(_stat(page, "Traces")).to_have_text("4")
    page.evaluate("window.__samePage = true")
    page.get_by_role("navigation", name="Time window").get_by_role("link", name="7d").click()
    expect(page).to_have_url(re.compile(r"[?&]window=7d(&|$)"))
    expect(_stat(page, "Traces")).to_have_text("5")
    expect(page.locator("#chart-traces .chart-hits rect")).to_have_count(29)
    assert parse_qs(urlsplit(page.url).query)["q"] == [QUERY]  # the query is kept
    assert page.evaluate("window.__samePage") is True

    page.go_back()
    expect(page).not_to_have_url(re.compile(r"window=7d"))
    expect(_stat(page, "Traces")).to_have_text("4")


def test_sorting_a_table_and_clicking_a_row_lands_on_the_filtered_trace_list(
    page, server, seeded, screenshot
):
    _open(page, server)
    by_model = page.locator("#breakdown-model")
    names = by_model.locator("tbody td.name-cell")
    expect(names).to_have_text(["gpt-4o", "claude-haiku"])  # most calls first
    by_model.get_by_role("link", name="p95").click()
    expect(page).to_have_url(re.compile(r"[?&]sort_model=-p95(&|$)"))
    expect(by_model.locator("th[aria-sort=descending]")).to_contain_text("p95")
    expect(names).to_have_text(["gpt-4o", "claude-haiku"])  # 1.23 s beats 200 ms
    by_model.get_by_role("link", name="p95").click()
    expect(page).to_have_url(re.compile(r"[?&]sort_model=p95(&|$)"))
    expect(names).to_have_text(["claude-haiku", "gpt-4o"])
    screenshot(page, "analytics-sorted")
    # Another window keeps the sort.
    page.get_by_role("navigation", name="Time window").get_by_role("link", name="7d").click()
    expect(page).to_have_url(re.compile(r"[?&]window=7d(&|$)"))
    assert parse_qs(urlsplit(page.url).query)["sort_model"] == ["p95"]
    expect(by_model.locator("th[aria-sort=ascending]")).to_contain_text("p95")
    page.go_back()
    expect(page).not_to_have_url(re.compile(r"window=7d"))

    # A click anywhere on the row (here: its calls cell) opens the traces it counts.
    by_model.locator("tbody tr", has_text="gpt-4o").locator("td").nth(1).click()
    expect(page).to_have_url(re.compile(r"/traces\?"))
    params = parse_qs(urlsplit(page.url).query)
    assert params == {"q": [f'({QUERY}) model:"gpt-4o"'], "since": ["24h"]}
    expect(page.locator("#q")).to_have_value(f'({QUERY}) model:"gpt-4o"')
    ids = page.locator("#results input[name=ids]").evaluate_all("boxes => boxes.map(b => b.value)")
    assert sorted(ids) == sorted(seeded.recent[:3])


def test_a_bad_query_is_shown_inline_with_no_figures(page, server, seeded, screenshot):
    _open(page, server)
    search = page.locator("#analytics-q")
    search.fill("duration:>")
    with page.expect_response(lambda r: "/analytics?" in r.url) as answer:
        search.press("Enter")
    assert answer.value.status == 400
    alert = page.locator("#analytics [role=alert]")
    expect(alert).to_contain_text("could not be applied")
    expect(alert.locator("pre.query-error")).to_contain_text("duration:>")
    expect(page.locator("svg.chart-svg")).to_have_count(0)
    expect(page.locator(".breakdown")).to_have_count(0)
    screenshot(page, "analytics-bad-query")


def test_a_custom_window_from_the_form(page, server, seeded, screenshot):
    _open(page, server)
    page.get_by_role("link", name="Custom").click()
    since = page.locator("#custom-window input[name=since]")
    expect(since).to_be_visible()
    expect(since).to_be_focused()
    expect(since).to_have_value(re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$"))  # the window shown
    since.fill((datetime.now(UTC) - timedelta(days=4)).strftime("%Y-%m-%dT00:00"))
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"[?&]window=custom(&|$)"))
    expect(page.locator(".analytics-scope")).to_contain_text("Traces that started from")
    expect(_stat(page, "Traces")).to_have_text("5")
    expect(page.locator("nav.segmented a[aria-current]")).to_have_text("Custom")
    screenshot(page, "analytics-custom")
