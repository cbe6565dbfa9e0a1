"""Alert rules: what each metric measures, the state machine, and the evaluators' lease.

One evaluation of a rule at ``now`` reads the traces its query selects that *started* in
``[now - window, now)`` from the trace summaries (the analytics page's rows and helpers,
so a p95 here is the p95 there), decides the rule's next state with ``decide`` (a pure
function of the rule, the figures and ``now``), and writes the result in one short
transaction with a compare-and-set on ``AlertRule.version``. Notifications leave after
that commit, outside any transaction: the events are an outbox that the evaluator then
claims one by one (``events_deliver``), so a transition is announced once even when two
evaluators run at the same moment.

Where the database is SQLite, the reads run without a write lock (``read_snapshot``) and
the writes take it for a millisecond or two, so ingest never waits on an evaluation.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    transaction,
)
from django.db.models import F, Q
from django.urls import reverse
from django.utils.http import urlencode

from search.compiler import compile_query
from search.parser import QueryError
from traces.analytics import read_snapshot
from traces.models import AlertEvent, AlertLease, AlertRule, Trace, datetime_to_ns
from traces.periodic import Periodic
from traces.templatetags.msgtrace import compact, duration, money

logger = logging.getLogger("msgtrace.alerts")

Metric = AlertRule.Metric
State = AlertRule.State
Kind = AlertEvent.Kind
Delivery = AlertEvent.Delivery

MIN_WINDOW = timedelta(minutes=1)
MAX_WINDOW = timedelta(hours=24)
MAX_COOLDOWN = timedelta(days=7)
# "Any single trace" rules: traces remembered as announced, per rule. A rule matching more
# traces than this within its window is better written as a trace count.
MAX_REMEMBERED = 5000
# ...and at most this many events (one per trace) per evaluation; the rest become one
# "N more traces" event, so a burst cannot send thousands of notifications.
MAX_TRACE_EVENTS = 10
# How far back such a rule looks for traces it has not announced, beyond its window, when
# evaluations were further apart than the window (a slow cron, a restart).
MAX_CATCH_UP = timedelta(hours=1)
# Notifications not sent within this long (the evaluator was down) are dropped, not sent late.
MAX_PENDING_AGE = timedelta(hours=1)
LEASE_NAME = "evaluator"
PERCENTILES = {Metric.P50: 0.50, Metric.P95: 0.95, Metric.P99: 0.99}
UNITS = {
    Metric.TRACES: "traces", Metric.ERRORS: "traces", Metric.ERROR_RATE: "%",
    Metric.P50: "ms", Metric.P95: "ms", Metric.P99: "ms", Metric.COST: "USD",
    Metric.TOKENS: "tokens", Metric.EACH_TRACE: "traces",
}  # fmt: skip
_COMPARE = {
    ">": lambda value, threshold: value > threshold,
    ">=": lambda value, threshold: value >= threshold,
    "<": lambda value, threshold: value < threshold,
    "<=": lambda value, threshold: value <= threshold,
}


# --- Units: what forms accept and what pages and payloads show ---------------------------

_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)", re.IGNORECASE)
_SPAN_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_span(text: str) -> timedelta | None:
    """``90s``, ``5m``, ``1.5h``, ``1d`` as a timedelta; None if it is not one."""
    match = _SPAN.fullmatch(text.strip())
    if not match:
        return None
    amount, unit = match.groups()
    # Capped (at ~300 years) so that any typed length is a timedelta; forms check the range.
    return timedelta(seconds=min(round(float(amount) * _SPAN_UNITS[unit.lower()]), 10**10))


def span_text(seconds: int) -> str:
    """Seconds in the largest unit that divides them: ``300`` is ``5m``, ``90`` is ``90s``."""
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"
_DURATION = re.compile(_NUMBER + r"\s*(ms|s|m|h)?", re.IGNORECASE)
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_TOKENS = re.compile(_NUMBER + r"\s*([km])?", re.IGNORECASE)


def parse_threshold(metric: str, text: str) -> float:
    """A threshold as typed, in the metric's unit; ``ValueError`` says what was expected.

    Durations take a unit (``800ms``, ``2s``, ``1.5m``; a bare number is milliseconds),
    the error rate a percentage (``5`` or ``5%``), cost dollars (``0.50`` or ``$0.50``),
    tokens an optional ``k`` or ``M``.
    """
    raw = text.strip().replace(",", "").replace("_", "")
    value = _threshold(metric, raw)
    if value > 1e15:  # also keeps infinity (not JSON) out of payloads
        raise ValueError("is too large")
    return value


def _threshold(metric: str, raw: str) -> float:
    if metric in PERCENTILES:
        match = _DURATION.fullmatch(raw)
        if not match:
            raise ValueError("must be a duration such as 800ms, 2s or 1.5m")
        return float(match.group(1)) * _DURATION_MS[(match.group(2) or "ms").lower()]
    if metric == Metric.ERROR_RATE:
        match = re.fullmatch(_NUMBER + r"\s*%?", raw)
        if not match:
            raise ValueError("must be a percentage such as 5 or 2.5%")
        value = float(match.group(1))
        if value > 100:
            raise ValueError("must be a percentage from 0 to 100")
        return value
    if metric == Metric.COST:
        match = re.fullmatch(r"\$?\s*" + _NUMBER, raw)
        if not match:
            raise ValueError("must be an amount in dollars such as 0.50 or $12")
        return float(match.group(1))
    if metric == Metric.TOKENS:
        match = _TOKENS.fullmatch(raw)
        if not match:
            raise ValueError("must be a number of tokens such as 50000, 50k or 1.5M")
        scale = {"k": 1e3, "m": 1e6}.get((match.group(2) or "").lower(), 1)
        return float(match.group(1)) * scale
    match = re.fullmatch(_NUMBER, raw)
    if not match:
        raise ValueError("must be a number of traces such as 10")
    return float(match.group(1))


def value_text(metric: str, value: float | None) -> str:
    """A value (or threshold) in the metric's unit, as pages and notifications show it."""
    if value is None:
        return "no data"
    if metric in PERCENTILES:
        return duration(value * 1e6)
    if metric == Metric.ERROR_RATE:
        return f"{value:.1f}%" if value % 1 else f"{value:.0f}%"
    if metric == Metric.COST:
        return money(value)
    if metric == Metric.TOKENS:
        return compact(value)
    return f"{value:g}"


