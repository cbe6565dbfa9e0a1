"""Analytics over a time window: a series per time bucket and breakdowns by model, service,
workflow and span name, with exact percentiles that are the same on SQLite and PostgreSQL.

What is counted:

- The series, the totals and the service and workflow breakdowns are about **traces**
  that started in the window (``Trace.start_ns``) and match the query: a trace's duration,
  whether it has an error span, its tokens, cost and unpriced spans.
- The model and span-name breakdowns are about **spans** that started in the window
  (``Span.start_ns``), of traces that match the query. "By model" counts the spans that
  name a model, except agent spans (``span_type == "agent"``): those name the model their
  run uses, and counting them would count each run's calls twice.

Percentiles follow PostgreSQL's ``percentile_cont`` (and numpy's default): the value at
rank ``p * (n - 1)`` of the sorted values, linearly interpolated between the two values
around it, in double precision. SQLite has no percentile function, so both databases run
the same code: every duration of a group is read (one grouped query returns them as
text) and the one or two values at each rank are picked out in Python.

For the spans of a long window (millions), reading every span would be too slow, so the
model and span-name breakdowns read hourly rollups (traces/rollups.py): one row per
(hour, name, model, type) with its sums and every duration, built once per past hour
and rebuilt when spans of that hour are written, deleted or re-priced. Only the window's
partial hours (and hours written to since their rollup) are read from the spans.

Each breakdown shows the ``TOP`` groups with most calls; the others are added up in one
row without percentiles, which keeps the work bounded however many names there are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from django.db import OperationalError, connection, transaction
from django.db.models import CharField, Count, F, Q, QuerySet, Sum, Value
from django.db.models.functions import Concat
from django.utils import timezone

from traces import rollups
from traces.models import Span, Trace, datetime_to_ns, ns_to_datetime

logger = logging.getLogger("msgtrace.analytics")

PRESETS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
# Bucket sizes, smallest first: a window gets the smallest one that cuts it into at most
# MAX_BUCKETS buckets (1h -> 1 minute, 24h -> 30 minutes, 7d -> 6 hours, 30d -> 1 day).
STEPS = tuple(
    timedelta(seconds=seconds)
    for seconds in (60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400, 604800)
)
MAX_BUCKETS = 60
MIN_RANGE = timedelta(minutes=1)
MAX_RANGE = timedelta(days=366)  # 53 one-week buckets at most
# Custom windows stay where nanoseconds since the epoch fit a signed 64-bit column.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
# Buckets are aligned to multiples of their size from a Monday midnight (UTC): every size
# up to a day divides a day, so those align to midnight, and weeks start on Mondays.
_ORIGIN_NS = datetime_to_ns(datetime(1970, 1, 5, tzinfo=UTC))

SERIES_FRACTIONS = (0.50, 0.95, 0.99)
BREAKDOWN_FRACTIONS = (0.50, 0.95)
BREAKDOWNS = ("model", "service", "workflow", "span")
TOP = 10  # rows per breakdown, most calls first; the rest fold into one "other" row
# Agent spans name the model their run uses; they are not calls to it.
MODEL_CALLS = ~Q(model="") & ~Q(span_type="agent")


# --- Windows and buckets ----------------------------------------------------------------


def bucket_step(length: timedelta) -> timedelta:
    """The smallest of ``STEPS`` that cuts ``length`` into at most ``MAX_BUCKETS`` buckets."""
    for step in STEPS:
        if length <= step * MAX_BUCKETS:
            return step
    return STEPS[-1]


@dataclass(frozen=True, slots=True)
class Window:
    """``[since, until)``, named ``1h``/``24h``/``7d``/``30d`` or ``custom``, and its buckets."""

    name: str
    since: datetime
    until: datetime
    step: timedelta

    @classmethod
    def preset(cls, name: str, now: datetime) -> Window:
        length = PRESETS[name]
        return cls(name, now - length, now, bucket_step(length))

    @classmethod
    def custom(cls, since: datetime, until: datetime) -> Window:
        return cls("custom", since, until, bucket_step(until - since))

    @property
    def since_ns(self) -> int:
        return datetime_to_ns(self.since)

    @property
    def until_ns(self) -> int:
        return datetime_to_ns(self.until)

    @property
    def step_ns(self) -> int:
        return self.step // timedelta(microseconds=1) * 1000

    @property
    def first_bucket_ns(self) -> int:
        """Start of the aligned bucket that holds ``since``."""
        since = self.since_ns
        return since - (since - _ORIGIN_NS) % self.step_ns

    def bucket_starts(self) -> range:
        """Every bucket's start (ns), first to last; the first and last may be partial."""
        return range(self.first_bucket_ns, self.until_ns, self.step_ns)

    def bucket_of(self, start_ns: int) -> int:
        return (start_ns - self.first_bucket_ns) // self.step_ns

    @property
    def step_label(self) -> str:
        """The bucket size in words: ``1 minute``, ``30 minutes``, ``6 hours``, ``1 day``."""
        seconds = int(self.step.total_seconds())
        for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
            if seconds % size == 0:
                count = seconds // size
                return f"{count} {unit}{'s' if count != 1 else ''}"
        return f"{seconds} seconds"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "bucket_seconds": int(self.step.total_seconds()),
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- Percentiles ------------------------------------------------------------------------


