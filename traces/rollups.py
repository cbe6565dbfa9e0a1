"""Hourly span rollups: what the analytics page's model and span-name breakdowns read.

Why they exist: those breakdowns sum a window's spans by (name, model, type) and need
exact duration percentiles per group. An index in (name, model, type, duration) order
answered that straight from the index, but its inserts landed all over it and cost
SQLite ingest a quarter of its speed (bench/ingest.py: 22,500 -> 16,600 spans/s). Spans
are now indexed in start order (``span_start_analytics``), whose inserts land at its end,
and each past hour is summed once into ``SpanRollup`` rows, one per (hour, name, model,
type), that keep every duration too (8 bytes a span), so percentiles stay exact.

Staying right: every write to spans (ingest, deletion, re-pricing) bumps the version of
each hour it touches (``RollupHour.version``) in the same transaction. A report uses an
hour's rollup only when it was built from that version (``built_version``); any other
hour, and the partial hours at the window's edges, are read from the spans. A build
records the version it read and only lands if the version is still that one (a
conditional UPDATE), so a write racing a build can never leave a stale rollup behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from django.db import connection, transaction
from django.db.models import Aggregate, Count, F, Q, QuerySet, Sum, TextField, Value

from traces.models import RollupHour, Span, SpanRollup, Trace
from traces.periodic import Periodic

logger = logging.getLogger("msgtrace.rollups")

HOUR_NS = 3_600 * 10**9
# Hours built per grouped query (and per write transaction): bounded work per step.
BUILD_CHUNK_HOURS = 24
# A deleted trace's hours are worked out from its start and end while they are few; a
# trace longer than this (clock skew, a bad timestamp) has its spans' hours looked up.
_TRACE_HOURS_FROM_SPAN_TIMES = 48
# Beyond this many separate stretches of hours to read from spans, a report reads the
# whole window from spans instead of OR-ing that many ranges.
MAX_RAW_RANGES = 24

_HOUR_TABLE = RollupHour._meta.db_table
_BUMP_SQL = (
    f"INSERT INTO {_HOUR_TABLE} (hour, version, built_version) VALUES {{rows}} "  # noqa: S608
    f"ON CONFLICT (hour) DO UPDATE SET version = {_HOUR_TABLE}.version + 1"
)
_CLAIM_SQL = (
    f"INSERT INTO {_HOUR_TABLE} (hour, version, built_version) VALUES (%s, 0, 0) "  # noqa: S608
    "ON CONFLICT (hour) DO NOTHING"
)


def hour_of(start_ns: int) -> int:
    return start_ns // HOUR_NS


# --- Invalidation: called by every write to spans ---------------------------------------


def hours_invalidate(hours: Iterable[int]) -> None:
    """Mark these hours' rollups out of date, in the caller's transaction."""
    hours = sorted(set(hours))  # a fixed order: two writers never wait on each other
    with connection.cursor() as cursor:
        # One statement per 500 hours: an import of old data touches hundreds per batch.
        for start in range(0, len(hours), 500):
            chunk = hours[start : start + 500]
            rows = ", ".join(["(%s, 1, NULL)"] * len(chunk))
            cursor.execute(_BUMP_SQL.format(rows=rows), chunk)


def hours_forget(hours: Iterable[int]) -> None:
    """Mark these hours out of date and drop their rollup rows: spans are being deleted,
    and a purge of old data should not leave its rollups behind."""
    hours = sorted(set(hours))
    hours_invalidate(hours)
    for start in range(0, len(hours), 500):
        SpanRollup.objects.filter(hour__in=hours[start : start + 500]).delete()


def trace_hours(trace_ids: list[str]) -> set[int]:
    """The hours that spans of these (stored) traces start in, for their deletion."""
    hours: set[int] = set()
    long_traces = []
    for trace_id, start_ns, end_ns in Trace.objects.filter(trace_id__in=trace_ids).values_list(
        "trace_id", "start_ns", "end_ns"
    ):
        first, last = hour_of(start_ns), hour_of(max(start_ns, end_ns))
        if last - first > _TRACE_HOURS_FROM_SPAN_TIMES:
            long_traces.append(trace_id)
        else:
            hours.update(range(first, last + 1))
    if long_traces:
        starts = Span.objects.filter(trace_id__in=long_traces).values_list("start_ns", flat=True)
        hours.update(hour_of(start_ns) for start_ns in starts)
    return hours


# --- The figures of a group of spans ------------------------------------------------------


class Concat(Aggregate):
    """Every value of the group as comma-separated text, in no particular order."""

    function = "GROUP_CONCAT"
    output_field = TextField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return super().as_sql(
            compiler,
            connection,
            function="STRING_AGG",
            template="%(function)s((%(expressions)s)::text, ',')",
            **extra_context,
        )


SPAN_KEY = ("name", "model", "span_type")


def span_aggregates() -> dict[str, Aggregate]:
    """What a (name, model, type) group of spans is summed into, durations included."""
    return {
        "calls": Count("*"),
        "errors": Count("is_error", filter=Q(is_error=True)),
        "unpriced": Count("cost_source", filter=Q(cost_source=Span.CostSource.UNPRICED)),
        "input_tokens": Sum("input_tokens"),
        "output_tokens": Sum("output_tokens"),
        "cost": Sum("cost"),
        "durations": Concat("duration_ns"),
    }


@dataclass(slots=True)
class Part:
    """The spans of one (name, model, type), from one rollup row or one grouped read."""

    name: str
    model: str
    span_type: str
    calls: int
    errors: int
    unpriced: int
    input_tokens: int
    output_tokens: int
    cost: float
    durations: np.ndarray  # int64, in no particular order


def _durations(text: str) -> np.ndarray:
    # Parsing the text in C: ~30 ms for 1,000,000 values, ten times int() in a loop.
    return np.fromstring(text, dtype=np.int64, sep=",")


def parts_from_spans(spans: QuerySet[Span], *, by_hour: bool = False) -> Iterator[tuple]:
    """``(hour or None, Part)`` for each (name, model, type) group of ``spans``."""
    keys = list(SPAN_KEY)
    if by_hour:
        # Integer division on both databases: start times are never negative.
        spans = spans.annotate(hour=F("start_ns") / Value(HOUR_NS))
        keys.insert(0, "hour")
    for row in spans.values(*keys).annotate(**span_aggregates()).order_by():
        yield (
            row.get("hour"),
            Part(
                name=row["name"],
                model=row["model"],
                span_type=row["span_type"],
                calls=row["calls"],
                errors=row["errors"],
                unpriced=row["unpriced"],
                input_tokens=row["input_tokens"] or 0,
                output_tokens=row["output_tokens"] or 0,
                cost=float(row["cost"] or 0),
                durations=_durations(row["durations"]),
            ),
        )


# --- Building -----------------------------------------------------------------------------


def _full_hours(since_ns: int, until_ns: int, now_ns: int) -> range:
    """Hours wholly inside [since, until) that have also wholly passed by ``now``."""
    first = -(-since_ns // HOUR_NS)  # ceiling
    last = min(until_ns, now_ns) // HOUR_NS  # exclusive
    return range(first, max(first, last))


def _built(hours: range) -> set[int]:
    if not hours:
        return set()
    return set(
        RollupHour.objects.filter(
            hour__gte=hours.start, hour__lt=hours.stop, built_version=F("version")
        ).values_list("hour", flat=True)
    )


def _stretches(hours: Iterable[int], *, longest: int) -> Iterator[range]:
    """Consecutive runs of ``hours`` (sorted), each at most ``longest`` hours."""
    start = previous = None
    for hour in hours:
        if start is not None and hour == previous + 1 and hour - start < longest:
            previous = hour
            continue
        if start is not None:
            yield range(start, previous + 1)
        start = previous = hour
    if start is not None:
        yield range(start, previous + 1)


def rollups_build(*, since_ns: int, until_ns: int, now_ns: int) -> int:
    """Build the rollups of the past hours of [since, until) that lack a current one.

    Each stretch of up to ``BUILD_CHUNK_HOURS`` hours is one grouped read of its spans
    (autocommit: no lock held while reading) and one short write transaction. Returns
    how many hours were built.
    """
    hours = _full_hours(since_ns, until_ns, now_ns)
    built_already = _built(hours)
    due = [hour for hour in hours if hour not in built_already]
    built = 0
    for stretch in _stretches(due, longest=BUILD_CHUNK_HOURS):
        versions = dict(
            RollupHour.objects.filter(hour__gte=stretch.start, hour__lt=stretch.stop).values_list(
                "hour", "version"
            )
        )
        spans = Span.objects.filter(
            start_ns__gte=stretch.start * HOUR_NS, start_ns__lt=stretch.stop * HOUR_NS
        )
        parts: dict[int, list[Part]] = {hour: [] for hour in stretch}
        for hour, part in parts_from_spans(spans, by_hour=True):
            parts[hour].append(part)
        built += _store(stretch, versions, parts)
    return built


def _store(stretch: range, versions: dict[int, int], parts: dict[int, list[Part]]) -> int:
    stored = 0
    with transaction.atomic(), connection.cursor() as cursor:
        for hour in stretch:
            version = versions.get(hour)
            if version is None:  # no write since rollups began: claim a version-0 row
                cursor.execute(_CLAIM_SQL, [hour])
            else:
                cursor.execute(
                    f"UPDATE {_HOUR_TABLE} SET built_version = version "  # noqa: S608
                    "WHERE hour = %s AND version = %s",
                    [hour, version],
                )
            if cursor.rowcount != 1:  # written to (or claimed) since we read it
                continue
            SpanRollup.objects.filter(hour=hour).delete()
            SpanRollup.objects.bulk_create(
                SpanRollup(
                    hour=hour,
                    name=part.name,
                    model=part.model,
                    span_type=part.span_type,
                    calls=part.calls,
                    errors=part.errors,
                    unpriced=part.unpriced,
                    input_tokens=part.input_tokens,
                    output_tokens=part.output_tokens,
                    cost=part.cost,
                    durations=part.durations.astype("<i8").tobytes(),
                )
                for part in parts[hour]
            )
            stored += 1
    return stored


# --- Reading ------------------------------------------------------------------------------


@dataclass(slots=True)
class WindowParts:
    """A window's span groups: rollup parts, and the ranges still to read from spans."""

    parts: list[Part]
    raw_ranges: list[tuple[int, int]]  # [start_ns, end_ns)


