"""An alert event's notifications: webhooks (our JSON, or Slack's), and email.

Standard library only (``urllib.request``, Django's mail). Each target gets a timeout
(``MSGTRACE_ALERT_WEBHOOK_TIMEOUT``) and up to ``MSGTRACE_ALERT_WEBHOOK_ATTEMPTS``
attempts, waiting 1 s, 2 s, 4 s… between them, on what may pass (a 5xx, a 429, no
connection, a timeout) and never on what will not (another 4xx, a refused address). What
each target did is stored on the event. This runs outside any database transaction.
"""

from __future__ import annotations

import json
import smtplib
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parseaddr
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage, get_connection
from django.core.validators import validate_email
from django.urls import reverse

from traces.alerting import (
    UNITS,
    Metric,
    absolute,
    condition_text,
    span_text,
    traces_path,
    value_text,
)
from traces.models import AlertEvent, AlertRule

PAYLOAD_VERSION = 1
KINDS = ("webhook", "slack", "email")
MAX_TARGETS = 10
MAX_URL_CHARS = 2000
BACKOFF_SECONDS = 1.0
MAX_RETRY_AFTER = 10.0  # a 429's Retry-After is honoured up to this
USER_AGENT = "msgtrace-alerts/1"
Delivery = AlertEvent.Delivery


# --- Targets -----------------------------------------------------------------------------------