def threshold_input(metric: str, value: float) -> str:
    """A stored threshold as the form shows it again (parse_threshold reads it back)."""
    if metric in PERCENTILES:
        return f"{value / 1000:g}s" if value >= 1000 and value % 1000 == 0 else f"{value:g}ms"
    if metric == Metric.ERROR_RATE:
        return f"{value:g}%"
    return f"{value:g}"


def condition_text(rule: AlertRule) -> str:
    """``p95 duration > 2 s over 5m``: the rule's condition in one line."""
    window = span_text(rule.window_seconds)
    if rule.metric == Metric.EACH_TRACE:
        return f"each matching trace, checked over {window}"
    label = Metric(rule.metric).label
    shown = value_text(rule.metric, rule.threshold)
    return f"{label} {rule.get_comparator_display()} {shown} over {window}"


# --- Measuring -----------------------------------------------------------------------------


@dataclass
class Measurement:
    """A rule's figures at one moment. ``value`` is in the metric's unit; None means no
    data (a percentile or error rate of no traces), which never meets a threshold."""

    since: datetime
    until: datetime
    traces: int = 0
    value: float | None = None
    unpriced_spans: int = 0
    # "Any single trace" rules: (trace id, start ns) matching and not yet announced, in
    # start order, and the range that was searched for them.
    new_traces: list[tuple[str, int]] = field(default_factory=list)
    scanned_since: datetime | None = None
    # The first ``MAX_TRACE_EVENTS`` new traces' facts (``trace_facts``), by id.
    facts: dict[str, dict] = field(default_factory=dict)


def query_problem(exc: QueryError) -> str:
    """A query's error as one line that says where (the parser's own "at N" when it has one)."""
    where = f" at {exc.position}"
    return exc.message if exc.message.endswith(where) else exc.message + where