def rank(count: int, fraction: float) -> tuple[int, float]:
    """(index of the lower value, weight of the next one) for ``fraction`` of ``count`` values.

    ``percentile_cont``'s arithmetic, step by step, so the float results are identical.
    """
    position = fraction * (count - 1)
    low = math.floor(position)
    return low, position - low


def interpolate(low_value: int, high_value: int | None, weight: float) -> float:
    """``lo + weight * (hi - lo)`` in double precision, as PostgreSQL computes it."""
    if weight == 0 or high_value is None:
        return float(low_value)
    low = float(low_value)
    return low + weight * (float(high_value) - low)


def percentile(ordered: Sequence[int], fraction: float) -> float | None:
    """``percentile_cont(fraction)`` of values sorted ascending; None for no values."""
    if not ordered:
        return None
    low, weight = rank(len(ordered), fraction)
    high = ordered[low + 1] if weight else None
    return interpolate(ordered[low], high, weight)


def selected_percentiles(
    arrays: Sequence[np.ndarray], fractions: Sequence[float]
) -> list[float | None]:
    """``percentile_cont`` of each fraction over the durations in ``arrays`` (unsorted).

    Nothing is sorted: numpy's introselect puts the one or two values each fraction needs
    at their ranks (``np.partition``), ~10 ms for 1,000,000 durations against ~150 ms
    for sorting them; ``interpolate`` then does PostgreSQL's arithmetic on those values.
    """
    count = sum(len(array) for array in arrays)
    if count == 0:
        return [None for _ in fractions]
    values = np.concatenate(arrays) if len(arrays) != 1 else arrays[0]
    ranks = {fraction: rank(count, fraction) for fraction in fractions}
    wanted = sorted(
        {low + step for low, weight in ranks.values() for step in (0, 1) if step == 0 or weight}
    )
    chosen = np.partition(values, wanted)
    return [
        interpolate(int(chosen[low]), int(chosen[low + 1]) if weight else None, weight)
        for low, weight in ranks.values()
    ]


@contextmanager
def read_snapshot() -> Iterator[None]:
    """Let the several queries of one report see the same data.

    Which hours have current rollups, their rows, and the spans of the other hours must
    come from one state of the data, or an hour written to in between would be counted
    twice or not at all. PostgreSQL gets a REPEATABLE READ transaction. SQLite gets a plain
    deferred one (WAL gives it a snapshot at its first read) instead of Django's atomic(),
    which our settings make ``BEGIN IMMEDIATE``: it would take the write lock and hold up
    ingest for the whole report. Inside an existing transaction there is nothing to do.
    """
    if connection.in_atomic_block:
        yield
        return
    if connection.vendor == "postgresql":
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield
        return
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("BEGIN DEFERRED")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("COMMIT")  # read-only: nothing to keep or undo


# --- Results ------------------------------------------------------------------------------


@dataclass(slots=True)
class Bucket:
    """The traces that started in one bucket (or, as the totals, in the whole window)."""

    start: datetime
    end: datetime
    traces: int = 0
    errors: int = 0  # traces with at least one error span
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    unpriced: int = 0  # spans with tokens but no known price: left out of the cost
    p50_ns: float | None = None
    p95_ns: float | None = None
    p99_ns: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.traces if self.traces else None

    def to_dict(self) -> dict:
        return {
            "start": _iso(self.start),
            "end": _iso(self.end),
            "traces": self.traces,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p50_duration_ms": _ms(self.p50_ns),
            "p95_duration_ms": _ms(self.p95_ns),
            "p99_duration_ms": _ms(self.p99_ns),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": self.cost,
            "unpriced_spans": self.unpriced,
        }


def _ms(ns: float | None) -> float | None:
    return ns / 1e6 if ns is not None else None


