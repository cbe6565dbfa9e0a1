"""Traces and spans.

A ``Span`` row keeps everything OTLP sent (attributes, events, links, resource, scope as
JSON) plus denormalised, indexed columns for what pages filter and sum on. A ``Trace``
row is a summary of its spans, recomputed from them whenever spans arrive, so it stays
exact whatever order, duplication or batching the spans come in.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from django.db import models
from django.db.models import Avg, Count, F, Q, Sum
from django.utils import timezone


def ns_to_datetime(ns: int | None) -> datetime | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")


def is_trace_id(value: str) -> bool:
    """32 lower-case hex digits: the only text that may become part of a trace URL."""
    return bool(_TRACE_ID.fullmatch(value))


def is_span_id(value: str) -> bool:
    return bool(_SPAN_ID.fullmatch(value))


def datetime_to_ns(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1) * 1000


class TraceQuerySet(models.QuerySet):
    def find(self, trace_id: str) -> Trace | None:
        """The trace with this id as a person or program typed it (any case), or None."""
        if len(trace_id) > 64:  # no id is that long; do not send it to the database
            return None
        return self.filter(pk=trace_id.lower()).first()

    def newest_first(self) -> TraceQuerySet:
        """Most recently started traces first; the order of every list."""
        return self.order_by("-start_ns", "-trace_id")

    def started_between(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> TraceQuerySet:
        """Traces whose start lies in [since, until); either bound may be open."""
        qs = self
        if since is not None:
            qs = qs.filter(start_ns__gte=datetime_to_ns(since))
        if until is not None:
            qs = qs.filter(start_ns__lt=datetime_to_ns(until))
        return qs

    def with_errors(self) -> TraceQuerySet:
        """Traces with at least one span whose status is ERROR."""
        return self.filter(error_count__gt=0)

    def totals(self) -> dict:
        """Counts and sums over the selected traces, in one query."""
        return self.aggregate(
            traces=Count("pk"),
            spans=Sum("span_count", default=0),
            traces_with_errors=Count("pk", filter=Q(error_count__gt=0)),
            input_tokens=Sum("input_tokens", default=0),
            output_tokens=Sum("output_tokens", default=0),
            total_tokens=Sum("total_tokens", default=0),
            cost=Sum("cost", default=0.0),
            unpriced_spans=Sum("unpriced_count", default=0),
        )

    def stats(self, totals: dict | None = None) -> dict:
        """Totals, error rate and p50/p95 duration (ns): dashboard cards and the API's stats."""
        totals = totals if totals is not None else self.totals()
        count = totals["traces"]
        return {
            **totals,
            "error_rate": totals["traces_with_errors"] / count if count else 0.0,
            "p50_ns": self.duration_percentile(0.50, count=count),
            "p95_ns": self.duration_percentile(0.95, count=count),
        }

    def top(self, field: str, limit: int = 6) -> list[dict]:
        """The most frequent values of a summary column, with error counts and mean duration.

        ``field`` is one of our own column names (callers pass a literal), never user text.
        """
        return list(
            self.exclude(**{field: ""})
            .values(field)
            .annotate(
                traces=Count("pk"),
                errors=Count("pk", filter=Q(error_count__gt=0)),
                mean_ns=Avg("duration_ns"),
            )
            .order_by("-traces", field)[:limit]
        )

    def overview(self, limit: int = 6, max_groups: int = 5000) -> dict:
        """Totals and the top services and workflows, from one scan grouped by both.

        Aggregating 100,000 traces costs SQLite ~40 ms a pass; three separate passes (totals,
        services, workflows) made the dashboard miss 150 ms. Services × workflows are few
        in practice; past ``max_groups`` it falls back to the separate queries.
        """
        groups = list(
            self.values("service_name", "workflow_name")
            .annotate(
                traces=Count("pk"),
                spans=Sum("span_count"),
                traces_with_errors=Count("pk", filter=Q(error_count__gt=0)),
                input_tokens=Sum("input_tokens"),
                output_tokens=Sum("output_tokens"),
                total_tokens=Sum("total_tokens"),
                cost=Sum("cost"),
                unpriced_spans=Sum("unpriced_count"),
                duration=Sum("duration_ns"),
            )
            .order_by()[: max_groups + 1]
        )
        if len(groups) > max_groups:
            return {
                "totals": self.totals(),
                "top_services": self.top("service_name", limit),
                "top_workflows": self.top("workflow_name", limit),
            }
        keys = ("traces", "spans", "traces_with_errors", "input_tokens", "output_tokens",
                "total_tokens", "cost", "unpriced_spans")  # fmt: skip
        totals = {key: sum(group[key] or 0 for group in groups) for key in keys}
        totals["cost"] = float(totals["cost"])
        return {
            "totals": totals,
            "top_services": _top(groups, "service_name", limit),
            "top_workflows": _top(groups, "workflow_name", limit),
        }

    def duration_percentile(self, fraction: float, *, count: int | None = None) -> float | None:
        """Duration (ns) at ``fraction`` of the selected traces, linearly interpolated.

        The same rule as PostgreSQL's ``percentile_cont`` and numpy's default, computed
        with two indexed ``ORDER BY duration`` look-ups so it is identical on SQLite.
        """
        ordered = self.order_by("duration_ns").values_list("duration_ns", flat=True)
        if count is None:  # callers that already counted pass it in
            count = self.count()
        if count == 0:
            return None
        rank = fraction * (count - 1)
        low_index = int(rank)
        values = list(ordered[low_index : low_index + 2])
        if len(values) == 1 or rank == low_index:
            return float(values[0])
        low, high = values
        return low + (high - low) * (rank - low_index)