def rule_query(rule: AlertRule, now: datetime) -> Q:
    """The rule's query compiled at ``now``; raises ``QueryError`` (the rule is broken)."""
    return compile_query(rule.query, now=now)


def measure(rule: AlertRule, now: datetime, query: Q | None = None) -> Measurement:
    """The rule's metric over ``[now - window, now)``, by trace start time."""
    query = rule_query(rule, now) if query is None else query
    since = now - timedelta(seconds=rule.window_seconds)
    result = Measurement(since=since, until=now)
    traces = Trace.objects.filter(query)
    window = traces.started_between(since, now)
    with read_snapshot():
        if rule.metric == Metric.EACH_TRACE:
            result.traces = window.count()
            result.value = float(result.traces)
            result.scanned_since = _scan_since(rule, now, since)
            result.new_traces = _unannounced(
                rule, traces.started_between(result.scanned_since, now)
            )
            shown = [trace_id for trace_id, _ in result.new_traces[:MAX_TRACE_EVENTS]]
            result.facts = {t.pk: trace_facts(t) for t in Trace.objects.filter(pk__in=shown)}
            return result
        totals = window.totals()
        result.traces = count = totals["traces"]
        result.unpriced_spans = totals["unpriced_spans"] or 0
        if rule.metric == Metric.TRACES:
            result.value = float(count)
        elif rule.metric == Metric.ERRORS:
            result.value = float(totals["traces_with_errors"])
        elif rule.metric == Metric.ERROR_RATE:
            result.value = totals["traces_with_errors"] / count * 100 if count else None
        elif rule.metric == Metric.COST:
            result.value = float(totals["cost"] or 0.0)
        elif rule.metric == Metric.TOKENS:
            result.value = float(totals["total_tokens"] or 0)
        else:
            ns = window.duration_percentile(PERCENTILES[rule.metric], count=count)
            result.value = None if ns is None else ns / 1e6
    return result


def _scan_since(rule: AlertRule, now: datetime, since: datetime) -> datetime:
    """Back to the previous evaluation when that is further back than the window, so no
    start time falls between two evaluations (bounded by ``MAX_CATCH_UP``)."""
    previous = rule.last_evaluated_at
    if previous is None or previous >= since:
        return since
    return max(previous, since - MAX_CATCH_UP)


def _unannounced(rule: AlertRule, candidates) -> list[tuple[str, int]]:
    announced = {trace_id for trace_id, _ in rule.fired_traces}
    rows = candidates.order_by("start_ns", "trace_id").values_list("pk", "start_ns")
    limit = MAX_REMEMBERED + len(announced)
    return [(pk, start) for pk, start in rows[:limit] if pk not in announced]


def holds(comparator: str, value: float | None, threshold: float) -> bool:
    return value is not None and _COMPARE[comparator](value, threshold)


# --- The state machine ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one evaluation writes: rule fields, and events when it is a transition."""

    fields: dict
    events: list[dict] = field(default_factory=list)
    # Transitions (and changes to the announced traces) are compare-and-set writes that
    # bump the version; a plain refresh of the last value is not.
    transition: bool = False


def in_cooldown(rule: AlertRule, now: datetime) -> bool:
    """Fired less than ``cooldown`` ago: it may not fire (announce) again yet."""
    last = rule.last_fired_at
    return last is not None and now < last + timedelta(seconds=rule.cooldown_seconds)