def validate_url(url: str) -> str:
    """An http(s) URL with a host, or ``ValueError`` saying what is wrong with it."""
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"is longer than {MAX_URL_CHARS} characters")
    if any(ch.isspace() for ch in url):
        raise ValueError("contains spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    try:
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        raise ValueError("has an invalid port") from None
    if not parts.hostname:
        raise ValueError("has no host name")
    return url


def validate_address(address: str) -> str:
    address = address.strip()
    try:
        validate_email(address)
    except ValidationError:
        raise ValueError("is not an email address") from None
    return address


def email_configured() -> bool:
    """Email needs ``MSGTRACE_EMAIL_HOST`` (or, in tests, a backend other than SMTP)."""
    return bool(settings.EMAIL_HOST) or not settings.EMAIL_BACKEND.endswith("smtp.EmailBackend")


def mask(target: dict) -> str:
    """A target as history shows it: a webhook URL's path is often its secret."""
    if target["kind"] == "email":
        return target["to"]
    parts = urlsplit(target["to"])
    tail = parts.path.rstrip("/")[-4:]
    return f"{parts.scheme}://{parts.netloc}/…{tail}" if len(parts.path) > 1 else target["to"]


# --- What is sent ----------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def payload(event: AlertEvent, rule: AlertRule) -> dict:
    """The webhook body (docs/alerting.md#the-json-payload); ``version`` changes only when
    a field's meaning does. Only plain values: it is JSON as it stands."""
    metric = event.metric or rule.metric
    threshold = event.threshold
    trace = event.detail.get("trace") if event.detail else None
    if trace:
        trace = {**trace, "url": absolute(reverse("traces:detail", args=[trace["trace_id"]]))}
    rule_url = absolute(reverse("traces:alert_detail", args=[rule.pk]))
    return {
        "version": PAYLOAD_VERSION,
        "source": "msgtrace",
        "state": event.kind,
        "title": title(event, rule),
        "message": event.message,
        "event": {"id": event.pk, "kind": event.kind, "at": _iso(event.at)},
        "rule": {
            "id": rule.pk,
            "name": rule.name,
            "url": rule_url,
            "query": event.query,
            "metric": metric,
            "metric_label": Metric(metric).label,
            "comparator": None if metric == Metric.EACH_TRACE else event.comparator,
            "unit": UNITS[metric],
            "window": span_text(rule.window_seconds),
            "condition": condition_text(rule),
        },
        "value": event.value,
        "value_text": value_text(metric, event.value),
        "threshold": threshold,
        "threshold_text": None if threshold is None else value_text(metric, threshold),
        "window": {
            "since": _iso(event.window_start),
            "until": _iso(event.window_end),
            "seconds": rule.window_seconds,
        },
        "matching_traces": (event.detail or {}).get("traces"),
        "unpriced_spans": (event.detail or {}).get("unpriced_spans"),
        "trace": trace,
        "traces_url": absolute(traces_path(event)),
    }


_HEADLINES = {"firing": "FIRING", "resolved": "RESOLVED", "broken": "BROKEN", "test": "TEST"}
_EMOJI = {
    "firing": ":red_circle:",
    "resolved": ":large_green_circle:",
    "broken": ":warning:",
    "test": ":information_source:",
}


def title(event: AlertEvent, rule: AlertRule) -> str:
    return f"[{_HEADLINES.get(event.kind, event.kind.upper())}] {rule.name}"


def _slack(text: str) -> str:
    """Rule names and queries are user text: ``<!channel>`` must reach Slack as text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(body: dict) -> dict:
    """Slack's incoming-webhook format: ``text`` (the fallback and the notification) and
    Block Kit ``blocks``."""
    state = body["state"]
    name = body["rule"]["name"]
    header = f"{_HEADLINES.get(state, state.upper()).title()}: {name}"
    fields = [
        {"type": "mrkdwn", "text": f"*Value*\n{_slack(body['value_text'])}"},
        {"type": "mrkdwn", "text": f"*Condition*\n{_slack(body['rule']['condition'])}"},
    ]
    if body["rule"]["query"]:
        query = body["rule"]["query"].replace("`", "'")
        fields.append({"type": "mrkdwn", "text": f"*Query*\n`{_slack(query)}`"})
    fields.append({"type": "mrkdwn", "text": f"*When*\n{body['event']['at']}"})
    return {
        "text": f"{_EMOJI.get(state, '')} {_slack(body['title'])}: {_slack(body['message'])}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": header[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _slack(body["message"])[:3000]},
             "fields": fields},
            {"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Open traces"},
                 "url": body["traces_url"][:3000]},
                {"type": "button", "text": {"type": "plain_text", "text": "Rule"},
                 "url": body["rule"]["url"]},
            ]},
        ],
    }  # fmt: skip


def email_text(body: dict) -> tuple[str, str]:
    """Subject and plain-text body of an alert email."""
    lines = [body["title"], "", body["message"], "", f"Condition: {body['rule']['condition']}"]
    if body["rule"]["query"]:
        lines.append(f"Query: {body['rule']['query']}")
    lines += [
        f"When: {body['event']['at']}",
        "",
        f"Matching traces: {body['traces_url']}",
        f"Rule: {body['rule']['url']}",
        "",
        "-- ",
        "msgtrace",
    ]
    return body["title"].replace("\n", " ")[:200], "\n".join(lines)


# --- Sending ---------------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirected POST becomes a GET without its body: report it rather than follow it.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _result(kind: str, target: str) -> dict:
    return {
        "kind": kind,
        "target": target,
        "ok": False,
        "status": None,
        "attempts": 0,
        "error": "",
        "ms": 0.0,
    }


def _wait(attempt: int, retry_after: float | None) -> float:
    backoff = BACKOFF_SECONDS * 2 ** (attempt - 1)
    return min(retry_after, MAX_RETRY_AFTER) if retry_after is not None else backoff


def webhook_post(
    url: str,
    body: dict,
    *,
    timeout: float | None = None,
    attempts: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    shown: str | None = None,
) -> dict:
    """POST ``body`` as JSON to ``url``: the result of the last attempt, and how many."""
    timeout = timeout or settings.MSGTRACE_ALERT_WEBHOOK_TIMEOUT
    attempts = attempts or settings.MSGTRACE_ALERT_WEBHOOK_ATTEMPTS
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    result = _result("webhook", shown or url)
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        result["attempts"] = attempt
        retry_after = None
        try:
            # Only http(s) URLs get here (validate_url, on every way in).
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")  # noqa: S310
            with _opener.open(request, timeout=timeout) as response:
                result.update(ok=True, status=response.status, error="")
                break
        except urllib.error.HTTPError as exc:
            text = exc.read(300).decode("utf-8", "replace").strip()
            result.update(status=exc.code, error=f"HTTP {exc.code}" + (f": {text}" if text else ""))
            if 300 <= exc.code < 400:
                result["error"] = f"HTTP {exc.code}: redirects are not followed"
            retryable = exc.code >= 500 or exc.code == 429
            if exc.code == 429:
                retry_after = _seconds(exc.headers.get("Retry-After"))
        except TimeoutError:
            result.update(status=None, error=f"no answer within {timeout:g} s")
            retryable = True
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                result.update(status=None, error=f"no answer within {timeout:g} s")
            else:
                result.update(status=None, error=f"could not connect: {reason}")
            retryable = True
        except (OSError, ValueError) as exc:  # a reset connection, a malformed answer
            result.update(status=None, error=f"{type(exc).__name__}: {exc}")
            retryable = True
        if not retryable or attempt == attempts:
            break
        sleep(_wait(attempt, retry_after))
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _smtp_retryable(exc: Exception) -> bool:
    if isinstance(exc, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError):
        return True
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500  # 4xx: "try again later"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return False
    return not isinstance(exc, smtplib.SMTPException)  # plain OSError: no connection, timeout


def email_send(
    to: str,
    subject: str,
    text: str,
    *,
    attempts: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Send one email through Django's backend (``MSGTRACE_EMAIL_*``), with retries."""
    attempts = attempts or settings.MSGTRACE_ALERT_WEBHOOK_ATTEMPTS
    result = _result("email", to)
    if not email_configured():
        result["error"] = "email is not configured (MSGTRACE_EMAIL_HOST)"
        return result
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        result["attempts"] = attempt
        try:
            connection = get_connection(fail_silently=False)
            EmailMessage(
                subject, text, settings.DEFAULT_FROM_EMAIL, [to], connection=connection
            ).send()
            result.update(ok=True, error="")
            break
        except Exception as exc:  # SMTP errors are OSErrors; any other is a bug to report
            result["error"] = f"{type(exc).__name__}: {exc}"[:300]
            if not _smtp_retryable(exc) or attempt == attempts:
                break
        sleep(_wait(attempt, None))
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def target_send(target: dict, body: dict, *, attempts: int | None = None, sleep=time.sleep) -> dict:
    """Send ``body`` to one target in its format."""
    kind, to = target["kind"], target["to"]
    if kind == "email":
        subject, text = email_text(body)
        return email_send(to, subject, text, attempts=attempts, sleep=sleep)
    sent = slack_body(body) if kind == "slack" else body
    result = webhook_post(to, sent, attempts=attempts, sleep=sleep, shown=mask(target))
    result["kind"] = kind
    return result


def deliveries_state(results: list[dict]) -> str:
    if not results:
        return Delivery.NONE
    ok = sum(1 for result in results if result["ok"])
    return Delivery.SENT if ok == len(results) else Delivery.FAILED if not ok else Delivery.PARTIAL


def event_deliver(event: AlertEvent, *, sleep: Callable[[float], None] = time.sleep) -> list[dict]:
    """Send an event to its rule's targets and store what happened on the event."""
    rule = event.rule
    body = payload(event, rule)
    results = [target_send(target, body, sleep=sleep) for target in rule.targets]
    state = deliveries_state(results)
    now = datetime.now(UTC)
    AlertEvent.objects.filter(pk=event.pk).update(
        deliveries=results, delivery=state, delivered_at=now
    )
    event.deliveries, event.delivery, event.delivered_at = results, state, now
    return results


def rule_test_send(rule: AlertRule, *, now: datetime, record: bool) -> AlertEvent:
    """A test notification to the rule's targets: one attempt each, so the answer comes
    within the timeout. ``record``: keep it in the rule's history (a saved rule)."""
    event = AlertEvent(
        rule=rule, kind=AlertEvent.Kind.TEST, at=now, metric=rule.metric,
        comparator=rule.comparator, query=rule.query, value=rule.last_value,
        threshold=None if rule.metric == Metric.EACH_TRACE else rule.threshold,
        message="A test notification from msgtrace: this target receives this rule's alerts.",
        delivery=Delivery.SENDING,
    )  # fmt: skip
    if record:
        event.save()
    body = payload(event, rule) if rule.pk else _unsaved_payload(event, rule)
    event.deliveries = [target_send(target, body, attempts=1) for target in rule.targets]
    event.delivery = deliveries_state(event.deliveries)
    event.delivered_at = datetime.now(UTC)
    if record:
        event.save(update_fields=["deliveries", "delivery", "delivered_at"])
    return event


def _unsaved_payload(event: AlertEvent, rule: AlertRule) -> dict:
    """A test from the form of a rule not saved yet: its links point at the alerts page."""
    rule.pk = 0
    try:
        body = payload(event, rule)
    finally:
        rule.pk = None
    body["rule"].update(id=None, url=absolute(reverse("traces:alerts")))
    return body


def parse_targets(kind: str, text: str) -> tuple[list[dict], list[str]]:
    """Targets of one kind from a form box (one per line; emails may also be separated by
    commas), and a message for each entry that is not one."""
    targets, errors = [], []
    if kind == "email":
        items = [item.strip() for item in text.replace(",", "\n").splitlines()]
    else:
        items = [item.strip() for item in text.splitlines()]
    for item in filter(None, items):
        try:
            if kind == "email":
                to = validate_address(parseaddr(item)[1] or item)
            else:
                to = validate_url(item)
        except ValueError as exc:
            errors.append(f"{_shown(item)} {exc}")
            continue
        targets.append({"kind": kind, "to": to})
    return targets, errors


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "…")
