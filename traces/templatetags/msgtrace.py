"""Formatting for pages: durations, counts, money, times, and query-string links.

Filters return plain strings; Django escapes them like any other value.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django import template
from django.http import QueryDict

register = template.Library()


@register.filter
def duration(ns) -> str:
    """Nanoseconds as a short human duration: 850 µs, 12.3 ms, 1.24 s, 2m 03s, 1h 02m."""
    if ns is None or ns == "":
        return "—"
    ns = float(ns)
    if ns == 0:
        return "0"
    if ns < 1_000_000:
        return f"{ns / 1000:.0f} µs" if ns >= 1000 else f"{ns:.0f} ns"
    ms = ns / 1e6
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


@register.filter
def compact(value) -> str:
    """Counts for narrow columns: 950, 12.3k, 4.5M."""
    if value is None or value == "":
        return "—"
    value = float(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            return f"{scaled:.1f}{suffix}" if scaled < 100 else f"{scaled:.0f}{suffix}"
    return f"{value:.0f}"


@register.filter
def thousands(value) -> str:
    """A whole count in full, grouped: 1,200."""
    return f"{int(value):,}"


@register.filter
def amount(value, currency: str = "USD") -> str:
    """A cost to the last cent fraction that matters: $0.0000375, $0.0030, $12.50."""
    value = float(value)
    text = f"{value:.8f}".rstrip("0") if abs(value) < 0.01 else f"{value:,.4f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    text = f"{whole}.{fraction.ljust(4 if abs(value) < 0.01 else 2, '0')}"
    return f"${text}" if currency in ("USD", "") else f"{text} {currency}"


@register.filter
def per_million(rate, currency: str = "USD") -> str:
    """A price per million tokens as providers quote it: $2.50/M, $0.075/M, $10/M."""
    rate = Decimal(rate).normalize()
    text = f"{rate:f}"
    if "." in text and len(text.split(".")[1]) == 1:
        text += "0"
    return f"${text}/M" if currency in ("USD", "") else f"{text} {currency}/M"


@register.filter
def money(value) -> str:
    """A cost in dollars with the precision small LLM costs need: $0.0042, $1.27, $1,204."""
    if value is None or value == "":
        return "—"
    value = float(value)
    if value == 0:
        return "$0"
    if abs(value) < 0.0001:
        return "<$0.0001"
    if abs(value) < 0.01:
        return f"${value:.4f}"
    if abs(value) < 100:
        return f"${value:.2f}"
    return f"${value:,.0f}"


@register.filter
def percent(value) -> str:
    if value is None:
        return "—"
    value = float(value) * 100
    if value == 0:
        return "0%"
    return f"{value:.1f}%" if value < 10 else f"{value:.0f}%"


@register.filter
def utc(moment: datetime | None) -> str:
    """An aware datetime as ``2026-11-24 14:03:12``; pages say it is UTC (JS localises it)."""
    if moment is None:
        return "—"
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@register.filter
def iso(moment: datetime | None) -> str:
    return moment.isoformat().replace("+00:00", "Z") if moment else ""


@register.simple_tag(takes_context=True)
def query(context, **changes) -> str:
    """The current query string with some parameters changed; ``None`` removes one.

    ``{% query sort="-duration" page=None %}`` → ``?service=api&sort=-duration``.
    """
    params: QueryDict = context["request"].GET.copy()
    for name, value in changes.items():
        if value is None or value == "":
            params.pop(name, None)
        else:
            params[name] = value
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.filter
def get_item(mapping: dict, key: str):
    """``row|get_item:field`` for rows keyed by a column name the view chose."""
    return mapping.get(key, "")


@register.filter
def measure(value, unit: str) -> str:
    """A figure in its unit: ``duration`` (ns), ``money`` or a plain ``count``."""
    if unit == "duration":
        return duration(value)
    if unit == "money":
        return money(value)
    return f"{value:,.0f}" if value is not None else "—"


@register.filter
def signed_percent(value: float) -> str:
    """+58.1%, −50.0%: the same minus sign as the changes beside it."""
    return f"{'−' if value < 0 else '+'}{abs(value):.1f}%"


@register.filter
def change(value, unit: str) -> str:
    """A signed change in its unit; durations and money keep their sign outside the unit."""
    if value is None:
        return "—"
    sign = "−" if value < 0 else "+"
    return f"{sign}{measure(abs(value), unit)}"