def decide(
    rule: AlertRule, now: datetime, measured: Measurement | None, error: str = ""
) -> Outcome:
    """The rule's next state. ``error``: its query no longer compiles (it is broken).

    ok/resolved → firing when the condition holds and the cooldown since the last firing
    has passed; firing → resolved when it no longer holds; any → broken on an error, and
    broken → ok once the query compiles again (silently: nothing was wrong with the traces).
    "Any single trace" rules fire once for each matching trace not yet announced, and
    resolve when no matching trace is left in the window.
    """
    fields: dict = {"last_evaluated_at": now}
    if error:
        fields["last_value"] = None
        if rule.state == State.BROKEN and rule.error == error:
            return Outcome(fields)
        fields.update(state=State.BROKEN, state_since=now, error=error)
        event = _event(rule, Kind.BROKEN, now, None, message=f"Rule broken: {error}")
        return Outcome(fields, [event], transition=True)
    fields.update(last_value=measured.value, error="")
    state, transition = rule.state, False
    if state == State.BROKEN:
        state, transition = State.OK, True
        fields.update(state=State.OK, state_since=now)
    events: list[dict] = []
    if rule.metric == Metric.EACH_TRACE:
        kept = [
            pair
            for pair in rule.fired_traces
            if measured.scanned_since is None or pair[1] >= datetime_to_ns(measured.scanned_since)
        ]
        if measured.new_traces:
            cooling = in_cooldown(rule, now)
            events = _trace_events(rule, now, measured, cooling=cooling)
            kept = (kept + [list(pair) for pair in measured.new_traces])[-MAX_REMEMBERED:]
            if not cooling:
                fields["last_fired_at"] = now
            if state != State.FIRING:
                state = State.FIRING
                fields.update(state=state, state_since=now)
        elif state == State.FIRING and not measured.traces:
            state = State.RESOLVED
            fields.update(state=state, state_since=now)
            message = f"Resolved: no trace in the last {span_text(rule.window_seconds)} matches"
            events.append(_event(rule, Kind.RESOLVED, now, measured, message=message))
        if kept != rule.fired_traces:
            fields["fired_traces"] = kept
            transition = True
        return Outcome(fields, events, transition=transition or bool(events))
    met = holds(rule.comparator, measured.value, rule.threshold)
    if met and state != State.FIRING and not in_cooldown(rule, now):
        fields.update(state=State.FIRING, state_since=now, last_fired_at=now)
        events.append(_event(rule, Kind.FIRING, now, measured, message=_summary(rule, measured)))
    elif not met and state == State.FIRING:
        fields.update(state=State.RESOLVED, state_since=now)
        message = f"Resolved: {_summary(rule, measured)}"
        events.append(_event(rule, Kind.RESOLVED, now, measured, message=message))
    return Outcome(fields, events, transition=transition or bool(events))


def _summary(rule: AlertRule, measured: Measurement) -> str:
    label = Metric(rule.metric).label
    shown = value_text(rule.metric, measured.value)
    limit = f"{rule.get_comparator_display()} {value_text(rule.metric, rule.threshold)}"
    text = f"{label} {shown} (threshold {limit}) over the last {span_text(rule.window_seconds)}"
    if rule.metric == Metric.COST and measured.unpriced_spans:
        text += f"; {measured.unpriced_spans} unpriced spans not counted"
    return text


def _event(
    rule: AlertRule, kind: str, now: datetime, measured: Measurement | None, **extra
) -> dict:
    since = measured.since if measured else now - timedelta(seconds=rule.window_seconds)
    detail = {}
    if measured is not None:
        detail = {"traces": measured.traces, "unpriced_spans": measured.unpriced_spans}
    return {
        "kind": kind, "at": now, "value": measured.value if measured else None,
        "threshold": None if rule.metric == Metric.EACH_TRACE else rule.threshold,
        "metric": rule.metric, "comparator": rule.comparator, "query": rule.query,
        "window_start": since, "window_end": now, "detail": detail, **extra,
    }  # fmt: skip


def _trace_events(
    rule: AlertRule, now: datetime, measured: Measurement, *, cooling: bool
) -> list[dict]:
    """One firing event per new trace, up to ``MAX_TRACE_EVENTS``; the rest as one more."""
    shown = [trace_id for trace_id, _ in measured.new_traces[:MAX_TRACE_EVENTS]]
    events = []
    for trace_id in shown:
        facts = measured.facts.get(trace_id)
        if facts is None:
            continue  # deleted since
        name = facts["name"] or "(unnamed)"
        detail = {"traces": measured.traces, "trace": facts}
        matching = f" matches {rule.query}" if rule.query.strip() else ""
        event = _event(
            rule,
            Kind.FIRING,
            now,
            measured,
            trace_id=trace_id,
            detail=detail,
            message=f"Trace {name}{matching}",
        )
        events.append(event)
    more = len(measured.new_traces) - len(shown)
    if more > 0:
        message = f"{more} more matching trace{'s' if more != 1 else ''}"
        detail = {"traces": measured.traces, "more": more}
        events.append(_event(rule, Kind.FIRING, now, measured, detail=detail, message=message))
    for event in events:
        event["cooling"] = cooling
    return events