@dataclass(slots=True)
class Group:
    """One row of a breakdown. ``calls`` are traces (service, workflow) or spans (model,
    span name); "other" folds ``folded`` groups and has no percentiles."""

    name: str
    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    unpriced: int = 0
    p50_ns: float | None = None
    p95_ns: float | None = None
    folded: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.calls if self.calls else None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, row: Group) -> None:
        self.calls += row.calls
        self.errors += row.errors
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cost += row.cost
        self.unpriced += row.unpriced

    def to_dict(self) -> dict:
        data = {
            "name": self.name,
            "calls": self.calls,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p50_duration_ms": _ms(self.p50_ns),
            "p95_duration_ms": _ms(self.p95_ns),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": self.cost,
            "unpriced_spans": self.unpriced,
        }
        if self.folded:
            data["groups"] = self.folded
        return data


# Sort keys a user may ask for (prefix "-" for descending), each a function of a row.
SORTS: dict[str, Callable[[Group], object]] = {
    "name": lambda row: row.name.lower(),
    "calls": lambda row: row.calls,
    "errors": lambda row: row.errors,
    "error_rate": lambda row: row.error_rate,
    "p50": lambda row: row.p50_ns,
    "p95": lambda row: row.p95_ns,
    "tokens": lambda row: row.tokens,
    "cost": lambda row: row.cost,
}
DEFAULT_SORT = "-calls"


def sort_rows(rows: list[Group], sort: str) -> list[Group]:
    """Rows in ``sort`` order; rows without a value (no percentile) last either way."""
    key = SORTS[sort.removeprefix("-")]
    known = [row for row in rows if key(row) is not None]
    unknown = [row for row in rows if key(row) is None]
    # Ties keep the most-calls-first order the rows arrive in.
    return sorted(known, key=key, reverse=sort.startswith("-")) + unknown


@dataclass(slots=True)
class Breakdown:
    """A breakdown's rows (the ``TOP`` groups with most calls, in ``sort`` order) and the
    rest folded into ``other``."""

    by: str
    sort: str
    rows: list[Group]
    other: Group | None = None

    @property
    def groups(self) -> int:
        return len(self.rows) + (self.other.folded if self.other else 0)

    def to_dict(self) -> dict:
        return {
            "by": self.by,
            "sort": self.sort,
            "groups": self.groups,
            "rows": [row.to_dict() for row in self.rows],
            "other": self.other.to_dict() if self.other else None,
        }


def _top(groups: dict[str, Group], by: str, sort: str, top: int) -> tuple[Breakdown, list[Group]]:
    """The ``top`` groups with most calls (name breaks ties) and "other" for the rest."""
    ranked = sorted(groups.values(), key=lambda row: (-row.calls, row.name))
    shown, rest = ranked[:top], ranked[top:]
    other = None
    if rest:
        other = Group(name="other", folded=len(rest))
        for row in rest:
            other.add(row)
    return Breakdown(by, sort, shown, other), shown


def _finish(breakdown: Breakdown) -> Breakdown:
    breakdown.rows = sort_rows(breakdown.rows, breakdown.sort)
    return breakdown


# --- Traces: series, totals, services, workflows --------------------------------------------


@dataclass(slots=True)
class TraceReport:
    window: Window
    buckets: list[Bucket]
    totals: Bucket
    service: Breakdown | None = None
    workflow: Breakdown | None = None


