"""The alert rule form: every field checked, with a message that says what to type.

The same form serves the page (create, edit), the live preview and the test button, so
what the preview accepts is exactly what saving accepts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django import forms

from search.compiler import compile_query
from search.parser import QueryError
from traces import notify
from traces.alerting import (
    MAX_COOLDOWN,
    MAX_WINDOW,
    MIN_WINDOW,
    parse_span,
    parse_threshold,
    span_text,
    threshold_input,
)
from traces.models import AlertRule

Metric = AlertRule.Metric
WINDOW_CHOICES = ("1m", "5m", "15m", "30m", "1h", "6h", "12h", "24h")
# What the form fields map to on the model.
MODEL_FIELDS = (
    "name",
    "query",
    "metric",
    "comparator",
    "threshold",
    "window_seconds",
    "cooldown_seconds",
    "enabled",
    "targets",
)
TARGET_FIELDS = {"webhooks": "webhook", "slack": "slack", "emails": "email"}
# The fields the preview can be computed from; errors elsewhere do not stop it.
CONDITION_FIELDS = ("query", "metric", "comparator", "threshold", "window")


class AlertRuleForm(forms.Form):
    name = forms.CharField(max_length=200, error_messages={"required": "Give the rule a name."})
    query = forms.CharField(required=False, max_length=2000)
    metric = forms.ChoiceField(choices=Metric.choices, initial=Metric.ERRORS)
    comparator = forms.ChoiceField(
        choices=AlertRule.Comparator.choices, initial=AlertRule.Comparator.GT, required=False
    )
    threshold = forms.CharField(required=False, max_length=40, initial="0")
    window = forms.CharField(
        max_length=20, initial="5m", error_messages={"required": "Say over how long: 5m, 1h, 24h…"}
    )
    cooldown = forms.CharField(required=False, max_length=20, initial="5m")
    webhooks = forms.CharField(required=False, max_length=20_000, widget=forms.Textarea)
    slack = forms.CharField(required=False, max_length=20_000, widget=forms.Textarea)
    emails = forms.CharField(required=False, max_length=20_000, widget=forms.Textarea)
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args, now: datetime, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.now = now
        self.query_error: QueryError | None = None

    @classmethod
    def initial_for(cls, rule: AlertRule) -> dict:
        """A saved rule as the form shows it, in the units people type."""
        boxes = {
            field: "\n".join(t["to"] for t in rule.targets if t["kind"] == kind)
            for field, kind in TARGET_FIELDS.items()
        }
        return {
            "name": rule.name,
            "query": rule.query,
            "metric": rule.metric,
            "comparator": rule.comparator,
            "threshold": threshold_input(rule.metric, rule.threshold),
            "window": span_text(rule.window_seconds),
            "cooldown": span_text(rule.cooldown_seconds),
            "enabled": rule.enabled,
            **boxes,
        }

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the rule a name.")
        return name

    def clean_query(self) -> str:
        text = self.cleaned_data["query"].strip()
        try:
            compile_query(text, now=self.now)
        except QueryError as exc:
            self.query_error = exc
            raise forms.ValidationError(exc.message) from None
        return text

    def clean_window(self) -> int:
        return _span(self.cleaned_data["window"], MIN_WINDOW, MAX_WINDOW, "1m", "24h")

    def clean_cooldown(self) -> int:
        if not self.cleaned_data["cooldown"].strip():
            return 0
        return _span(self.cleaned_data["cooldown"], timedelta(0), MAX_COOLDOWN, "0s", "7d")

    def clean(self) -> dict:
        data = super().clean()
        metric = data.get("metric")
        if metric == Metric.EACH_TRACE:
            data["threshold"], data["comparator"] = 0.0, AlertRule.Comparator.GT
        elif metric:
            if not data.get("comparator"):
                self.add_error("comparator", "Choose how to compare: >, ≥, < or ≤.")
            raw = data.get("threshold", "")
            if not raw.strip():
                self.add_error("threshold", "Give a threshold to compare with.")
            else:
                try:
                    data["threshold"] = parse_threshold(metric, raw)
                except ValueError as exc:
                    self.add_error("threshold", f"{_shown(raw)} {exc}.")
        targets = []
        for field, kind in TARGET_FIELDS.items():
            found, errors = notify.parse_targets(kind, data.get(field, ""))
            for error in errors:
                self.add_error(field, f"{error}.")
            if found and kind == "email" and not notify.email_configured():
                self.add_error(
                    field,
                    "Email is not configured: set MSGTRACE_EMAIL_HOST (docs/alerting.md#email).",
                )
            targets += found
        if len(targets) > notify.MAX_TARGETS:
            self.add_error(None, f"At most {notify.MAX_TARGETS} targets per rule.")
        data["targets"] = targets
        return data

    def condition_ok(self) -> bool:
        """Whether the fields the preview needs are valid (others may not be yet)."""
        self.is_valid()
        return not any(name in self.errors for name in CONDITION_FIELDS)

    def values(self) -> dict:
        """The cleaned data as model fields."""
        data = self.cleaned_data
        values = {
            "name": data.get("name", ""), "query": data.get("query", ""),
            "metric": data["metric"], "comparator": data.get("comparator") or ">",
            "threshold": data.get("threshold") or 0.0, "window_seconds": data["window"],
            "cooldown_seconds": data.get("cooldown") or 0, "enabled": data.get("enabled", False),
            "targets": data.get("targets", []),
        }  # fmt: skip
        return {name: values[name] for name in MODEL_FIELDS}

    def unsaved_rule(self) -> AlertRule:
        """An ``AlertRule`` with the form's values, for the preview and the test button."""
        return AlertRule(**self.values())


def _span(text: str, low: timedelta, high: timedelta, low_text: str, high_text: str) -> int:
    span = parse_span(text)
    if span is None:
        raise forms.ValidationError(
            f"{_shown(text)} is not a length of time: use a number and s, m, h or d "
            f"(90s, 5m, 1h, 24h)."
        )
    if not low <= span <= high:
        raise forms.ValidationError(f"Must be from {low_text} to {high_text}; got {text.strip()}.")
    return int(span.total_seconds())


def _shown(text: str) -> str:
    text = text.strip()
    return f'"{text}"' if len(text) <= 40 else f'"{text[:40]}…"'
