"""The alerts pages: ``/alerts`` (the rules and recent events), a rule's page with its
history, the create and edit form with its live preview and test button, and the
fragments the pages' live socket sends when a rule fires (traces/consumers.py).

Mute and delete are plain forms (POST, then a redirect): they work without JavaScript.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib import messages
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from search.parser import FIELDS, KEYED_FIELDS
from traces import notify
from traces.alert_forms import TARGET_FIELDS, WINDOW_CHOICES, AlertRuleForm
from traces.alerting import (
    UNITS,
    Metric,
    alert_rule_mute,
    alert_rule_save,
    condition_text,
    holds,
    measure,
    span_text,
    traces_path,
    value_text,
)
from traces.models import AlertEvent, AlertRule

RECENT_EVENTS = 25  # on /alerts, across rules
HISTORY = 100  # on a rule's page
MUTE_FOR = {
    "1h": timedelta(hours=1),
    "8h": timedelta(hours=8),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "forever": None,
}
# "Until unmuted" is a date no clock reaches.
MUTED_FOREVER = datetime(9999, 12, 31, tzinfo=UTC)
COMPARATORS = dict(AlertRule.Comparator.choices)
_MAX_PK = 2**63 - 1  # a bigger id is not a rule, and SQLite cannot even be asked
UNIT_HINTS = {
    "traces": "a number of traces", "%": "a percentage (5 or 5%)",
    "ms": "a duration: 800ms, 2s, 1.5m (a bare number is ms)",
    "USD": "dollars: 0.50 or $0.50", "tokens": "tokens: 50000, 50k, 1.5M",
}  # fmt: skip


def _fragment(request: HttpRequest) -> bool:
    return bool(request.htmx) and not request.htmx.history_restore_request


def _rule(pk: int) -> AlertRule:
    if pk > _MAX_PK:
        raise Http404("no such rule")
    rule = AlertRule.objects.filter(pk=pk).first()
    if rule is None:
        raise Http404("no such rule")
    return rule


# --- What pages show ---------------------------------------------------------------------------


def _shown_rule(rule: AlertRule, now: datetime) -> AlertRule:
    """Adds what the templates print: the condition, the value in its unit, targets."""
    rule.condition = condition_text(rule)
    rule.value_shown = value_text(rule.metric, rule.last_value)
    if rule.metric == Metric.EACH_TRACE and rule.last_value is not None:
        rule.value_shown = f"{rule.last_value:g} matching"
    rule.cooldown_text = span_text(rule.cooldown_seconds)
    rule.muted = rule.is_muted(now)
    rule.muted_forever = rule.muted and rule.muted_until >= MUTED_FOREVER - timedelta(days=1)
    rule.shown_targets = [{**target, "shown": notify.mask(target)} for target in rule.targets]
    return rule


def _shown_event(event: AlertEvent) -> AlertEvent:
    event.value_shown = value_text(event.metric, event.value) if event.metric else "—"
    if event.metric == Metric.EACH_TRACE:
        event.value_shown = "1 trace" if event.trace_id else event.value_shown
    comparator = COMPARATORS.get(event.comparator, event.comparator)
    event.threshold_shown = (
        f"{comparator} {value_text(event.metric, event.threshold)}"
        if event.threshold is not None and event.metric
        else ""
    )
    event.link = traces_path(event) if event.kind != AlertEvent.Kind.TEST else ""
    return event


def alerts_context(now: datetime) -> dict:
    """The rules and the recent events across rules (two queries)."""
    rules = [_shown_rule(rule, now) for rule in AlertRule.objects.for_list()]
    events = [_shown_event(e) for e in AlertEvent.objects.newest_first()[:RECENT_EVENTS]]
    evaluated = [rule.last_evaluated_at for rule in rules if rule.last_evaluated_at]
    return {
        "rules": rules,
        "events": events,
        "firing": sum(1 for rule in rules if rule.state == "firing" and rule.enabled),
        "interval": settings.MSGTRACE_ALERT_INTERVAL,
        "last_evaluated": max(evaluated, default=None),
        "mute_choices": MUTE_FOR,
    }


def detail_context(rule: AlertRule, now: datetime) -> dict:
    """One rule and its history (one query beyond the rule)."""
    events = [_shown_event(e) for e in rule.events.order_by("-at", "-pk")[:HISTORY]]
    for event in events:
        event.rule = rule  # the history's events are all this rule's: no query per row
    return {
        "rule": _shown_rule(rule, now),
        "events": events,
        "history_limit": HISTORY,
        "mute_choices": MUTE_FOR,
        "interval": settings.MSGTRACE_ALERT_INTERVAL,
    }


@require_GET
def alerts_page(request: HttpRequest) -> HttpResponse:
    context = {**alerts_context(timezone.now()), "live_url": "/ws/pages/alerts"}
    return render(request, "traces/alerts.html", context)


@require_GET
def alert_detail(request: HttpRequest, pk: int) -> HttpResponse:
    rule = _rule(pk)
    context = {**detail_context(rule, timezone.now()), "live_url": f"/ws/pages/alerts?rule={pk}"}
    return render(request, "traces/alert_detail.html", context)


@require_GET
def alert_badge(request: HttpRequest) -> HttpResponse:
    """The nav's count of firing rules; pages load it after they show (no query for it in
    every page), and the live socket replaces it when it changes."""
    firing = AlertRule.objects.firing(timezone.now()).count()
    return render(request, "traces/_alert_badge.html", {"firing": firing})


# --- Create and edit --------------------------------------------------------------------------


def _form_context(form: AlertRuleForm, rule: AlertRule | None) -> dict:
    return {
        "form": form,
        "rule": rule,
        "action": reverse("traces:alert_edit", args=[rule.pk])
        if rule
        else reverse("traces:alert_new"),
        "window_choices": WINDOW_CHOICES,
        "query_caret": " " * form.query_error.position + "^" if form.query_error else "",
        "query_fields": " ".join(f"{f}." if f in KEYED_FIELDS else f for f in FIELDS),
        "email_configured": notify.email_configured(),
        "unit_hints": UNIT_HINTS,
        "units": {metric: UNITS[metric] for metric in Metric},
    }


def _edit(request: HttpRequest, rule: AlertRule | None) -> HttpResponse:
    now = timezone.now()
    status = 200
    if request.method == "POST":
        form = AlertRuleForm(request.POST, now=now)
        if form.is_valid():
            created = rule is None
            rule = alert_rule_save(rule=rule, values=form.values(), now=now)
            messages.success(request, f"{'Created' if created else 'Saved'} rule “{rule.name}”")
            url = reverse("traces:alert_detail", args=[rule.pk])
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
        status = 400
    else:
        form = AlertRuleForm(initial=AlertRuleForm.initial_for(rule) if rule else None, now=now)
    template = "traces/alert_form.html#form" if _fragment(request) else "traces/alert_form.html"
    return render(request, template, _form_context(form, rule), status=status)


@require_http_methods(["GET", "POST"])
def alert_new(request: HttpRequest) -> HttpResponse:
    return _edit(request, None)


@require_http_methods(["GET", "POST"])
def alert_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _edit(request, _rule(pk))


@require_POST
def alert_preview(request: HttpRequest) -> HttpResponse:
    """The form's current value and verdict, and each field's error in place (out of band).

    Fields still empty are not reported here (the page has just opened); saving does.
    """
    now = timezone.now()
    form = AlertRuleForm(request.POST, now=now)
    condition_ok = form.condition_ok()  # validates: the context needs the query's error
    context = {**_form_context(form, None), "inline": True}
    if condition_ok:
        rule = form.unsaved_rule()
        try:
            measured = measure(rule, now)
        except DatabaseError:
            context["failed"] = True
        else:
            window = AlertEvent(
                query=rule.query, metric=rule.metric, window_start=measured.since, window_end=now
            )
            context.update(
                measured=measured,
                value_shown=value_text(rule.metric, measured.value),
                met=measured.traces > 0
                if rule.metric == Metric.EACH_TRACE
                else holds(rule.comparator, measured.value, rule.threshold),
                condition=condition_text(rule),
                window_text=span_text(rule.window_seconds),
                link=traces_path(window),
                each_trace=rule.metric == Metric.EACH_TRACE,
            )
    blank = {name for name in form.fields if not request.POST.get(name, "").strip()}
    context["field_errors"] = {
        name: [] if name in blank else form.errors.get(name, []) for name in form.fields
    }
    return render(request, "traces/alert_form.html#preview", context)


@require_POST
def alert_test(request: HttpRequest) -> HttpResponse:
    """ "Send test notification" from the form: to the targets typed there, saved or not."""
    now = timezone.now()
    form = AlertRuleForm(request.POST, now=now)
    form.is_valid()
    problems = [e for field in TARGET_FIELDS for e in form.errors.get(field, [])]
    targets = form.cleaned_data.get("targets", [])
    if not problems and not targets:
        problems = ["Add a webhook URL, a Slack URL or an email address first."]
    if problems:
        return render(request, "traces/alert_form.html#test_result", {"problems": problems})
    data = form.cleaned_data
    metric = data.get("metric") or Metric.TRACES
    threshold = data.get("threshold")
    rule = AlertRule(
        name=data.get("name") or "Test rule",
        query=data.get("query", request.POST.get("query", "")),
        metric=metric,
        comparator=data.get("comparator") or ">",
        threshold=threshold if isinstance(threshold, float) else 0.0,
        window_seconds=data.get("window") or 300,
        targets=targets,
    )
    event = notify.rule_test_send(rule, now=now, record=False)
    return render(request, "traces/alert_form.html#test_result", {"event": event})


# --- Rule actions -----------------------------------------------------------------------------


def _back(request: HttpRequest, rule: AlertRule) -> str:
    # Only our own pages: the rule's, or the list.
    if request.POST.get("next") == "detail":
        return reverse("traces:alert_detail", args=[rule.pk])
    return reverse("traces:alerts")


@require_POST
def alert_rule_test(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Send test notification" on a rule's page: its saved targets, kept in its history."""
    rule = _rule(pk)
    if not rule.targets:
        messages.error(request, "This rule has no targets: edit it to add a webhook or email.")
        return redirect(_back(request, rule))
    event = notify.rule_test_send(rule, now=timezone.now(), record=True)
    sent = sum(1 for result in event.deliveries if result["ok"])
    level = messages.SUCCESS if sent == len(event.deliveries) else messages.ERROR
    messages.add_message(
        request, level, f"Test notification: {sent} of {len(event.deliveries)} targets answered"
    )
    return redirect(_back(request, rule))


