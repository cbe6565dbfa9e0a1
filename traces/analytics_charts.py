"""The analytics page's charts as server-side SVG: every coordinate, tick and label is
computed here, so the template only writes elements out (no chart library, no script).

Each bucket gets a transparent column over the whole plot with a ``<title>`` listing the
bucket's values: the browser's own tooltip shows them on hover, with or without
JavaScript. Colours are CSS classes (msgtrace.css), never inline styles.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from traces.analytics import Bucket, Report, Window
from traces.templatetags.msgtrace import compact, duration, money

# Plot margins inside the SVG's viewBox: room for y labels on the left, x labels below.
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 10, 24
HEIGHT = 190
NARROW, WIDE = 620, 1280  # a chart in a half-width card, and one across the page
MAX_X_LABELS = 8
# Label spacings for the time axis; each must be a whole number of buckets.
_LABEL_STEPS = tuple(
    timedelta(seconds=s)
    for s in (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 14400, 21600, 43200,
              86400, 172800, 604800, 1209600, 2419200)
)  # fmt: skip
_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)


@dataclass(slots=True)
class Tick:
    pos: str  # x or y in viewBox units
    label: str
    anchor: str = "middle"


@dataclass(slots=True)
class Rect:
    x: str
    y: str
    width: str
    height: str
    css: str = ""


@dataclass(slots=True)
class Column:
    """A bucket's hover area: the whole plot height, with the bucket's values as its title."""

    x: str
    width: str
    title: str


@dataclass(slots=True)
class Line:
    css: str
    points: str  # "x,y x,y ..." for <polyline>


@dataclass(slots=True)
class Dot:
    css: str
    cx: str
    cy: str


@dataclass(slots=True)
class Chart:
    key: str
    title: str
    summary: str  # what a screen reader says for the image
    width: int
    height: int = HEIGHT
    legend: list[tuple[str, str]] = field(default_factory=list)  # (css class, label)
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    bars: list[Rect] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    dots: list[Dot] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    note: str = ""

    @property
    def plot_left(self) -> int:
        return LEFT

    @property
    def plot_right(self) -> int:
        return self.width - RIGHT

    @property
    def plot_top(self) -> int:
        return TOP

    @property
    def plot_bottom(self) -> int:
        return self.height - BOTTOM

    @property
    def plot_height(self) -> int:
        return self.plot_bottom - TOP

    @property
    def y_label_x(self) -> int:
        return LEFT - 6

    @property
    def x_label_y(self) -> int:
        return self.height - 7


def _f(value: float) -> str:
    return f"{value:.1f}"


# --- Scales --------------------------------------------------------------------------------


def nice_ceiling(value: float, ticks: int = 4) -> tuple[float, float]:
    """(top of the axis, tick step): a 1, 2, 2.5 or 5 × 10^k step, ``ticks`` steps at most."""
    if value <= 0:
        return 1.0, 0.25
    raw = value / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        step = factor * magnitude
        if step * ticks >= value * (1 - 1e-9):
            return step * math.ceil(value / step - 1e-9), step
    return 10 * magnitude * ticks, 10 * magnitude  # not reached


def _percent_label(value: float) -> str:
    return f"{value * 100:.3g}%"


def _round(label: str) -> str:
    """Axis ticks are round numbers: "20 s" and "$4", not "20.0 s" and "$4.00"."""
    return re.sub(r"\.0+(?=\D*$)", "", label)


def _duration_label(ns: float) -> str:
    return _round(duration(ns)) if ns else "0"


FORMATS: dict[str, Callable[[float], str]] = {
    "count": lambda value: _round(compact(value)),
    "duration": _duration_label,
    "percent": _percent_label,
    "money": lambda value: _round(money(value)),
}


def _y_axis(chart: Chart, top_value: float, unit: str) -> Callable[[float], float]:
    """Grid ticks for 0..top_value; returns value -> y."""
    top, step = nice_ceiling(top_value)
    if unit == "count" and step < 1:  # no quarter traces: 0 and 1 for one trace at most
        step = 1.0
        top = max(math.ceil(top_value), 1)
    scale = chart.plot_height / top

    def y(value: float) -> float:
        return chart.plot_bottom - value * scale

    count = round(top / step)
    chart.y_ticks = [
        Tick(_f(y(i * step)), FORMATS[unit](i * step), "end") for i in range(count + 1)
    ]
    return y


def _x_axis(chart: Chart, window: Window, count: int) -> float:
    """Time labels at round times that fall on bucket starts; returns a bucket's width."""
    width = (chart.plot_right - LEFT) / max(count, 1)
    start = window.first_bucket_ns
    step_ns = window.step_ns
    spacing = next(
        (
            s
            for s in _LABEL_STEPS
            if s >= window.step and s % window.step == timedelta(0)
            and count * window.step / s <= MAX_X_LABELS
        ),
        _LABEL_STEPS[-1],
    )  # fmt: skip
    spacing_ns = int(spacing.total_seconds()) * 10**9
    origin_ns = int((_MONDAY - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 10**9
    daily = spacing >= timedelta(days=1)
    several_days = count * window.step > timedelta(days=1)
    for index in range(count):
        at = start + index * step_ns
        if (at - origin_ns) % spacing_ns:
            continue
        moment = datetime.fromtimestamp(at / 1e9, tz=UTC)
        if daily or (several_days and moment.hour == 0 and moment.minute == 0):
            label = f"{moment:%b} {moment.day}"
        else:
            label = f"{moment:%H:%M}"
        chart.x_ticks.append(Tick(_f(LEFT + index * width), label))
    return width


# --- Tooltips ------------------------------------------------------------------------------


def bucket_title(bucket: Bucket, window: Window) -> str:
    """Everything about one bucket, for its hover tooltip."""
    start, end = max(bucket.start, window.since), min(bucket.end, window.until)
    same_day = start.date() == (end - timedelta(microseconds=1)).date()
    if window.step >= timedelta(days=1):
        when = f"{start:%a %b} {start.day}" + (
            f" {start:%H:%M}" if start.hour or start.minute else ""
        )
        if window.step > timedelta(days=1):
            when += f" – {end:%b} {end.day}"
    elif same_day:
        when = f"{start:%b} {start.day} {start:%H:%M}–{end:%H:%M}"
    else:
        when = f"{start:%b} {start.day} {start:%H:%M} – {end:%b} {end.day} {end:%H:%M}"
    partial = " (part of the bucket)" if (start, end) != (bucket.start, bucket.end) else ""
    lines = [f"{when} UTC{partial}"]
    if not bucket.traces:
        return "\n".join([*lines, "No traces"])
    rate = bucket.errors / bucket.traces
    lines.append(
        f"{bucket.traces:,} trace{'s' if bucket.traces != 1 else ''} · "
        f"{bucket.errors:,} with errors ({_percent_label(rate)})"
    )
    lines.append(
        f"p50 {duration(bucket.p50_ns)} · p95 {duration(bucket.p95_ns)} · "
        f"p99 {duration(bucket.p99_ns)}"
    )
    lines.append(f"Tokens: {bucket.input_tokens:,} in · {bucket.output_tokens:,} out")
    cost = f"Cost: {money(bucket.cost)}"
    if bucket.unpriced:
        cost += f" (+ {bucket.unpriced:,} unpriced span{'s' if bucket.unpriced != 1 else ''})"
    lines.append(cost)
    return "\n".join(lines)


# --- Charts --------------------------------------------------------------------------------


def _frame(key: str, title: str, summary: str, width: int, report: Report) -> tuple:
    chart = Chart(key, title, summary, width)
    buckets = report.buckets
    bucket_width = _x_axis(chart, report.window, len(buckets))
    titles = [bucket_title(bucket, report.window) for bucket in buckets]
    chart.columns = [
        Column(_f(LEFT + i * bucket_width), _f(bucket_width), text) for i, text in enumerate(titles)
    ]
    return chart, bucket_width


def bar_chart(
    report: Report,
    *,
    key: str,
    title: str,
    unit: str,
    stacks: Sequence[tuple[str, str, Callable[[Bucket], float]]],
    width: int = NARROW,
) -> Chart:
    """Bars per bucket, ``stacks`` (css class, legend label, value) from the bottom up."""
    totals = [sum(value(b) for _, _, value in stacks) for b in report.buckets]
    highest = FORMATS[unit](max(totals, default=0))
    summary = f"{title}, per {report.window.step_label}; highest {highest}"
    chart, bucket_width = _frame(key, title, summary, width, report)
    chart.legend = [(css, label) for css, label, _ in stacks] if len(stacks) > 1 else []
    y = _y_axis(chart, max(totals, default=0), unit)
    gap = min(bucket_width * 0.15, 3)
    for index, bucket in enumerate(report.buckets):
        base = 0.0
        for css, _, value in stacks:
            amount = value(bucket)
            if amount <= 0:
                continue
            top, bottom = y(base + amount), y(base)
            chart.bars.append(
                Rect(
                    _f(LEFT + index * bucket_width + gap),
                    _f(top),
                    _f(max(bucket_width - 2 * gap, 0.5)),
                    # At least half a unit: a small but non-zero value stays visible.
                    _f(max(bottom - top, 0.5)),
                    css,
                )
            )
            base += amount
    return chart


def line_chart(
    report: Report,
    *,
    key: str,
    title: str,
    unit: str,
    series: Sequence[tuple[str, str, Callable[[Bucket], float | None]]],
    width: int = NARROW,
) -> Chart:
    """A line per series through bucket centres; a bucket without a value breaks it."""
    values = [value(bucket) for _, _, value in series for bucket in report.buckets]
    known = [v for v in values if v is not None]
    top_value = max(known, default=0)
    summary = f"{title}, per {report.window.step_label}; highest {FORMATS[unit](top_value)}"
    chart, bucket_width = _frame(key, title, summary, width, report)
    chart.legend = [(css, label) for css, label, _ in series]
    y = _y_axis(chart, top_value, unit)
    for css, _, value in series:
        run: list[str] = []
        for index, bucket in enumerate(report.buckets + [None]):  # None ends the last run
            amount = value(bucket) if bucket is not None else None
            if amount is not None:
                run.append(f"{_f(LEFT + (index + 0.5) * bucket_width)},{_f(y(amount))}")
                continue
            if len(run) == 1:  # a lone value has no line to sit on: a dot
                cx, cy = run[0].split(",")
                chart.dots.append(Dot(css, cx, cy))
            elif run:
                chart.lines.append(Line(css, " ".join(run)))
            run = []
    return chart


def charts(report: Report) -> list[Chart]:
    """The page's charts, in page order (the duration chart spans the page)."""
    return [
        bar_chart(
            report, key="traces", title="Traces", unit="count",
            stacks=[
                ("s-ok", "without errors", lambda b: b.traces - b.errors),
                ("s-error", "with errors", lambda b: b.errors),
            ],
        ),
        line_chart(
            report, key="error-rate", title="Error rate", unit="percent",
            series=[("s-error", "traces with an error span", lambda b: b.error_rate)],
        ),
        line_chart(
            report, key="duration", title="Trace duration", unit="duration", width=WIDE,
            series=[
                ("s-p50", "p50", lambda b: b.p50_ns),
                ("s-p95", "p95", lambda b: b.p95_ns),
                ("s-p99", "p99", lambda b: b.p99_ns),
            ],
        ),
        bar_chart(
            report, key="tokens", title="Tokens", unit="count",
            stacks=[
                ("s-input", "input", lambda b: b.input_tokens),
                ("s-output", "output", lambda b: b.output_tokens),
            ],
        ),
        cost_chart(report),
    ]  # fmt: skip


def cost_chart(report: Report) -> Chart:
    chart = bar_chart(
        report, key="cost", title="Cost", unit="money",
        stacks=[("s-cost", "cost", lambda b: b.cost)],
    )  # fmt: skip
    unpriced = report.totals.unpriced if report.totals else 0
    if unpriced:
        # A total that looks complete but is not would mislead: say what it leaves out.
        spans = f"{unpriced:,} span{'s' if unpriced != 1 else ''}"
        chart.note = f"Leaves out {spans} with tokens but no known price."
    return chart
