"""Costs in the browser: a trace priced from the price table, with one unpriced span."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser import hex_span_id, hex_trace_id, now_ns


def test_the_span_panel_explains_a_cost_and_the_list_flags_unpriced_spans(
    page, server, otel, screenshot
):
    spans = otel("pricing-demo")
    start = now_ns(ago_s=30)
    root = spans.span("invoke_agent planner", start_ns=start, duration_ms=2400,
                      attributes={"gen_ai.operation.name": "invoke_agent",
                                  "workflow.name": "priced-run"})  # fmt: skip
    chat = spans.span(
        "chat gpt-4o", start_ns=start + 10_000_000, duration_ms=1200, parent=root,
        attributes={
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 300, "gen_ai.usage.cache_read.input_tokens": 200,
        },
    )  # fmt: skip
    spans.span(
        "chat in-house", start_ns=start + 1_300_000_000, duration_ms=900, parent=root,
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "acme-7b",
                    "gen_ai.usage.input_tokens": 500, "gen_ai.usage.output_tokens": 80},
    )  # fmt: skip
    spans.send()
    trace_id = hex_trace_id(root)
    server.wait_for_trace(trace_id, spans=3)

    page.goto(f"{server.url}/traces?q=workflow:priced-run")
    row = page.locator(f"#trace-{trace_id}")
    expect(row.locator(".unpriced-mark")).to_have_text("+?")
    expect(row.locator(".unpriced-mark")).to_have_attribute(
        "title", re.compile("1 span with tokens but no known price")
    )

    page.goto(f"{server.url}/traces/{trace_id}/spans/{hex_span_id(chat)}")
    expect(page.locator(".facts:not(.facts-panel) > div", has_text="Cost")).to_contain_text(
        "+ 1 unpriced span"
    )
    explained = page.locator("#panel .cost-explained")
    expect(explained.locator(".cost-math")).to_have_text(
        "1,000 input × $2.50/M + 200 cache read × $1.25/M + 300 output × $10/M = $0.00575"
    )
    expect(explained).to_contain_text("Price: gpt-4o* (openai), since 2024-08-06")
    screenshot(page, "span-cost-explained")

    page.locator(".span-row", has_text="chat in-house").locator(".col-bar").click()
    expect(page.locator("#panel .panel-title")).to_have_text("chat in-house")
    expect(page.locator("#panel .badge-warn")).to_have_text("unpriced")
    expect(page.locator("#panel .cost-explained")).to_contain_text(
        "Not counted in the trace's cost: no price matches this model on"
    )
    expect(page.locator("#panel .cost-explained a", has_text="Add a price")).to_have_attribute(
        "href", "/admin/traces/modelprice/add/?pattern=acme-7b&provider="
    )
    screenshot(page, "span-unpriced")