def window_parts(*, since_ns: int, until_ns: int, now_ns: int) -> WindowParts:
    """The current rollups inside [since, until) and what is left to read from spans.

    Run it inside the report's snapshot (``analytics.read_snapshot``), so that which
    hours are current and their rows are read together.
    """
    hours = _full_hours(since_ns, until_ns, now_ns)
    built = _built(hours)
    if not built:
        return WindowParts([], [(since_ns, until_ns)])
    raw_hours = [hour for hour in hours if hour not in built]
    ranges = [(r.start * HOUR_NS, r.stop * HOUR_NS) for r in _stretches(raw_hours, longest=10**9)]
    if hours.start * HOUR_NS > since_ns:
        ranges.insert(0, (since_ns, hours.start * HOUR_NS))
    if hours.stop * HOUR_NS < until_ns:
        ranges.append((hours.stop * HOUR_NS, until_ns))
    if len(ranges) > MAX_RAW_RANGES:
        return WindowParts([], [(since_ns, until_ns)])
    rows = SpanRollup.objects.filter(hour__gte=hours.start, hour__lt=hours.stop).values_list(
        "hour", "name", "model", "span_type", "calls", "errors", "unpriced", "input_tokens",
        "output_tokens", "cost", "durations",
    )  # fmt: skip
    parts = [
        Part(name, model, span_type, calls, errors, unpriced, input_tokens, output_tokens, cost,
             np.frombuffer(durations, dtype="<i8"))  # fmt: skip
        for hour, name, model, span_type, calls, errors, unpriced, input_tokens, output_tokens,
        cost, durations in rows
        if hour in built
    ]  # fmt: skip
    return WindowParts(parts, ranges)


# --- In the server ------------------------------------------------------------------------

# How far back the server keeps rollups built ahead of any page (the longest preset), and
# how often it looks for hours that have passed or were written to since.
KEEP_BUILT = 30 * 24 * HOUR_NS
BUILD_INTERVAL_S = 300


class Builder(Periodic):
    """Builds the last 30 days' due rollups at start and every ``interval_s`` after
    (traces/periodic.py), so that a page finds them ready: from nothing, 1,000,000 spans
    take ~2 s to roll up (bench/analytics.py), which the first 30-day page would otherwise
    pay. Pages build what they still need themselves."""

    name = "rollups"
    failure = "rollups: building failed"
    logger = logger

    def __init__(self, *, interval_s: float = BUILD_INTERVAL_S) -> None:
        super().__init__(interval_s)

    def tick(self) -> None:
        now_ns = time.time_ns()
        rollups_build(since_ns=now_ns - KEEP_BUILT, until_ns=now_ns, now_ns=now_ns)