def _top(groups: list[dict], field: str, limit: int) -> list[dict]:
    """Fold (service, workflow) groups onto one of the two columns, most traces first."""
    folded: dict[str, dict] = {}
    for group in groups:
        name = group[field]
        if not name:
            continue
        row = folded.setdefault(name, {field: name, "traces": 0, "errors": 0, "duration": 0})
        row["traces"] += group["traces"]
        row["errors"] += group["traces_with_errors"]
        row["duration"] += group["duration"] or 0
    ranked = sorted(folded.values(), key=lambda row: (-row["traces"], row[field]))[:limit]
    for row in ranked:
        row["mean_ns"] = row.pop("duration") / row["traces"]
    return ranked


class Trace(models.Model):
    trace_id = models.CharField(primary_key=True, max_length=32)
    service_name = models.CharField(max_length=255, blank=True, default="")
    root_span_name = models.CharField(max_length=1024, blank=True, default="")
    workflow_name = models.CharField(max_length=255, blank=True, default="")
    start_ns = models.BigIntegerField(default=0)
    end_ns = models.BigIntegerField(default=0)
    duration_ns = models.BigIntegerField(default=0)
    span_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cost = models.FloatField(default=0.0)
    # Spans with tokens that no price matched: the cost above leaves them out, and pages
    # say so rather than showing a total that looks complete.
    unpriced_count = models.PositiveIntegerField(default=0)
    # Distinct models any span of the trace used, sorted.
    model_names = models.JSONField(default=list, blank=True)
    session_id = models.CharField(max_length=255, blank=True, default="")
    user_id = models.CharField(max_length=255, blank=True, default="")
    first_seen = models.DateTimeField()
    last_updated = models.DateTimeField()

    objects = TraceQuerySet.as_manager()

    class Meta:
        indexes = [
            # The list, newest first, and every time window.
            models.Index(F("start_ns").desc(), name="trace_start_desc"),
            # Duration filters and percentiles (ORDER BY duration OFFSET k).
            models.Index(fields=["duration_ns"], name="trace_duration"),
            # Filters by service and by workflow, newest first within them.
            models.Index(fields=["service_name", "start_ns"], name="trace_service_start"),
            models.Index(fields=["workflow_name", "start_ns"], name="trace_workflow_start"),
            # The dashboard's one grouped pass (overview()): grouping in index order saves
            # sorting every trace; on 100,000 traces, 80 ms became 38 ms on SQLite.
            models.Index(fields=["service_name", "workflow_name"], name="trace_service_workflow"),
            # "Errors only" and the dashboard's recent errors.
            models.Index(
                fields=["start_ns"], condition=Q(error_count__gt=0), name="trace_errors_start"
            ),
            # Analytics (traces/analytics.py): the one grouped pass over a window's traces
            # reads every figure it needs from this index, never the trace rows (which carry
            # the model list as JSON). 100,000 traces on SQLite: ~190 ms from the rows,
            # ~65 ms from here. Its inserts land at the end (start order): no ingest cost
            # that bench/ingest.py can see.
            models.Index(
                fields=[
                    "start_ns",
                    "duration_ns",
                    "error_count",
                    "input_tokens",
                    "output_tokens",
                    "cost",
                    "unpriced_count",
                    "service_name",
                    "workflow_name",
                    "span_count",
                ],
                name="trace_analytics",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_name or self.root_span_name or 'trace'} {self.trace_id}"

    @property
    def duration_ms(self) -> float:
        return self.duration_ns / 1e6

    @property
    def start_time(self) -> datetime | None:
        return ns_to_datetime(self.start_ns)

    @property
    def end_time(self) -> datetime | None:
        return ns_to_datetime(self.end_ns)


class SpanQuerySet(models.QuerySet):
    def in_tree_order(self) -> SpanQuerySet:
        """Spans by start time: the order the tree and timeline are built from."""
        return self.order_by("start_ns", "span_id")


class Span(models.Model):
    class Status(models.IntegerChoices):
        UNSET = 0
        OK = 1
        ERROR = 2

    # No index of its own: the unique (trace, span_id) index and the search index below
    # both start with trace_id and serve "the spans of trace X".
    trace = models.ForeignKey(
        Trace, on_delete=models.CASCADE, related_name="spans", db_column="trace_id", db_index=False
    )
    span_id = models.CharField(max_length=16)
    parent_span_id = models.CharField(max_length=16, blank=True, default="")
    name = models.CharField(max_length=1024)
    # OTel SpanKind: internal, server, client, producer, consumer, unspecified.
    kind = models.CharField(max_length=16, default="internal")
    # What the span does for an LLM app: llm, tool, agent, retriever, embedding, chain, ...
    span_type = models.CharField(max_length=32, blank=True, default="")
    start_ns = models.BigIntegerField()
    end_ns = models.BigIntegerField()
    duration_ns = models.BigIntegerField()
    status_code = models.SmallIntegerField(choices=Status.choices, default=Status.UNSET)
    status_message = models.TextField(blank=True, default="")
    is_error = models.BooleanField(default=False)

    service_name = models.CharField(max_length=255, blank=True, default="")
    model = models.CharField(max_length=255, blank=True, default="")
    operation = models.CharField(max_length=64, blank=True, default="")
    provider = models.CharField(max_length=64, blank=True, default="")
    workflow_name = models.CharField(max_length=255, blank=True, default="")
    module_name = models.CharField(max_length=255, blank=True, default="")
    session_id = models.CharField(max_length=255, blank=True, default="")
    user_id = models.CharField(max_length=255, blank=True, default="")
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)

    class CostSource(models.TextChoices):
        NONE = "", "no tokens"
        SPAN = "span", "reported by the span"
        PRICE = "price", "tokens × price table"
        UNPRICED = "unpriced", "tokens without a known price"

    # NULL: no cost is known (not the same as a cost of 0): see cost_source for why.
    cost = models.FloatField(null=True, blank=True)
    currency = models.CharField(max_length=8, blank=True, default="")
    cost_source = models.CharField(
        max_length=8, choices=CostSource.choices, blank=True, default=CostSource.NONE
    )
    # The price a computed cost used. No index: only the cost explanation follows it, from
    # the span; an index would cost every ingested span for nothing.
    price = models.ForeignKey(
        "ModelPrice",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )

    attributes = models.JSONField(default=dict)
    events = models.JSONField(default=list)
    links = models.JSONField(default=list)
    resource_attributes = models.JSONField(default=dict)
    scope = models.JSONField(default=dict)

    objects = SpanQuerySet.as_manager()

    class Meta:
        constraints = [
            # A re-sent batch stores each span once; ingest upserts on this (last write wins).
            # Its index also serves "the spans of trace X".
            models.UniqueConstraint(fields=["trace", "span_id"], name="span_unique_in_trace"),
        ]
        indexes = [
            # Analytics (traces/rollups.py): building an hour's rollup, the partial hours at
            # a window's edges, and windows with a query read this index in start order,
            # never the ~2 KB span rows. Start order is what makes it cheap to keep up:
            # inserts land at its end. Its predecessor, in (name, model, duration) order,
            # answered the breakdowns by itself but cost SQLite ingest 27% (22,100 ->
            # 16,600 spans/s in bench/ingest.py); this one costs nothing measurable.
            models.Index(
                fields=[
                    "start_ns",
                    "name",
                    "model",
                    "span_type",
                    "duration_ns",
                    "is_error",
                    "cost_source",
                    "input_tokens",
                    "output_tokens",
                    "cost",
                    "trace",
                ],
                name="span_start_analytics",
            ),
            # Search's "some span of the trace" subqueries (kind:, span.duration:, span.error:,
            # model:) read only this index, not the ~2 KB span rows: on 1M spans, `model:x`
            # and `span(kind:llm AND span.duration:>3s)` went from ~1.2-1.4 s to ~135 ms.
            models.Index(
                fields=["trace", "span_type", "duration_ns", "is_error", "model"],
                name="span_search",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.span_id}"

    @property
    def duration_ms(self) -> float:
        return self.duration_ns / 1e6

    @property
    def start_time(self) -> datetime | None:
        return ns_to_datetime(self.start_ns)

    @property
    def end_time(self) -> datetime | None:
        return ns_to_datetime(self.end_ns)


class RollupHour(models.Model):
    """One hour of span start times, and whether its ``SpanRollup`` rows are current.

    Every write to spans bumps ``version`` for the hours it touches; a rollup built from
    version v is current while ``built_version == version`` (traces/rollups.py).
    """

    hour = models.BigIntegerField(primary_key=True)  # start_ns // 3,600 s in ns
    version = models.BigIntegerField(default=0)
    built_version = models.BigIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"hour {self.hour} v{self.version}"


class SpanRollup(models.Model):
    """The spans of one (name, model, type) that started in one hour, summed, with every
    duration kept (little-endian int64s) so that percentiles over many hours are exact."""

    hour = models.BigIntegerField()
    name = models.CharField(max_length=1024)
    model = models.CharField(max_length=255, blank=True, default="")
    span_type = models.CharField(max_length=32, blank=True, default="")
    calls = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    unpriced = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost = models.FloatField(default=0.0)
    durations = models.BinaryField()

    class Meta:
        # Its index serves the reads (a window's hours) and the rebuild's delete (one hour).
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "name", "model", "span_type"], name="span_rollup_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.model} hour {self.hour}"