@require_POST
def alert_mute(request: HttpRequest, pk: int) -> HttpResponse:
    rule = _rule(pk)
    choice = request.POST.get("for", "")
    if choice != "off" and choice not in MUTE_FOR:
        message = f"for must be off or one of {', '.join(MUTE_FOR)}; got {choice[:20]!r}"
        back = _back(request, rule)
        return render(
            request, "traces/bad_request.html", {"message": message, "back": back}, status=400
        )
    now = timezone.now()
    if choice == "off":
        alert_rule_mute(rule=rule, until=None)
        messages.success(request, f"“{rule.name}” unmuted")
    else:
        span = MUTE_FOR[choice]
        alert_rule_mute(rule=rule, until=now + span if span else MUTED_FOREVER)
        shown = "until unmuted" if span is None else f"for {choice}"
        messages.success(request, f"“{rule.name}” muted {shown}")
    return redirect(_back(request, rule))


@require_http_methods(["GET", "POST"])
def alert_delete(request: HttpRequest, pk: int) -> HttpResponse:
    rule = _rule(pk)
    if request.method == "GET":
        count = rule.events.count()
        return render(request, "traces/alert_delete.html", {"rule": rule, "events": count})
    name = rule.name
    rule.delete()
    messages.success(request, f"Deleted rule “{name}” and its history")
    return redirect("traces:alerts")


