"""The alerts pages in-process: the list and a rule's history (with query counts), the
form with its inline validation, live preview and test button, mute, delete, the nav
badge, the admin, and the toast and rows a page receives live over its socket."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from tests import otlp
from tests.receiver import Receiver
from tests.sockets import messages_until, on_one_loop, page_socket
from traces import broadcast
from traces.alerting import alerts_run
from traces.models import AlertEvent, AlertRule, Trace, datetime_to_ns

HTMX = {"HTTP_HX_REQUEST": "true"}
MINUTE = timedelta(minutes=1)
FORM = {
    "name": "Checkout errors", "query": "service:shop", "metric": "error_rate",
    "comparator": ">", "threshold": "5%", "window": "15m", "cooldown": "10m",
    "webhooks": "", "slack": "", "emails": "", "enabled": "on",
}  # fmt: skip


def trace(*, minutes_ago: float = 1, errors: int = 0, ms: float = 100, service="shop") -> Trace:
    started = timezone.now() - timedelta(minutes=minutes_ago)
    start = datetime_to_ns(started)
    return Trace.objects.create(
        trace_id=otlp.new_trace_id(), service_name=service, root_span_name="answer",
        start_ns=start, end_ns=start + int(ms * 1e6), duration_ns=int(ms * 1e6),
        span_count=1, error_count=errors, first_seen=started, last_updated=started,
    )  # fmt: skip


def rule(**fields) -> AlertRule:
    values = {"name": "Checkout errors", "query": "service:shop", "metric": "errors",
              "comparator": ">", "threshold": 0, "window_seconds": 300, **fields}  # fmt: skip
    return AlertRule.objects.create(**values)


def evaluate(**options) -> None:
    alerts_run(now=timezone.now(), holder="test", lease_seconds=60, release=True,
               deliver=lambda event: None, **options)  # fmt: skip


def text(response) -> str:
    return response.content.decode()


# --- The list and a rule's page ---------------------------------------------------------------


@pytest.mark.django_db
def test_an_empty_alerts_page_explains_what_a_rule_is(client):
    response = client.get("/alerts")
    assert response.status_code == 200
    assert "No alert rules yet" in text(response)
    assert 'href="/alerts/new"' in text(response)
    assert "This server checks every rule every 30 s" in text(response)


@pytest.mark.django_db
def test_the_alerts_page_lists_rules_with_state_last_value_and_recent_events(
    client, django_assert_num_queries
):
    trace(errors=1)
    firing = rule(targets=[{"kind": "webhook", "to": "https://hooks.example.com/T0/secret1234"}])
    rule(name="Slow answers", metric="p95", comparator=">", threshold=2000)
    evaluate()
    with django_assert_num_queries(2):  # the rules, the recent events with their rules
        response = client.get("/alerts")
    page = text(response)
    assert response.status_code == 200
    row = page[page.index(f'id="alert-rule-{firing.pk}"') :]
    assert "badge-error" in row[:400] and ">firing<" in row[:400]
    assert "Error count &gt; 0 over 5m" in page
    assert "p95 duration &gt; 2.00 s over 5m" in page
    assert "100 ms" in page  # the slow rule's last value: the p95 of one 100 ms trace
    assert "1 target" in page
    assert 'id="alert-history"' in page and "Error count 1 (threshold &gt; 0)" in page
    assert 'ws-connect="/ws/pages/alerts"' in page
    for _ in range(3):
        rule(name="More")
    evaluate()
    with django_assert_num_queries(2):
        client.get("/alerts")


@pytest.mark.django_db
def test_a_rules_page_shows_its_history_with_each_deliverys_result(
    client, django_assert_num_queries
):
    watched = rule(targets=[{"kind": "webhook", "to": "https://hooks.example.com/T0/secret1234"}])
    AlertEvent.objects.create(
        rule=watched, kind="firing", at=timezone.now(), metric="errors", comparator=">",
        value=3, threshold=0, query="service:shop", message="Error count 3", delivery="failed",
        deliveries=[{"kind": "webhook", "target": "https://hooks.example.com/…1234", "ok": False,
                     "status": 500, "attempts": 3, "error": "HTTP 500: down", "ms": 7012.5}],
    )  # fmt: skip
    with django_assert_num_queries(2):  # the rule, its events
        response = client.get(f"/alerts/{watched.pk}")
    page = text(response)
    assert response.status_code == 200
    assert "https://hooks.example.com/…1234" in page  # the URL's secret path is not shown
    assert "secret1234" not in page
    assert "3 attempts" in page and "HTTP 500: down" in page and "7013 ms" in page
    assert "/traces?q=%28service%3Ashop%29+error%3Atrue" in page
    assert f'ws-connect="/ws/pages/alerts?rule={watched.pk}"' in page


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/alerts/999", "/alerts/99999999999999999999999/edit"])
def test_unknown_or_impossible_rule_ids_are_404(client, path):
    assert client.get(path).status_code == 404


@pytest.mark.django_db
def test_rule_names_and_queries_are_escaped_everywhere(client):
    trace(errors=1)
    rule(name="<script>alert(1)</script>", query='service:shop OR name:"<img src=x>"')
    evaluate()
    pages = text(client.get("/alerts")) + text(client.get(f"/alerts/{AlertRule.objects.get().pk}"))
    assert "<script>alert(1)" not in pages and "<img src=x>" not in pages
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages


# --- Create and edit ------------------------------------------------------------------------


@pytest.mark.django_db
def test_creating_a_rule_stores_it_in_the_metrics_units_and_opens_its_page(client):
    form = {**FORM, "webhooks": "https://example.com/a\n\nhttps://example.com/b",
            "slack": "https://hooks.slack.com/services/T/B/C"}  # fmt: skip
    response = client.post("/alerts/new", form, **HTMX)
    created = AlertRule.objects.get()
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"/alerts/{created.pk}"
    assert (created.metric, created.threshold, created.window_seconds) == ("error_rate", 5, 900)
    assert (created.cooldown_seconds, created.enabled, created.state) == (600, True, "ok")
    assert created.targets == [
        {"kind": "webhook", "to": "https://example.com/a"},
        {"kind": "webhook", "to": "https://example.com/b"},
        {"kind": "slack", "to": "https://hooks.slack.com/services/T/B/C"},
    ]
    # Without JavaScript: a plain redirect, and the page says it was created.
    response = client.post("/alerts/new", {**FORM, "name": "Second"}, follow=True)
    assert response.redirect_chain[0][1] == 302
    assert "Created rule “Second”" in text(response)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"name": "  "}, "name", "Give the rule a name."),
        ({"query": 'service:"open'}, "query", "unterminated string starting at 8"),
        ({"threshold": "lots"}, "threshold", "&quot;lots&quot; must be a percentage"),
        ({"metric": "p95", "threshold": "fast"}, "threshold", "must be a duration such as"),
        ({"threshold": ""}, "threshold", "Give a threshold to compare with."),
        ({"metric": "bogus"}, "threshold", "Select a valid choice."),
        ({"window": "30s"}, "window", "Must be from 1m to 24h; got 30s."),
        ({"window": "2d"}, "window", "Must be from 1m to 24h; got 2d."),
        ({"window": "5 minutes"}, "window", "is not a length of time"),
        ({"window": "99999999999999d"}, "window", "Must be from 1m to 24h"),
        ({"metric": "cost", "threshold": "9" * 30}, "threshold", "is too large"),
        ({"threshold": "9" * 41}, "threshold", "at most 40 characters"),
        ({"cooldown": "8d"}, "cooldown", "Must be from 0s to 7d"),
        ({"webhooks": "ftp://example.com/x"}, "webhooks", "must start with http:// or https://"),
        ({"slack": "hooks.slack.com/x"}, "slack", "must start with http:// or https://"),
        ({"emails": "not-an-address"}, "emails", "is not an email address"),
    ],
)
def test_each_bad_field_is_refused_with_its_own_message_and_nothing_is_saved(
    client, changes, field, message
):
    response = client.post("/alerts/new", {**FORM, **changes}, **HTMX)
    page = text(response)
    assert response.status_code == 400
    assert "<html" not in page  # the form fragment, swapped in place
    slot = re.search(rf'id="err-{field}">(.*?)</div>', page, re.S)
    assert slot and message in slot.group(1), page
    assert AlertRule.objects.count() == 0


@pytest.mark.django_db
def test_email_targets_need_an_email_server(client, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = ""
    response = client.post("/alerts/new", {**FORM, "emails": "oncall@example.com"}, **HTMX)
    assert response.status_code == 400
    assert "Email is not configured: set MSGTRACE_EMAIL_HOST" in text(response)
    page = text(client.get("/alerts/new"))
    assert "needs <code>MSGTRACE_EMAIL_HOST</code>" in page


@pytest.mark.django_db
def test_a_bad_query_is_shown_with_a_caret_under_the_mistake(client):
    response = client.post("/alerts/new", {**FORM, "query": "service:shop AND (error:true"})
    page = text(response)
    assert response.status_code == 400
    assert '<pre class="query-error">service:shop AND (error:true\n' in page
    assert re.search(r"\n +\^</pre>", page)


@pytest.mark.django_db
def test_an_any_single_trace_rule_needs_no_threshold(client):
    form = {**FORM, "metric": "each_trace", "query": "cost:>0.50", "threshold": ""}
    assert client.post("/alerts/new", form, **HTMX).status_code == 200
    assert AlertRule.objects.get().metric == "each_trace"


@pytest.mark.django_db
def test_editing_shows_the_rule_as_typed_and_a_changed_condition_restarts_it(client):
    watched = rule(metric="p95", threshold=2000, window_seconds=3600, cooldown_seconds=90,
                   state="firing", last_value=2500)  # fmt: skip
    page = text(client.get(f"/alerts/{watched.pk}/edit"))
    assert 'name="threshold" value="2s"' in page
    assert 'name="window" value="1h"' in page and 'name="cooldown" value="90s"' in page
    assert '<option value="p95" selected>' in page
    form = {**FORM, "metric": "p95", "threshold": "2s", "window": "1h", "cooldown": "90s",
            "name": "Renamed"}  # fmt: skip
    client.post(f"/alerts/{watched.pk}/edit", form, **HTMX)
    watched.refresh_from_db()
    assert (watched.name, watched.state, watched.query) == ("Renamed", "firing", "service:shop")
    client.post(f"/alerts/{watched.pk}/edit", {**form, "threshold": "3s"}, **HTMX)
    watched.refresh_from_db()
    assert (watched.threshold, watched.state, watched.last_value) == (3000, "ok", None)


# --- The preview ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_preview_shows_the_current_value_and_whether_it_would_fire(
    client, django_assert_max_num_queries
):
    trace(errors=1)
    trace(minutes_ago=3)
    trace(minutes_ago=30, errors=1)  # outside the 15m window
    with django_assert_max_num_queries(2):
        response = client.post("/alerts/preview", FORM, **HTMX)
    page = text(response)
    assert response.status_code == 200
    assert "<html" not in page
    assert '<div class="preview-value is-met">50%</div>' in page
    assert "over the 2 traces that started in the last 15m" in page
    assert "would fire" in page and "Error rate &gt; 5% over 15m" in page
    assert 'id="err-query" hx-swap-oob="true"></div>' in page  # errors cleared in place
    response = client.post("/alerts/preview", {**FORM, "threshold": "60"}, **HTMX)
    assert "would not fire" in text(response)


@pytest.mark.django_db
def test_the_preview_marks_a_bad_query_in_place_and_ignores_fields_still_empty(client):
    form = {**FORM, "name": "", "query": "service:", "threshold": ""}
    page = text(client.post("/alerts/preview", form, **HTMX))
    query = re.search(r'id="err-query" hx-swap-oob="true">(.*?)</div>', page, re.S).group(1)
    assert "missing value after &quot;service:&quot; at 8" in query
    assert '<pre class="query-error">service:\n        ^</pre>' in query
    assert 'id="err-name" hx-swap-oob="true"></div>' in page  # not "give it a name" yet
    assert "Fix the marked fields to see the current value." in page


@pytest.mark.django_db
def test_the_preview_of_an_each_trace_rule_counts_the_matching_traces(client):
    trace(errors=2)
    form = {**FORM, "metric": "each_trace", "query": "errors:>1"}
    page = text(client.post("/alerts/preview", form, **HTMX))
    assert "1 matching trace<" in page and "would fire" in page


# --- Test notifications -------------------------------------------------------------------------


@pytest.mark.django_db
def test_send_test_notification_from_the_form_reaches_the_targets_typed_there(client):
    with Receiver() as receiver:
        response = client.post("/alerts/test", {**FORM, "webhooks": receiver.url}, **HTMX)
        body = receiver.bodies()[0]
    page = text(response)
    assert response.status_code == 200
    assert "every target answered" in page and 'badge-ok">200<' in page
    assert (body["state"], body["rule"]["name"], body["rule"]["id"]) == (
        "test",
        "Checkout errors",
        None,
    )
    assert AlertEvent.objects.count() == 0  # an unsaved rule keeps no history
    page = text(client.post("/alerts/test", {**FORM, "webhooks": "nope"}, **HTMX))
    assert "&#x27;nope&#x27; must start with http:// or https://" in page
    page = text(client.post("/alerts/test", FORM, **HTMX))
    assert "Add a webhook URL, a Slack URL or an email address first." in page


@pytest.mark.django_db
def test_a_rules_test_button_sends_to_its_targets_and_keeps_the_result(client):
    with Receiver(answers=[500]) as receiver:
        watched = rule(targets=[{"kind": "webhook", "to": receiver.url}])
        response = client.post(f"/alerts/{watched.pk}/test", {"next": "detail"}, follow=True)
    assert "Test notification: 0 of 1 targets answered" in text(response)
    event = watched.events.get()
    assert (event.kind, event.delivery, event.deliveries[0]["status"]) == ("test", "failed", 500)


# --- Mute, delete, badge ------------------------------------------------------------------


@pytest.mark.django_db
def test_mute_for_a_while_or_until_unmuted_then_unmute(client):
    watched = rule()
    response = client.post(f"/alerts/{watched.pk}/mute", {"for": "1h", "next": "detail"})
    assert response.status_code == 302 and response["Location"] == f"/alerts/{watched.pk}"
    watched.refresh_from_db()
    assert timedelta(minutes=59) < watched.muted_until - timezone.now() <= timedelta(hours=1)
    client.post(f"/alerts/{watched.pk}/mute", {"for": "forever"})
    watched.refresh_from_db()
    assert watched.muted_until.year == 9999
    assert "Muted until unmuted" in text(client.get("/alerts"))
    client.post(f"/alerts/{watched.pk}/mute", {"for": "off"})
    watched.refresh_from_db()
    assert watched.muted_until is None
    response = client.post(f"/alerts/{watched.pk}/mute", {"for": "1y"})
    assert response.status_code == 400
    assert "for must be off or one of 1h, 8h, 24h, 7d, forever; got &#x27;1y&#x27;" in text(
        response
    )


@pytest.mark.django_db
def test_delete_asks_first_then_removes_the_rule_and_its_history(client):
    watched = rule()
    AlertEvent.objects.create(rule=watched, kind="firing", at=timezone.now())
    page = text(client.get(f"/alerts/{watched.pk}/delete"))
    assert "Delete the rule “Checkout errors”?" in page and "(1 event)" in page
    assert AlertRule.objects.exists()
    response = client.post(f"/alerts/{watched.pk}/delete", follow=True)
    assert "Deleted rule “Checkout errors” and its history" in text(response)
    assert not AlertRule.objects.exists() and not AlertEvent.objects.exists()


@pytest.mark.django_db
def test_the_nav_badge_counts_enabled_firing_rules_that_are_not_muted(client):
    for name in ("a", "b", "c", "d"):
        rule(name=name, state="firing")
    AlertRule.objects.filter(name="c").update(muted_until=timezone.now() + MINUTE)
    AlertRule.objects.filter(name="d").update(enabled=False)
    badge = text(client.get("/alerts/badge", **HTMX))
    assert (
        badge.strip() == '<span id="alert-badge" class="nav-badge" title="2 rules firing">2</span>'
    )
    AlertRule.objects.update(state="ok")
    assert " hidden " in text(client.get("/alerts/badge", **HTMX))
    page = text(client.get("/alerts"))
    assert 'hx-get="/alerts/badge" hx-trigger="load"' in page  # every page loads it


# --- The admin ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_lists_rules_and_events_and_checks_a_rules_query(admin_client):
    watched = rule()
    AlertEvent.objects.create(rule=watched, kind="firing", at=timezone.now())
    assert admin_client.get("/admin/traces/alertrule/").status_code == 200
    assert admin_client.get("/admin/traces/alertevent/").status_code == 200
    form = {"name": "x", "query": 'service:"open', "metric": "errors", "comparator": ">",
            "threshold": "0", "window_seconds": "300", "cooldown_seconds": "0",
            "targets": "[]", "enabled": "on"}  # fmt: skip
    response = admin_client.post("/admin/traces/alertrule/add/", form)
    assert response.status_code == 200 and "unterminated string starting at 8" in text(response)
    bad_target = {**form, "query": "", "targets": '[{"kind": "webhook", "to": "ftp://x"}]'}
    response = admin_client.post("/admin/traces/alertrule/add/", bad_target)
    assert "must start with http:// or https://" in text(response)
    response = admin_client.post("/admin/traces/alertrule/add/", {**form, "query": ""})
    assert response.status_code == 302
    assert AlertRule.objects.filter(name="x", state="ok").exists()


# --- Live ---------------------------------------------------------------------------------------


@pytest.fixture
def live(transactional_db, monkeypatch):
    broadcast._pending.take()
    broadcast._take_alerts()
    monkeypatch.setattr(broadcast, "FLUSH_SECONDS", 0.05)
    yield
    broadcast._take_alerts()


@database_sync_to_async
def fire() -> AlertRule:
    trace(errors=1)
    watched = rule(name="Errors <b>now</b>")
    from traces.broadcast import alerts_changed

    evaluate(publish=alerts_changed)
    return watched


@on_one_loop
async def test_an_open_alerts_page_gets_a_toast_the_badge_and_its_new_rows_live(live):
    async with (
        page_socket("/ws/pages/alerts") as alerts,
        page_socket("/ws/pages/dashboard") as dash,
    ):
        watched = await fire()
        seen = await messages_until(alerts, 'id="alert-history"')
        toast = next(message for message in seen if 'id="toasts"' in message)
        assert 'hx-swap-oob="beforeend"' in toast and "data-sticky" in toast
        assert "Alert firing: Errors &lt;b&gt;now&lt;/b&gt;" in toast
        assert f'href="/alerts/{watched.pk}"' in toast
        badge = next(message for message in seen if 'id="alert-badge"' in message)
        assert 'hx-swap-oob="true"' in badge and ">1</span>" in badge
        assert any('id="alert-rules" class="card table-card"' in message for message in seen)
        assert "Error count 1 (threshold &gt; 0)" in seen[-1]
        # Every other live page gets the toast and the badge too, not the alerts tables.
        others = await messages_until(dash, 'id="alert-badge"')
        assert any("Alert firing" in message for message in others)
        assert not any('id="alert-history"' in message for message in others)


@on_one_loop
async def test_a_rules_page_gets_its_own_header_and_history_live(live):
    watched = await database_sync_to_async(rule)(name="Watched")
    async with page_socket(f"/ws/pages/alerts?rule={watched.pk}") as page:
        await database_sync_to_async(trace)(errors=1)
        from traces.broadcast import alerts_changed

        await database_sync_to_async(evaluate)(publish=alerts_changed)
        seen = await messages_until(page, 'id="alert-history"')
        assert any('id="alert-head"' in message and ">firing<" in message for message in seen)