class ModelPriceQuerySet(models.QuerySet):
    def newest_first(self) -> ModelPriceQuerySet:
        return self.order_by("pattern", "provider", "-valid_from")


class ModelPrice(models.Model):
    """What a model's tokens cost from a date on: the table computed span costs come from.

    ``pattern`` is a model name, or a glob where ``*`` matches anything
    (``gpt-4o-mini*`` covers ``gpt-4o-mini-2024-07-18``). Prices are per million tokens.
    Cache and reasoning prices left empty fall back to the input and output prices.
    """

    pattern = models.CharField(
        max_length=255, help_text="Model name, or a glob with * (gpt-4o-mini*). Case-insensitive."
    )
    provider = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="Prefer this row for spans of this provider (gen_ai.provider.name).",
    )
    input_per_million = models.DecimalField(max_digits=14, decimal_places=6)
    output_per_million = models.DecimalField(max_digits=14, decimal_places=6)
    cache_read_per_million = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, help_text="Empty: input price."
    )
    cache_write_per_million = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, help_text="Empty: input price."
    )
    reasoning_per_million = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, help_text="Empty: output price."
    )
    currency = models.CharField(max_length=8, default="USD")
    valid_from = models.DateField(help_text="Spans that started on or after this day (UTC).")
    source = models.CharField(
        max_length=255, blank=True, default="", help_text="Where the figures come from."
    )
    updated_at = models.DateTimeField(auto_now=True)

    objects = ModelPriceQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["pattern", "provider", "valid_from"], name="model_price_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pattern} since {self.valid_from:%Y-%m-%d}"