def trace_report(
    traces: QuerySet[Trace],
    window: Window,
    *,
    sorts: dict[str, str] | None = None,
    top: int = TOP,
) -> TraceReport:
    """Series, totals and the service and workflow breakdowns of the traces in ``window``.

    One query, grouped by (bucket, service, workflow), returns the sums and every
    duration of each group (the covering index ``trace_analytics`` answers it without
    reading trace rows); everything else is folded from those groups in Python.
    """
    sorts = sorts or {}
    first, step = window.first_bucket_ns, window.step_ns
    groups = (
        traces.filter(start_ns__gte=window.since_ns, start_ns__lt=window.until_ns)
        # Integer division on both databases: start_ns and the bounds are integers.
        .annotate(bucket=(F("start_ns") - Value(first)) / Value(step))
        .values("bucket", "service_name", "workflow_name")
        .annotate(
            traces=Count("*"),
            errors=Count("error_count", filter=Q(error_count__gt=0)),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost=Sum("cost"),
            unpriced=Sum("unpriced_count"),
            durations=rollups.Concat("duration_ns"),
        )
        .order_by()
    )
    starts = window.bucket_starts()
    buckets = [Bucket(ns_to_datetime(start), ns_to_datetime(start + step)) for start in starts]
    totals = Bucket(window.since, window.until)
    services: dict[str, Group] = {}
    workflows: dict[str, Group] = {}
    bucket_durations: list[list[int]] = [[] for _ in buckets]
    service_durations: dict[str, list[int]] = {}
    workflow_durations: dict[str, list[int]] = {}
    for row in groups:
        durations = list(map(int, row["durations"].split(",")))
        durations.sort()  # sorted runs make the merges below cheap (timsort)
        bucket = buckets[row["bucket"]]
        cost = float(row["cost"] or 0)
        for target in (
            bucket,
            totals,
            services.setdefault(row["service_name"], Group(row["service_name"])),
            workflows.setdefault(row["workflow_name"], Group(row["workflow_name"])),
        ):
            if isinstance(target, Bucket):
                target.traces += row["traces"]
            else:
                target.calls += row["traces"]
            target.errors += row["errors"]
            target.input_tokens += row["input_tokens"] or 0
            target.output_tokens += row["output_tokens"] or 0
            target.cost += cost
            target.unpriced += row["unpriced"] or 0
        bucket_durations[row["bucket"]] += durations
        service_durations.setdefault(row["service_name"], []).extend(durations)
        workflow_durations.setdefault(row["workflow_name"], []).extend(durations)

    everything: list[int] = []
    for bucket, durations in zip(buckets, bucket_durations, strict=True):
        durations.sort()
        bucket.p50_ns, bucket.p95_ns, bucket.p99_ns = (
            percentile(durations, fraction) for fraction in SERIES_FRACTIONS
        )
        everything += durations
    everything.sort()
    totals.p50_ns, totals.p95_ns, totals.p99_ns = (
        percentile(everything, fraction) for fraction in SERIES_FRACTIONS
    )
    report = TraceReport(window, buckets, totals)
    for by, named, durations_of in (
        ("service", services, service_durations),
        ("workflow", workflows, workflow_durations),
    ):
        breakdown, shown = _top(named, by, sorts.get(by, DEFAULT_SORT), top)
        for row in shown:
            durations = durations_of[row.name]
            durations.sort()
            row.p50_ns, row.p95_ns = (percentile(durations, f) for f in BREAKDOWN_FRACTIONS)
        setattr(report, by, _finish(breakdown))
    return report


# --- Spans: models and span names -----------------------------------------------------------


@dataclass(slots=True)
class _SpanGroups:
    """Figures by span name and by model, and the durations of each group's parts."""

    names: dict[str, Group] = field(default_factory=dict)
    models: dict[str, Group] = field(default_factory=dict)
    durations: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)


def _fold(parts: Iterable[rollups.Part]) -> _SpanGroups:
    """Fold (name, model, type) parts, from rollups and from spans, by name and by model."""
    groups = _SpanGroups()
    for part in parts:
        row = Group(
            name="",
            calls=part.calls,
            errors=part.errors,
            input_tokens=part.input_tokens,
            output_tokens=part.output_tokens,
            cost=part.cost,
            unpriced=part.unpriced,
        )
        groups.names.setdefault(part.name, Group(part.name)).add(row)
        groups.durations.setdefault(("span", part.name), []).append(part.durations)
        if part.model and part.span_type != "agent":  # MODEL_CALLS
            groups.models.setdefault(part.model, Group(part.model)).add(row)
            groups.durations.setdefault(("model", part.model), []).append(part.durations)
    return groups


def window_parts(window: Window, query: Q, *, now_ns: int) -> list[rollups.Part]:
    """The (name, model, type) parts of the spans that started in ``window``, of the traces
    ``query`` selects: current hourly rollups plus whatever they leave to read from spans
    (the window's partial hours, hours written to since). With a query, every span is
    read: rollups cover all traces, not the query's."""
    if query:
        return [part for _, part in rollups.parts_from_spans(window_spans(window, query))]
    found = rollups.window_parts(since_ns=window.since_ns, until_ns=window.until_ns, now_ns=now_ns)
    if found.raw_ranges:
        covered = Q()
        for start_ns, end_ns in found.raw_ranges:
            covered |= Q(start_ns__gte=start_ns, start_ns__lt=end_ns)
        spans = Span.objects.filter(covered)
        found.parts.extend(part for _, part in rollups.parts_from_spans(spans))
    return found.parts


