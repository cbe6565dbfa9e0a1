"""Alerts in a real browser: create a rule with the form (its preview answering as one
types), post traces over OTLP that trip it, and see the toast, the badge and the history
row arrive on the open page, with the webhook's delivery result.

The rule is checked by the server's own evaluator, so this module starts a server of its
own that checks every second (the session's checks every 30 s).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests import otlp
from tests.receiver import Receiver
from tests.server import MsgtraceServer

SERVICE = "browser-alerts"


@pytest.fixture(scope="module")
def alerting_server(tmp_path_factory, free_port):
    server = MsgtraceServer.start(
        tmp_path_factory.mktemp("alerts"), free_port(), MSGTRACE_ALERT_INTERVAL="1"
    )
    yield server
    server.stop()


def test_a_rule_made_in_the_browser_fires_with_a_toast_and_a_history_row(
    page: Page, alerting_server, screenshot
):
    server = alerting_server
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    with Receiver() as receiver:
        page.goto(f"{server.url}/alerts/new")
        page.fill("#alert-name", "Checkout errors")
        page.fill("#alert-q", f"service:{SERVICE} error:tru")  # a typo first
        query_error = page.locator("#err-query")
        expect(query_error).to_contain_text('"tru" is not true or false')
        expect(query_error.locator("pre.query-error")).to_contain_text("^")
        page.fill("#alert-q", f"service:{SERVICE}")
        expect(query_error).to_be_empty()
        page.select_option("select[name=metric]", "errors")
        page.select_option("select[name=comparator]", ">")
        page.fill("input[name=threshold]", "0")
        page.fill("#alert-window", "5m")
        page.fill("#alert-cooldown", "0s")
        page.fill("#alert-webhooks", receiver.url)
        preview = page.locator("#alert-preview")
        expect(preview).to_contain_text("would not fire")
        expect(preview.locator(".preview-value")).to_have_text("0")
        screenshot(page, "alerts-form")
        page.get_by_role("button", name="Create rule").click()
        expect(page).to_have_url(re.compile(r"/alerts/\d+$"))
        expect(page.locator("#toasts")).to_contain_text("Created rule “Checkout errors”")

        page.goto(f"{server.url}/alerts")
        expect(page.locator("#live")).to_have_attribute("data-live-state", "live")
        expect(page.locator("#alert-rules")).to_contain_text("Checkout errors")
        page.evaluate("window.__samePage = true")

        trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
        spans = [
            otlp.span(trace_id, root, "checkout"),
            otlp.span(trace_id, otlp.new_span_id(), "charge card", parent=root,
                      error="card declined"),
        ]  # fmt: skip
        status, _, _ = server.post(otlp.body(*spans, service=SERVICE))
        assert status == 200

        toast = page.locator(".toast-alert")
        expect(toast).to_contain_text("Alert firing: Checkout errors", timeout=15_000)
        expect(toast).to_contain_text("Error count 1 (threshold > 0) over the last 5m")
        expect(page.locator("#alert-badge")).to_have_text("1")
        expect(page.locator("#alert-badge")).to_be_visible()
        row = page.locator("#alert-history tr.alert-event.kind-firing")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("Checkout errors")
        expect(row.locator(".delivery-cell")).to_contain_text("sent", timeout=10_000)
        expect(page.locator("#alert-rules tr.is-firing")).to_contain_text("firing")
        assert page.evaluate("window.__samePage") is True, "the page reloaded"
        screenshot(page, "alerts-firing")

        (body,) = receiver.bodies()
        assert (body["state"], body["rule"]["name"], body["value"]) == (
            "firing",
            "Checkout errors",
            1.0,
        )
        assert body["traces_url"].startswith(f"{server.url}/traces?q=")

        # The history row opens its delivery result; the toast goes when dismissed.
        row.locator(".delivery summary").click()
        expect(row.locator(".deliveries")).to_contain_text("200")
        page.locator("[data-toast-close]").first.click()
        expect(toast).to_have_count(0)
        # The rule's own page has the same row, and the matching traces behind its link.
        page.locator("#alert-rules a", has_text="Checkout errors").click()
        expect(page.locator("#alert-history tr.alert-event")).to_have_count(1)
        page.locator("#alert-history .delivery summary").click()
        screenshot(page, "alerts-rule")
        page.locator("#alert-history a", has_text="matching traces").click()
        expect(page.locator(f"#trace-{trace_id}")).to_be_visible()
    assert problems == []