# --- Alerts -----------------------------------------------------------------------------
# Rules, their history and the evaluators' lease. Evaluation and the state machine live in
# traces/alerting.py; deliveries in traces/notify.py; docs/alerting.md describes both.


class AlertRuleQuerySet(models.QuerySet):
    def for_list(self) -> AlertRuleQuerySet:
        """Rules as the alerts page lists them: by name."""
        return self.order_by("name", "pk")

    def enabled(self) -> AlertRuleQuerySet:
        """Rules the evaluator looks at."""
        return self.filter(enabled=True)

    def firing(self, now: datetime) -> AlertRuleQuerySet:
        """Enabled rules firing at ``now`` and not muted: the count on the nav's badge."""
        return self.enabled().filter(state=AlertRule.State.FIRING).exclude(muted_until__gt=now)


class AlertRule(models.Model):
    """A threshold over the traces a search query selects, checked over a sliding window.

    ``threshold`` is in the metric's unit (``Metric.unit``): traces, percent, milliseconds,
    dollars or tokens. The fields below ``targets`` belong to the evaluator: forms never
    write them, except to start a changed rule again from OK.
    """

    class Metric(models.TextChoices):
        TRACES = "traces", "Trace count"
        ERRORS = "errors", "Error count"
        ERROR_RATE = "error_rate", "Error rate"
        P50 = "p50", "p50 duration"
        P95 = "p95", "p95 duration"
        P99 = "p99", "p99 duration"
        COST = "cost", "Total cost"
        TOKENS = "tokens", "Total tokens"
        EACH_TRACE = "each_trace", "Any single trace matching"

    class Comparator(models.TextChoices):
        GT = ">", ">"
        GTE = ">=", "≥"
        LT = "<", "<"
        LTE = "<=", "≤"

    class State(models.TextChoices):
        OK = "ok", "OK"
        FIRING = "firing", "Firing"
        RESOLVED = "resolved", "Resolved"
        BROKEN = "broken", "Broken"

    name = models.CharField(max_length=200)
    query = models.TextField(blank=True, default="", help_text="Search query; empty: all traces.")
    metric = models.CharField(max_length=16, choices=Metric.choices, default=Metric.TRACES)
    comparator = models.CharField(max_length=2, choices=Comparator.choices, default=Comparator.GT)
    threshold = models.FloatField(default=0.0)
    window_seconds = models.PositiveIntegerField(default=300)
    cooldown_seconds = models.PositiveIntegerField(default=300)
    enabled = models.BooleanField(default=True)
    # Muted rules are evaluated and keep their history, but nobody is told.
    muted_until = models.DateTimeField(null=True, blank=True)
    # [{"kind": "webhook" | "slack" | "email", "to": url-or-address}, ...]
    targets = models.JSONField(default=list, blank=True)

    state = models.CharField(max_length=16, choices=State.choices, default=State.OK)
    state_since = models.DateTimeField(null=True, blank=True)
    # Bumped by every transition and every edit: a transition is written only by the
    # evaluator that read the version it replaces (compare-and-set), so two evaluators
    # cannot both record, and both announce, the same one.
    version = models.PositiveIntegerField(default=0)
    last_value = models.FloatField(null=True, blank=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    # "Any single trace" rules: [trace_id, start_ns] of the traces already announced, kept
    # while they can still be in the window (bounded: alerting.MAX_REMEMBERED).
    fired_traces = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AlertRuleQuerySet.as_manager()

    def __str__(self) -> str:
        return self.name

    def is_muted(self, now: datetime) -> bool:
        return self.muted_until is not None and self.muted_until > now


class AlertEventQuerySet(models.QuerySet):
    def newest_first(self) -> AlertEventQuerySet:
        """The history, newest first, with each event's rule in the same query."""
        return self.select_related("rule").order_by("-at", "-pk")

    def undelivered(self) -> AlertEventQuerySet:
        """Events whose notifications no evaluator has taken yet, oldest first."""
        return self.filter(delivery=AlertEvent.Delivery.PENDING).order_by("pk")


class AlertEvent(models.Model):
    """One transition of a rule (or one matching trace, or a test), and what its
    notifications did. Rows are the history and the delivery outbox at once."""

    class Kind(models.TextChoices):
        FIRING = "firing", "Firing"
        RESOLVED = "resolved", "Resolved"
        BROKEN = "broken", "Broken"
        TEST = "test", "Test"

    class Delivery(models.TextChoices):
        PENDING = "pending", "waiting to be sent"
        SENDING = "sending", "being sent"
        SENT = "sent", "sent"
        PARTIAL = "partial", "some targets failed"
        FAILED = "failed", "failed"
        NONE = "none", "no targets"
        MUTED = "muted", "muted"
        COOLDOWN = "cooldown", "not sent: cooldown"
        EXPIRED = "expired", "not sent: too old"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    at = models.DateTimeField()
    value = models.FloatField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    # The rule as it was: the event keeps its meaning after the rule is edited.
    metric = models.CharField(max_length=16, blank=True, default="")
    comparator = models.CharField(max_length=2, blank=True, default="")
    query = models.TextField(blank=True, default="")
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    # "Any single trace" events: the trace; "N more traces" events leave it empty.
    trace_id = models.CharField(max_length=32, blank=True, default="")
    message = models.TextField(blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)
    delivery = models.CharField(max_length=16, choices=Delivery.choices, default=Delivery.NONE)
    # One entry per target: {"target", "kind", "ok", "status", "attempts", "error", "ms"}.
    deliveries = models.JSONField(default=list, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = AlertEventQuerySet.as_manager()

    class Meta:
        indexes = [
            # A rule's history, newest first (the rule page).
            models.Index(fields=["rule", "-at"], name="alert_event_rule_at"),
            # The alerts page's recent events across rules.
            models.Index(fields=["-at"], name="alert_event_at"),
            # The outbox: what is left to send (few rows, so a partial index).
            models.Index(
                fields=["id"], condition=Q(delivery="pending"), name="alert_event_pending"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rule_id} {self.kind} at {self.at:%Y-%m-%d %H:%M:%S}"


class AlertLease(models.Model):
    """Who evaluates the rules until when: one row, taken with a conditional UPDATE.

    The server's background task and ``msgtrace evaluate_alerts`` (cron) may both run; the
    one holding an unexpired lease evaluates, the other skips its turn.
    """

    name = models.CharField(primary_key=True, max_length=32)
    holder = models.CharField(max_length=128, blank=True, default="")
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.holder or 'free'} until {self.expires_at:%H:%M:%S}"


class ApiKeyQuerySet(models.QuerySet):
    def active(self) -> ApiKeyQuerySet:
        """Keys that still open the door: not revoked."""
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """A key ``mt_<prefix>_<secret>``; only its SHA-256 is stored, the key is shown once.

    ``prefix`` is public: it names the key in the admin and in logs, and finds the row to
    compare against. Keys are revoked (kept, with the time), not deleted, so the admin still
    shows what a key was after it stops working.
    """

    name = models.CharField(max_length=100, help_text="What uses this key, e.g. checkout-agent.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Written at most once a minute per key, off the request path (traces/keys.py).
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} (mt_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