def trace_facts(trace: Trace) -> dict:
    """A trace as a notification shows it: plain values only."""
    return {
        "trace_id": trace.trace_id,
        "name": trace.workflow_name or trace.root_span_name,
        "service": trace.service_name,
        "started_at": trace.start_time.isoformat().replace("+00:00", "Z"),
        "duration_ms": round(trace.duration_ns / 1e6, 3),
        "spans": trace.span_count,
        "errors": trace.error_count,
        "total_tokens": trace.total_tokens,
        "cost": trace.cost,
    }


def delivery_for(rule: AlertRule, now: datetime, *, cooling: bool = False) -> str:
    """Whether a new event's notifications are to be sent, and if not, why."""
    if rule.is_muted(now):
        return Delivery.MUTED
    if cooling:
        return Delivery.COOLDOWN
    if not rule.targets:
        return Delivery.NONE
    return Delivery.PENDING


def rule_apply(rule: AlertRule, outcome: Outcome, now: datetime) -> list[AlertEvent] | None:
    """Write an outcome; None when the rule changed since it was read (another evaluator
    recorded this transition, or someone edited the rule): then nothing is written."""
    current = AlertRule.objects.filter(pk=rule.pk, version=rule.version)
    if not outcome.transition:
        current.update(**outcome.fields)
        return []
    with transaction.atomic():
        if not current.update(**outcome.fields, version=F("version") + 1):
            return None
        events = [
            AlertEvent(
                rule=rule,
                delivery=delivery_for(rule, now, cooling=fields.pop("cooling", False)),
                **fields,
            )
            for fields in outcome.events
        ]
        return AlertEvent.objects.bulk_create(events)


def rule_evaluate(rule: AlertRule, *, now: datetime) -> list[AlertEvent] | None:
    """Measure, decide and write one rule; the events it recorded (None: lost the race)."""
    try:
        query = rule_query(rule, now)
    except QueryError as exc:
        error = f"the query no longer parses: {query_problem(exc)}"
        return rule_apply(rule, decide(rule, now, None, error=error), now)
    try:
        measured = measure(rule, now, query)
    except DataError as exc:
        # The query compiles but the database refuses what it asks (PostgreSQL and a
        # malformed regular expression): a problem of the rule, not of the moment.
        error = f"the database refused the query: {str(exc).strip().splitlines()[0][:200]}"
        return rule_apply(rule, decide(rule, now, None, error=error), now)
    return rule_apply(rule, decide(rule, now, measured), now)


# --- Edits -----------------------------------------------------------------------------------

# Changing any of these starts the rule again from OK: its state was about another condition.
RESTART_FIELDS = ("query", "metric", "comparator", "threshold", "window_seconds", "enabled")


def alert_rule_save(*, rule: AlertRule | None, values: dict, now: datetime) -> AlertRule:
    """Create a rule, or update one from form values (``AlertRuleForm.values``).

    An update bumps the version, so an evaluation that read the rule before the edit
    writes nothing; one that changes the condition also resets the state (silently).
    """
    if rule is None:
        return AlertRule.objects.create(**values, state_since=now)
    updates = {**values, "updated_at": now}
    if any(getattr(rule, name) != values[name] for name in RESTART_FIELDS if name in values):
        updates.update(
            state=State.OK,
            state_since=now,
            error="",
            last_value=None,
            last_evaluated_at=None,
            last_fired_at=None,
            fired_traces=[],
        )
    AlertRule.objects.filter(pk=rule.pk).update(**updates, version=F("version") + 1)
    rule.refresh_from_db()
    return rule


def alert_rule_mute(*, rule: AlertRule, until: datetime | None) -> None:
    """Mute a rule until a moment (None: unmute). It keeps being evaluated meanwhile."""
    AlertRule.objects.filter(pk=rule.pk).update(muted_until=until)
    rule.muted_until = until