def span_breakdowns(
    parts: Iterable[rollups.Part],
    *,
    wanted: Sequence[str] = ("model", "span"),
    sorts: dict[str, str] | None = None,
    top: int = TOP,
) -> dict[str, Breakdown]:
    """The model and span-name breakdowns of ``parts`` (``window_parts``)."""
    sorts = sorts or {}
    groups = _fold(parts)
    result: dict[str, Breakdown] = {}
    for by, named in (("model", groups.models), ("span", groups.names)):
        if by not in wanted:
            continue
        breakdown, shown = _top(named, by, sorts.get(by, DEFAULT_SORT), top)
        for row in shown:
            row.p50_ns, row.p95_ns = selected_percentiles(
                groups.durations[(by, row.name)], BREAKDOWN_FRACTIONS
            )
        result[by] = _finish(breakdown)
    return result


# --- The whole report ----------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    """Everything the analytics page shows."""

    window: Window
    q: str
    buckets: list[Bucket] = field(default_factory=list)
    totals: Bucket | None = None
    breakdowns: dict[str, Breakdown] = field(default_factory=dict)

    def series_dict(self) -> dict:
        return {
            "window": self.window.to_dict(),
            "q": self.q,
            "totals": self.totals.to_dict() if self.totals else None,
            "buckets": [bucket.to_dict() for bucket in self.buckets],
        }

    def breakdowns_dict(self) -> dict:
        return {
            "window": self.window.to_dict(),
            "q": self.q,
            "breakdowns": {by: breakdown.to_dict() for by, breakdown in self.breakdowns.items()},
        }


def selected_traces(query: Q) -> QuerySet[Trace]:
    """The traces a (compiled) search query selects; every trace for an empty one."""
    return Trace.objects.filter(query) if query else Trace.objects.all()


# A query that selects at most this many traces is answered from their spans (looked up
# by trace); one that selects more, from the window's spans (read in start order).
FEW_TRACES = 2_000


def window_spans(window: Window, query: Q) -> QuerySet[Span]:
    """Spans that started in ``window``, of the traces ``query`` selects.

    Which side to start from matters more than anything else here: the spans of a
    selective query's few traces, or the window's spans checked against a broad query's
    many. SQLite (without statistics) always started from the traces: on 1M spans, a 1h
    window with `service:support-agent` (a quarter of all traces) took 333 ms, against
    30 ms from the window's spans.
    """
    spans = Span.objects.filter(start_ns__gte=window.since_ns, start_ns__lt=window.until_ns)
    if not query:
        return spans
    matching = Trace.objects.filter(query).values_list("pk", flat=True)
    few = list(matching[: FEW_TRACES + 1])
    if len(few) <= FEW_TRACES:
        return spans.filter(trace_id__in=few)
    if connection.vendor == "sqlite":
        # An expression on trace_id is not indexed, so the start-order index drives.
        key = Concat(F("trace_id"), Value(""), output_field=CharField())
        return spans.alias(trace_key=key).filter(trace_key__in=matching)
    return spans.filter(trace_id__in=matching)


def report(
    window: Window,
    query: Q,
    *,
    q: str = "",
    series: bool = True,
    breakdowns: Sequence[str] = BREAKDOWNS,
    sorts: dict[str, str] | None = None,
    top: int = TOP,
    now: datetime | None = None,
) -> Report:
    """The series and the breakdowns asked for, all from one snapshot of the data.

    Past hours of the window without a current rollup get one first (traces/rollups.py),
    outside the snapshot: building writes.
    """
    result = Report(window, q)
    wanted_traces = series or "service" in breakdowns or "workflow" in breakdowns
    wanted_spans = [by for by in breakdowns if by in ("model", "span")]
    now_ns = datetime_to_ns(now or timezone.now())
    if wanted_spans and not query:
        try:
            rollups.rollups_build(since_ns=window.since_ns, until_ns=window.until_ns, now_ns=now_ns)
        except OperationalError:
            # The write lock stayed taken (SQLite, heavy ingest): hours without a rollup
            # are read from the spans below, slower but just as exact.
            logger.warning("analytics: rollups not built, the database is busy")
    with read_snapshot():
        if wanted_traces:
            part = trace_report(selected_traces(query), window, sorts=sorts, top=top)
            if series:
                result.buckets, result.totals = part.buckets, part.totals
            for by in ("service", "workflow"):
                if by in breakdowns:
                    result.breakdowns[by] = getattr(part, by)
        if wanted_spans:
            parts = window_parts(window, query, now_ns=now_ns)
            result.breakdowns.update(
                span_breakdowns(parts, wanted=wanted_spans, sorts=sorts, top=top)
            )
    result.breakdowns = {by: result.breakdowns[by] for by in breakdowns}
    return result