# --- Live (traces/consumers.py) ------------------------------------------------------------


def toast_fragments(alerts: list[dict]) -> list[str]:
    """Toasts for the transitions, and the nav badge's new count, as out-of-band HTML."""
    firing = next((alert["firing"] for alert in reversed(alerts) if "firing" in alert), None)
    told = [alert for alert in alerts if alert["kind"] in ("firing", "resolved", "broken")]
    html = []
    if told:
        html.append(
            render_to_string(
                "traces/_alert_toast.html", {"alerts": told[-5:], "more": len(told) - 5}
            )
        )
    if firing is not None:
        html.append(render_to_string("traces/_alert_badge.html", {"firing": firing, "oob": True}))
    return [fragment.strip() for fragment in html]


def page_fragments(params: QueryDict, *, csrf_token: str = "") -> list[str]:
    """The alerts pages' live parts: the rules and recent events, or one rule's header and
    history (``?rule=<id>``)."""
    now = timezone.now()
    raw = params.get("rule", "")
    if raw:
        rule = (
            AlertRule.objects.filter(pk=int(raw)).first()
            if raw.isascii() and raw.isdigit() and int(raw) <= _MAX_PK
            else None
        )
        if rule is None:
            return []
        context = {**detail_context(rule, now), "oob": True, "csrf_token": csrf_token}
        return [
            render_to_string("traces/alert_detail.html#head", context).strip(),
            render_to_string("traces/alert_detail.html#history", context).strip(),
        ]
    context = {**alerts_context(now), "oob": True, "csrf_token": csrf_token}
    return [
        render_to_string("traces/alerts.html#rules", context).strip(),
        render_to_string("traces/alerts.html#history", context).strip(),
    ]