# --- Links ------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def traces_path(event: AlertEvent) -> str:
    """The traces an event is about, in the trace list (or the one trace)."""
    if event.trace_id:
        return reverse("traces:detail", args=[event.trace_id])
    q = event.query.strip()
    if event.metric in (Metric.ERRORS, Metric.ERROR_RATE):
        q = f"({q}) error:true" if q else "error:true"
    params = {"q": q} if q else {}
    if event.window_start and event.window_end:
        params.update(since=_iso(event.window_start), until=_iso(event.window_end))
    sort = {Metric.COST: "-cost", Metric.TOKENS: "-tokens"}.get(event.metric)
    if event.metric in PERCENTILES:
        sort = "-duration"
    if sort:
        params["sort"] = sort
    return f"{reverse('traces:list')}?{urlencode(params)}" if params else reverse("traces:list")


def absolute(path: str) -> str:
    """A link for notifications read outside msgtrace (``MSGTRACE_BASE_URL``)."""
    return settings.MSGTRACE_BASE_URL.rstrip("/") + path


# --- The lease --------------------------------------------------------------------------------


def default_holder(kind: str) -> str:
    """Who is evaluating, as the lease row and the logs show it."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def lease_acquire(*, holder: str, now: datetime, seconds: float) -> bool:
    """Take or renew the evaluators' lease until ``now + seconds``; False if another holds it.

    One conditional UPDATE (ours already, or expired): whichever database, exactly one of
    two evaluators asking at once gets a row back.
    """
    until = now + timedelta(seconds=seconds)
    free = Q(holder=holder) | Q(expires_at__lte=now)
    lease = AlertLease.objects.filter(free, name=LEASE_NAME)
    try:
        if lease.update(holder=holder, expires_at=until):
            return True
        if AlertLease.objects.filter(name=LEASE_NAME).exists():
            return False
        with transaction.atomic():
            AlertLease.objects.create(name=LEASE_NAME, holder=holder, expires_at=until)
        return True
    except IntegrityError:
        return False  # another evaluator created the row first: it holds the lease
    except DatabaseError:
        # A busy database (SQLite's lock held past the timeout): skip this turn.
        logger.warning("alerts: could not take the evaluation lease; skipping this turn")
        return False


def lease_release(*, holder: str, now: datetime) -> None:
    """Give the lease up (a cron run that is done), so the next evaluator need not wait."""
    AlertLease.objects.filter(name=LEASE_NAME, holder=holder).update(expires_at=now)


def lease_holder(now: datetime) -> AlertLease | None:
    """The unexpired lease, if any: who evaluates right now."""
    return AlertLease.objects.filter(name=LEASE_NAME, expires_at__gt=now).first()


# --- A run: every rule, then the notifications --------------------------------------------------


@dataclass
class RunResult:
    held: bool
    rules: int = 0
    failed: int = 0  # rules whose evaluation failed (a database error): retried next run
    events: list[AlertEvent] = field(default_factory=list)
    delivered: list[AlertEvent] = field(default_factory=list)
    holder: str = ""


def alerts_run(
    *,
    now: datetime,
    holder: str,
    lease_seconds: float,
    release: bool = False,
    publish: Callable[..., None] | None = None,
    deliver: Callable[[AlertEvent], None] | None = None,
) -> RunResult:
    """Evaluate every enabled rule at ``now`` and send what the transitions owe, if this
    evaluator holds the lease (else nothing, with ``held=False``).

    ``publish(alerts=[...])`` tells open pages (``traces.broadcast.alerts_changed``);
    ``deliver(event)`` sends one event's notifications (``traces.notify.event_deliver``).
    The lease is renewed between steps, on the clock that started at ``now``.
    """
    from traces import notify

    deliver = deliver or notify.event_deliver
    started = time.monotonic()

    renewed = [-lease_seconds]  # when the lease was last taken, on the monotonic clock

    def renew() -> bool:
        # A write only when a quarter of the lease has gone: no other evaluator can have
        # taken an unexpired lease meanwhile, and SQLite is spared a write per rule.
        elapsed = time.monotonic() - started
        if elapsed - renewed[0] < lease_seconds / 4:
            return True
        held = lease_acquire(
            holder=holder, now=now + timedelta(seconds=elapsed), seconds=lease_seconds
        )
        if held:
            renewed[0] = elapsed
        return held

    result = RunResult(held=renew(), holder=holder)
    if not result.held:
        return result
    try:
        for rule in AlertRule.objects.enabled().order_by("pk"):
            if not renew():
                logger.warning("alerts: lost the evaluation lease to another evaluator")
                break
            result.rules += 1
            try:
                events = rule_evaluate(rule, now=now)
            except DatabaseError:
                result.failed += 1
                logger.exception("alerts: could not evaluate rule %s (%s)", rule.pk, rule.name)
                continue
            if events:
                result.events += events
                for event in events:
                    event.rule = rule
        if publish is not None and result.events:
            publish(alerts=announcements(result.events, now=now))
        result.delivered = events_deliver(now=now, deliver=deliver, renew=renew)
        if publish is not None and result.delivered:
            publish(alerts=[{"kind": "delivered", "event_ids": [e.pk for e in result.delivered]}])
    finally:
        if release:
            lease_release(holder=holder, now=now + timedelta(seconds=time.monotonic() - started))
    return result


def events_deliver(
    *, now: datetime, deliver: Callable[[AlertEvent], None], renew: Callable[[], bool]
) -> list[AlertEvent]:
    """Send the notifications of every pending event, each claimed first by a conditional
    UPDATE so that only one evaluator sends it; too old ones are dropped."""
    AlertEvent.objects.undelivered().filter(at__lt=now - MAX_PENDING_AGE).update(
        delivery=Delivery.EXPIRED
    )
    sent = []
    for event in AlertEvent.objects.undelivered().select_related("rule")[:200]:
        if not renew():
            break
        claimed = AlertEvent.objects.filter(pk=event.pk, delivery=Delivery.PENDING).update(
            delivery=Delivery.SENDING
        )
        if not claimed:
            continue  # another evaluator took it
        try:
            deliver(event)
        except Exception:  # one bad event must not hold up the others
            logger.exception("alerts: could not deliver event %s", event.pk)
            AlertEvent.objects.filter(pk=event.pk).update(delivery=Delivery.FAILED)
            continue
        sent.append(event)
    return sent


def announcements(events: Iterable[AlertEvent], *, now: datetime) -> list[dict]:
    """What open pages are told of new events (plain values): toasts and the badge."""
    firing = AlertRule.objects.firing(now).count()
    told = []
    for event in events:
        if event.kind == Kind.TEST or event.delivery in (Delivery.MUTED, Delivery.COOLDOWN):
            continue
        told.append(
            {
                "kind": event.kind, "event_id": event.pk, "rule_id": event.rule_id,
                "rule_name": event.rule.name, "message": event.message, "firing": firing,
            }
        )  # fmt: skip
    if not told:  # muted transitions still change what the badge counts
        told.append({"kind": "badge", "firing": firing})
    return told


# --- In the server: a thread, as retention's -------------------------------------------------


class Evaluator(Periodic):
    """Runs ``alerts_run`` every ``interval`` seconds in ``msgtrace start``
    (traces/periodic.py), keeping its connection between runs. ``clock`` gives "now";
    tests pass their own.
    """

    name = "alerts"
    failure = "alerts: evaluation failed"
    logger = logger
    keep_connection = True

    def __init__(
        self,
        interval: float,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        run: Callable[..., object] = alerts_run,
        publish: Callable[..., None] | None = None,
    ) -> None:
        self.interval, self.clock, self.run = interval, clock, run
        self.publish = publish
        self.holder = default_holder("server")
        # Longer than a run between two renewals, so the lease never lapses while this
        # server is alive; after a crash, cron takes over within this.
        self.lease_seconds = 2 * interval + 60
        super().__init__(interval)

    def tick(self) -> None:
        self.run(
            now=self.clock(),
            holder=self.holder,
            lease_seconds=self.lease_seconds,
            publish=self.publish,
        )


def alerts_start(interval: int) -> Evaluator | None:
    """Start evaluating every ``MSGTRACE_ALERT_INTERVAL`` seconds (0: not in this server)."""
    if interval <= 0:
        return None
    from traces import broadcast

    return Evaluator(interval, publish=broadcast.alerts_changed).start()
