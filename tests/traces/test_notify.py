"""Notifications to real local receivers: the JSON payload, Slack's body, retries with
backoff on a 500, a timeout on a receiver that never answers, email (Django's locmem
backend and a real SMTP conversation), and what is stored on the event."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail

from tests.receiver import Receiver, SMTPReceiver
from traces import notify
from traces.alerting import alerts_run
from traces.models import AlertEvent, AlertRule, Trace, datetime_to_ns

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def no_sleep():
    """Backoff waits recorded instead of slept: the tests never sleep."""
    waits: list[float] = []
    return waits


def firing_event(*, targets, name="Checkout <errors> & co", query="service:shop") -> AlertEvent:
    """A rule that has just fired over one error trace, its event pending."""
    rule = AlertRule.objects.create(
        name=name, query=query, metric="error_rate", comparator=">", threshold=5,
        window_seconds=900, cooldown_seconds=0, targets=targets,
    )  # fmt: skip
    start = datetime_to_ns(NOW - timedelta(minutes=1))
    Trace.objects.create(trace_id="a" * 32, service_name="shop", start_ns=start,
                         end_ns=start + 10**8, duration_ns=10**8, span_count=2, error_count=1,
                         first_seen=NOW, last_updated=NOW)  # fmt: skip
    alerts_run(now=NOW, holder="t", lease_seconds=60, deliver=lambda event: None)
    return rule.events.get()


def hook(url: str, kind: str = "webhook") -> list[dict]:
    return [{"kind": kind, "to": url}]


# --- Webhooks ---------------------------------------------------------------------------------


def test_a_webhook_receives_the_documented_json_payload(db, settings, no_sleep):
    settings.MSGTRACE_BASE_URL = "https://msgtrace.example.com"
    with Receiver() as receiver:
        event = firing_event(targets=hook(receiver.url))
        results = notify.event_deliver(event, sleep=no_sleep.append)
    (received,) = receiver.received
    assert received.path == "/hook"
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["User-Agent"] == notify.USER_AGENT
    body = received.json()
    assert body == {
        "version": 1,
        "source": "msgtrace",
        "state": "firing",
        "title": "[FIRING] Checkout <errors> & co",
        "message": "Error rate 100% (threshold > 5%) over the last 15m",
        "event": {"id": event.pk, "kind": "firing", "at": "2026-03-01T12:00:00Z"},
        "rule": {
            "id": event.rule_id,
            "name": "Checkout <errors> & co",
            "url": f"https://msgtrace.example.com/alerts/{event.rule_id}",
            "query": "service:shop",
            "metric": "error_rate",
            "metric_label": "Error rate",
            "comparator": ">",
            "unit": "%",
            "window": "15m",
            "condition": "Error rate > 5% over 15m",
        },
        "value": 100.0,
        "value_text": "100%",
        "threshold": 5.0,
        "threshold_text": "5%",
        "window": {
            "since": "2026-03-01T11:45:00Z",
            "until": "2026-03-01T12:00:00Z",
            "seconds": 900,
        },
        "matching_traces": 1,
        "unpriced_spans": 0,
        "trace": None,
        "traces_url": "https://msgtrace.example.com/traces?q=%28service%3Ashop%29+error%3Atrue"
        "&since=2026-03-01T11%3A45%3A00Z&until=2026-03-01T12%3A00%3A00Z",
    }
    assert results == [
        {"kind": "webhook", "target": receiver.url.replace("/hook", "/…hook"), "ok": True,
         "status": 200, "attempts": 1, "error": "", "ms": results[0]["ms"]}
    ]  # fmt: skip
    event.refresh_from_db()
    assert (event.delivery, event.deliveries, no_sleep) == ("sent", results, [])
    assert event.delivered_at is not None


def test_a_500_is_retried_with_exponential_backoff_until_it_succeeds(settings, no_sleep):
    settings.MSGTRACE_ALERT_WEBHOOK_ATTEMPTS = 4
    with Receiver(answers=[500, 503, 200]) as receiver:
        result = notify.webhook_post(receiver.url, {"a": 1}, sleep=no_sleep.append)
    assert (result["ok"], result["status"], result["attempts"]) == (True, 200, 3)
    assert no_sleep == [1.0, 2.0]
    assert [item.json() for item in receiver.received] == [{"a": 1}] * 3


def test_a_500_every_time_gives_up_after_the_last_attempt_with_the_answer(settings, no_sleep):
    with Receiver(answers=[500]) as receiver:
        result = notify.webhook_post(receiver.url, {}, sleep=no_sleep.append)
    assert (result["ok"], result["status"], result["attempts"]) == (False, 500, 3)
    assert result["error"] == "HTTP 500: no thanks"
    assert no_sleep == [1.0, 2.0]
    assert len(receiver.received) == 3


def test_a_4xx_is_not_retried(no_sleep):
    with Receiver(answers=[404, 200]) as receiver:
        result = notify.webhook_post(receiver.url, {}, sleep=no_sleep.append)
    assert (result["ok"], result["status"], result["attempts"]) == (False, 404, 1)
    assert no_sleep == []


def test_a_429_is_retried_after_the_wait_it_asks_for(no_sleep):
    with Receiver(answers=[429, 200]) as receiver:
        receiver.headers = {"Retry-After": "3"}
        result = notify.webhook_post(receiver.url, {}, sleep=no_sleep.append)
    assert (result["ok"], result["attempts"]) == (True, 2)
    assert no_sleep == [3.0]


def test_a_redirect_is_reported_not_followed(no_sleep):
    with Receiver(answers=[302]) as receiver:
        result = notify.webhook_post(receiver.url, {}, sleep=no_sleep.append)
    assert (result["ok"], result["status"], result["attempts"]) == (False, 302, 1)
    assert result["error"] == "HTTP 302: redirects are not followed"


def test_a_receiver_that_never_answers_times_out_and_is_retried(no_sleep):
    with Receiver(answers=["hang"]) as receiver:
        started = time.monotonic()
        result = notify.webhook_post(receiver.url, {}, timeout=0.3, attempts=2,
                                     sleep=no_sleep.append)  # fmt: skip
        took = time.monotonic() - started
    assert (result["ok"], result["status"], result["attempts"]) == (False, None, 2)
    assert result["error"] == "no answer within 0.3 s"
    assert len(receiver.received) == 2
    assert 0.6 <= took < 3
    assert no_sleep == [1.0]


def test_nobody_listening_is_a_connection_error_retried(free_port, no_sleep):
    result = notify.webhook_post(f"http://127.0.0.1:{free_port()}/x", {}, sleep=no_sleep.append)
    assert (result["ok"], result["attempts"]) == (False, 3)
    assert result["error"].startswith("could not connect: ")


def test_slack_mode_sends_text_and_blocks_with_user_text_escaped(db, no_sleep):
    with Receiver() as receiver:
        event = firing_event(targets=hook(receiver.url, "slack"), name="<!channel> spend",
                             query='service:shop OR service:"a`b"')  # fmt: skip
        (result,) = notify.event_deliver(event, sleep=no_sleep.append)
    assert result["kind"] == "slack"
    body = receiver.received[0].json()
    assert set(body) == {"text", "blocks"}
    header, section, actions = body["blocks"]
    assert body["text"].startswith(":red_circle: [FIRING] &lt;!channel&gt; spend: Error rate 100%")
    mrkdwn = [body["text"], section["text"]["text"], *(f["text"] for f in section["fields"])]
    assert not any("<!channel>" in text for text in mrkdwn)  # Slack would notify everyone
    assert header["text"] == {"type": "plain_text", "text": "Firing: <!channel> spend"}
    assert {"type": "mrkdwn", "text": '*Query*\n`service:shop OR service:"a\'b"`'} in section[
        "fields"
    ]
    assert actions["elements"][0]["url"].startswith("http://127.0.0.1:")


def test_a_test_notification_makes_one_attempt_and_keeps_it_in_the_history(db, no_sleep):
    with Receiver(answers=[500]) as receiver:
        rule = AlertRule.objects.create(name="R", targets=hook(receiver.url))
        event = notify.rule_test_send(rule, now=NOW, record=True)
    assert (event.kind, event.delivery, event.deliveries[0]["attempts"]) == ("test", "failed", 1)
    assert receiver.bodies()[0]["state"] == "test"
    assert rule.events.get().delivery == "failed"


def test_one_failing_target_of_two_is_a_partial_delivery(db, free_port, no_sleep):
    with Receiver() as receiver:
        targets = hook(receiver.url) + hook(f"http://127.0.0.1:{free_port()}/gone")
        event = firing_event(targets=targets)
        results = notify.event_deliver(event, sleep=no_sleep.append)
    assert [result["ok"] for result in results] == [True, False]
    event.refresh_from_db()
    assert event.delivery == "partial"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/x", "must start with http:// or https://"),
        ("https:///path", "has no host name"),
        ("https://exa mple.com", "contains spaces"),
        ("https://example.com:99999/", "has an invalid port"),
        ("javascript:alert(1)", "must start with http:// or https://"),
    ],
)
def test_only_http_and_https_urls_with_a_host_are_targets(url, problem):
    with pytest.raises(ValueError, match=problem):
        notify.validate_url(url)


# --- Email ------------------------------------------------------------------------------------


def test_email_goes_through_djangos_backend(db, settings, no_sleep):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "alerts@example.com"
    event = firing_event(targets=[{"kind": "email", "to": "oncall@example.com"}])
    (result,) = notify.event_deliver(event, sleep=no_sleep.append)
    assert (result["ok"], result["kind"], result["target"]) == (True, "email", "oncall@example.com")
    (message,) = mail.outbox
    assert message.subject == "[FIRING] Checkout <errors> & co"
    assert message.to == ["oncall@example.com"]
    assert message.from_email == "alerts@example.com"
    assert "Error rate 100% (threshold > 5%) over the last 15m" in message.body
    assert "Matching traces: http://127.0.0.1:" in message.body


def test_email_reaches_a_real_smtp_server(db, settings, no_sleep):
    with SMTPReceiver() as smtp:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        event = firing_event(targets=[{"kind": "email", "to": "oncall@example.com"}])
        (result,) = notify.event_deliver(event, sleep=no_sleep.append)
    assert result["ok"], result
    (message,) = smtp.messages
    assert [line.lower() for line in message["to"]] == ["rcpt to:<oncall@example.com>"]
    assert "Subject: [FIRING] Checkout <errors> & co" in message["data"]


def test_a_refused_recipient_is_a_failure_not_retried(db, settings, no_sleep):
    with SMTPReceiver(refuse_rcpt=True) as smtp:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        result = notify.email_send("nobody@example.com", "s", "t", sleep=no_sleep.append)
    assert (result["ok"], result["attempts"]) == (False, 1)
    assert result["error"].startswith("SMTPRecipientsRefused")


def test_email_without_a_configured_server_says_so(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = ""
    result = notify.email_send("a@example.com", "s", "t")
    assert (result["ok"], result["attempts"]) == (False, 0)
    assert result["error"] == "email is not configured (MSGTRACE_EMAIL_HOST)"
