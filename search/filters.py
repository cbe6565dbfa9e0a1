"""Filters over traces from query parameters (the JSON API; later the trace list)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import django_filters
from django import forms
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from search.compiler import compare_column
from traces.models import Trace, datetime_to_ns

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class MomentField(forms.Field):
    """An ISO 8601 date/time, or a span back from now: ``15m``, ``24h``, ``7d``."""

    default_error_messages = {
        "invalid": "must be an ISO 8601 date/time (2026-01-31T12:00:00Z) or a relative "
        "time such as 15m, 24h or 7d",
    }

    def to_python(self, value):
        if value in self.empty_values:
            return None
        text = value.strip()
        match = _RELATIVE.match(text)
        if match:
            amount, unit = match.groups()
            return timezone.now() - timedelta(seconds=float(amount) * _UNIT_SECONDS[unit])
        try:
            moment = parse_datetime(text) or (
                datetime.fromisoformat(text) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else None
            )
        except ValueError:
            moment = None
        if moment is None:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        if timezone.is_naive(moment):
            moment = moment.replace(tzinfo=UTC)
        return moment


class MomentFilter(django_filters.Filter):
    field_class = MomentField


class StrictBooleanField(forms.Field):
    """true/false (or 1/0, yes/no); anything else is an error, not silently ignored."""

    default_error_messages = {"invalid": "must be true or false"}
    _VALUES = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            return self._VALUES[value.strip().lower()]
        except KeyError:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None


class StrictBooleanFilter(django_filters.Filter):
    field_class = StrictBooleanField


class TraceFilter(django_filters.FilterSet):
    service = django_filters.CharFilter(field_name="service_name")
    workflow = django_filters.CharFilter(field_name="workflow_name")
    min_duration = django_filters.NumberFilter(method="filter_min_duration", min_value=0)
    max_duration = django_filters.NumberFilter(method="filter_max_duration", min_value=0)
    has_errors = StrictBooleanFilter(method="filter_has_errors")
    since = MomentFilter(method="filter_since")
    until = MomentFilter(method="filter_until")

    class Meta:
        model = Trace
        fields: list[str] = []

    # Durations are given in milliseconds, stored in nanoseconds; compiled like the query
    # language's duration: (see _compare there for why the index is kept out of it).
    def filter_min_duration(self, queryset, name, value):
        return queryset.filter(compare_column("duration_ns", ">=", int(value * 1_000_000)))

    def filter_max_duration(self, queryset, name, value):
        return queryset.filter(compare_column("duration_ns", "<=", int(value * 1_000_000)))

    def filter_has_errors(self, queryset, name, value):
        return queryset.with_errors() if value else queryset.filter(error_count=0)

    def filter_since(self, queryset, name, value):
        return queryset.filter(start_ns__gte=datetime_to_ns(value))

    def filter_until(self, queryset, name, value):
        return queryset.filter(start_ns__lt=datetime_to_ns(value))
