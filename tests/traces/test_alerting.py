"""Alert rules: each metric over fixture traces on a controlled clock, the state machine,
cooldown, broken rules, "any single trace" rules, the lease and two evaluators at once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ingest.otlp import decode_protobuf, to_params
from ingest.writer import spans_ingest
from tests import otlp
from tests.receiver import Receiver
from traces import alerting
from traces.alerting import (
    Evaluator,
    alert_rule_save,
    alerts_run,
    decide,
    lease_acquire,
    lease_release,
    measure,
    parse_span,
    parse_threshold,
    rule_evaluate,
    value_text,
)
from traces.models import AlertEvent, AlertRule, Trace, datetime_to_ns

# The controlled clock: every test's "now".
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def trace(
    started: datetime,
    *,
    ms: float = 100,
    errors: int = 0,
    cost: float = 0.0,
    tokens: int = 0,
    unpriced: int = 0,
    service: str = "shop",
    name: str = "answer",
) -> Trace:
    """A trace summary row, as ingest leaves it (alerts read only these)."""
    start = datetime_to_ns(started)
    return Trace.objects.create(
        trace_id=otlp.new_trace_id(), service_name=service, workflow_name=name,
        root_span_name=name, start_ns=start, end_ns=start + int(ms * 1e6),
        duration_ns=int(ms * 1e6), span_count=1, error_count=errors, cost=cost,
        total_tokens=tokens, input_tokens=tokens, unpriced_count=unpriced,
        first_seen=started, last_updated=started,
    )  # fmt: skip


def rule(**fields) -> AlertRule:
    values = {
        "name": "Checkout errors", "query": "service:shop", "metric": "errors",
        "comparator": ">", "threshold": 0, "window_seconds": 300, "cooldown_seconds": 0,
        **fields,
    }  # fmt: skip
    return AlertRule.objects.create(**values)


def run(at: datetime = NOW, **options):
    options.setdefault("deliver", lambda event: None)
    return alerts_run(now=at, holder="test", lease_seconds=60, release=True, **options)


def events(of: AlertRule) -> list[tuple[str, float | None]]:
    return list(of.events.order_by("pk").values_list("kind", "value"))


@pytest.fixture
def shop(db):
    """Five traces in the last five minutes (two with errors), and some just outside."""
    durations = [100, 200, 300, 400, 500]
    for index, ms in enumerate(durations):
        trace(NOW - timedelta(seconds=30 + 50 * index), ms=ms, errors=index % 2,
              cost=0.10 * (index + 1), tokens=1000 * (index + 1), unpriced=index == 4)  # fmt: skip
    trace(NOW - timedelta(minutes=5), ms=600)  # exactly the window's start: inside
    trace(NOW - timedelta(minutes=5, microseconds=1), ms=9000, errors=3)  # just before: outside
    trace(NOW, ms=9000, errors=3)  # exactly now: the window is [now - 5m, now)
    trace(NOW - MINUTE, ms=9000, errors=1, service="other")  # another service


# --- Metrics ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("traces", 6),
        ("errors", 2),
        ("error_rate", 2 / 6 * 100),
        ("p50", 350.0),  # 100..600 ms: between 300 and 400
        ("p95", 575.0),
        ("p99", 595.0),
        ("cost", 0.10 + 0.20 + 0.30 + 0.40 + 0.50),
        ("tokens", 15000),
        ("each_trace", 6),
    ],
)
def test_each_metric_reads_the_traces_that_started_in_the_window(shop, metric, expected):
    measured = measure(rule(metric=metric), NOW)
    assert measured.traces == 6
    assert measured.value == pytest.approx(expected)


def test_percentiles_are_the_analytics_pages_percentiles(shop):
    window = Trace.objects.filter(service_name="shop").started_between(NOW - 5 * MINUTE, NOW)
    for metric, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        expected = window.duration_percentile(fraction) / 1e6
        assert measure(rule(metric=metric), NOW).value == expected


def test_the_cost_notes_the_unpriced_spans_it_could_not_count(shop):
    measured = measure(rule(metric="cost"), NOW)
    assert measured.unpriced_spans == 1
    outcome = decide(rule(metric="cost", threshold=1), NOW, measured)
    assert "1 unpriced spans not counted" in outcome.events[0]["message"]


def test_no_traces_is_no_data_for_rates_and_percentiles_but_zero_for_counts(db):
    assert measure(rule(metric="traces"), NOW).value == 0
    assert measure(rule(metric="cost"), NOW).value == 0
    assert measure(rule(metric="error_rate"), NOW).value is None
    assert measure(rule(metric="p95"), NOW).value is None
    # No data never meets a threshold, whichever way it points.
    assert not alerting.holds("<", None, 10)


def test_a_trace_count_below_a_threshold_watches_for_traffic_stopping(db):
    silence = rule(name="No checkouts", metric="traces", comparator="<", threshold=1)
    run()
    assert events(silence) == [("firing", 0.0)]


def test_thresholds_and_windows_are_read_in_the_units_people_type():
    assert parse_threshold("p95", "2s") == 2000
    assert parse_threshold("p95", "800ms") == 800
    assert parse_threshold("p95", "1.5m") == 90_000
    assert parse_threshold("p95", "250") == 250
    assert parse_threshold("error_rate", "5%") == 5
    assert parse_threshold("cost", "$0.50") == 0.5
    assert parse_threshold("tokens", "1.5M") == 1_500_000
    assert parse_threshold("tokens", "50k") == 50_000
    for metric, text in (("p95", "fast"), ("error_rate", "120"), ("cost", "1e9"), ("traces", "")):
        with pytest.raises(ValueError):
            parse_threshold(metric, text)
    assert parse_span("90s") == timedelta(seconds=90)
    assert parse_span("24h") == timedelta(days=1)
    assert parse_span("5 minutes") is None
    assert value_text("p95", 2450) == "2.45 s"
    assert value_text("error_rate", 7.5) == "7.5%"
    assert value_text("cost", 1.234) == "$1.23"


# --- The state machine ----------------------------------------------------------------------


def test_a_rule_fires_once_stays_quiet_while_firing_and_resolves_once(db):
    watched = rule()
    trace(NOW - MINUTE, errors=1)
    first = run(NOW)
    assert [event.kind for event in first.events] == ["firing"]
    watched.refresh_from_db()
    assert (watched.state, watched.last_value, watched.last_fired_at) == ("firing", 1.0, NOW)
    run(NOW + MINUTE)  # still true: no second notification
    run(NOW + 3 * MINUTE)
    assert events(watched) == [("firing", 1.0)]
    resolved = run(NOW + 5 * MINUTE)  # the error trace left the window
    assert [event.kind for event in resolved.events] == ["resolved"]
    run(NOW + 6 * MINUTE)
    watched.refresh_from_db()
    assert watched.state == "resolved"
    assert events(watched) == [("firing", 1.0), ("resolved", 0.0)]
    firing = watched.events.get(kind="firing")
    assert (firing.threshold, firing.window_start, firing.window_end) == (0, NOW - 5 * MINUTE, NOW)
    assert firing.message == "Error count 1 (threshold > 0) over the last 5m"
    # The history links to the traces it is about: the query, errors only, the window.
    assert alerting.traces_path(firing) == (
        "/traces?q=%28service%3Ashop%29+error%3Atrue"
        "&since=2026-03-01T11%3A55%3A00Z&until=2026-03-01T12%3A00%3A00Z"
    )


def test_cooldown_holds_back_a_second_firing_until_it_has_passed(db):
    flappy = rule(cooldown_seconds=600, window_seconds=60)
    trace(NOW - timedelta(seconds=10), errors=1)
    run(NOW)  # fires
    run(NOW + 2 * MINUTE)  # resolves
    trace(NOW + 3 * MINUTE, errors=1)
    run(NOW + 3 * MINUTE + timedelta(seconds=5))  # true again, within the cooldown
    flappy.refresh_from_db()
    assert flappy.state == "resolved"
    assert [kind for kind, _ in events(flappy)] == ["firing", "resolved"]
    trace(NOW + 10 * MINUTE, errors=1)
    run(NOW + 10 * MINUTE + timedelta(seconds=5))  # the cooldown is over
    assert [kind for kind, _ in events(flappy)] == ["firing", "resolved", "firing"]


def test_a_broken_rule_is_marked_with_its_error_and_the_others_still_run(db):
    broken = rule(name="Broken", query='service:"unclosed')
    fine = rule(name="Fine")
    trace(NOW - MINUTE, errors=1)
    result = run(NOW)
    broken.refresh_from_db()
    assert broken.state == "broken"
    assert broken.error.startswith("the query no longer parses: ")
    assert broken.error.endswith("unterminated string starting at 8")
    assert [kind for kind, _ in events(broken)] == ["broken"]
    assert [kind for kind, _ in events(fine)] == ["firing"]
    assert result.failed == 0
    run(NOW + MINUTE)  # still broken, with the same error: no second event
    assert [kind for kind, _ in events(broken)] == ["broken"]
    AlertRule.objects.filter(pk=broken.pk).update(query="service:shop")
    run(NOW + 2 * MINUTE)  # mended: it works again, and fires on what it now sees
    broken.refresh_from_db()
    assert (broken.state, broken.error) == ("firing", "")


def test_muted_rules_record_their_transitions_but_tell_nobody(db):
    quiet = rule(targets=[{"kind": "webhook", "to": "http://127.0.0.1:9/hook"}],
                 muted_until=NOW + timedelta(hours=1))  # fmt: skip
    trace(NOW - MINUTE, errors=1)
    sent, told = [], []
    run(NOW, deliver=sent.append, publish=lambda alerts: told.extend(alerts))
    event = quiet.events.get()
    assert (event.kind, event.delivery) == ("firing", "muted")
    assert sent == []
    assert [alert["kind"] for alert in told] == ["badge"]  # the count changed: no toast
    assert told[0]["firing"] == 0  # muted rules are not on the badge


def test_transitions_are_announced_to_pages_and_sent_after_the_commit(db):
    loud = rule(targets=[{"kind": "webhook", "to": "http://127.0.0.1:9/hook"}])
    trace(NOW - MINUTE, errors=1)
    told, sent = [], []
    run(
        NOW,
        deliver=lambda event: sent.append(event.delivery),
        publish=lambda alerts: told.extend(alerts),
    )
    assert told[0] == {
        "kind": "firing", "event_id": loud.events.get().pk, "rule_id": loud.pk,
        "rule_name": "Checkout errors", "firing": 1,
        "message": "Error count 1 (threshold > 0) over the last 5m",
    }  # fmt: skip
    assert told[1]["kind"] == "delivered"
    assert sent == ["pending"]  # claimed by this evaluator, then sent


def test_an_edit_that_changes_the_condition_starts_the_rule_again_from_ok(db):
    edited = rule()
    trace(NOW - MINUTE, errors=1)
    run(NOW)
    edited.refresh_from_db()
    version = edited.version
    values = {"name": "Renamed", "cooldown_seconds": 60}
    alert_rule_save(rule=edited, values=values, now=NOW)
    assert (edited.state, edited.name, edited.version) == ("firing", "Renamed", version + 1)
    alert_rule_save(rule=edited, values={"threshold": 5.0}, now=NOW)
    assert (edited.state, edited.last_value, edited.last_fired_at) == ("ok", None, None)


# --- "Any single trace" --------------------------------------------------------------------


def test_an_each_trace_rule_fires_once_for_every_matching_trace(db):
    pricey = rule(name="Pricey", metric="each_trace", query="cost:>0.50")
    first, second = trace(NOW - 2 * MINUTE, cost=0.75), trace(NOW - MINUTE, cost=0.90)
    trace(NOW - MINUTE, cost=0.10)  # cheap: no
    result = run(NOW)
    assert sorted(event.trace_id for event in result.events) == sorted([first.pk, second.pk])
    assert result.events[0].detail["trace"]["cost"] in (0.75, 0.90)
    assert run(NOW + MINUTE).events == []  # announced already
    third = trace(NOW + MINUTE, cost=2.0)
    assert [event.trace_id for event in run(NOW + 2 * MINUTE).events] == [third.pk]
    pricey.refresh_from_db()
    assert pricey.state == "firing"
    assert len(pricey.fired_traces) == 3
    assert [kind for kind, _ in events(pricey)] == ["firing"] * 3
    resolved = run(NOW + 7 * MINUTE)  # nothing matching left in the window
    assert [event.kind for event in resolved.events] == ["resolved"]
    pricey.refresh_from_db()
    assert pricey.fired_traces == []  # forgotten once out of reach: the memory stays bounded


def test_a_trace_that_comes_to_match_later_fires_then(db):
    pricey = rule(metric="each_trace", query="cost:>0.50")
    growing = trace(NOW - MINUTE, cost=0.20)
    assert run(NOW).events == []
    Trace.objects.filter(pk=growing.pk).update(cost=0.80)  # more LLM spans arrived
    assert [event.trace_id for event in run(NOW + MINUTE).events] == [growing.pk]
    assert pricey.events.count() == 1


def test_a_burst_of_matching_traces_is_ten_events_and_one_for_the_rest(db):
    rule(metric="each_trace", query="errors:>0", targets=[{"kind": "email", "to": "a@b.c"}])
    for second in range(13):
        trace(NOW - timedelta(seconds=second + 1), errors=1)
    result = run(NOW)
    assert len(result.events) == alerting.MAX_TRACE_EVENTS + 1
    assert result.events[-1].trace_id == ""
    assert result.events[-1].message == "3 more matching traces"


def test_each_trace_rules_catch_up_on_traces_between_slow_evaluations(db):
    slow = rule(metric="each_trace", query="errors:>0", window_seconds=60,
                last_evaluated_at=NOW - 10 * MINUTE)  # fmt: skip
    missed = trace(NOW - 5 * MINUTE, errors=1)  # older than the window, newer than last time
    assert [event.trace_id for event in run(NOW).events] == [missed.pk]
    slow.refresh_from_db()
    assert slow.state == "firing"


def test_each_trace_events_within_the_cooldown_are_kept_but_not_sent(db):
    pricey = rule(metric="each_trace", query="cost:>0.50", cooldown_seconds=600,
                  targets=[{"kind": "webhook", "to": "http://127.0.0.1:9/x"}])  # fmt: skip
    trace(NOW - MINUTE, cost=1)
    run(NOW)
    trace(NOW + MINUTE, cost=1)
    run(NOW + 2 * MINUTE)
    deliveries = list(pricey.events.order_by("pk").values_list("delivery", flat=True))
    assert deliveries[0] != "cooldown"
    assert deliveries[1] == "cooldown"


def test_an_each_trace_rule_over_real_ingested_spans(db):
    """The query reaches spans (model:) through real ingest, not only summary columns."""
    pricey = rule(metric="each_trace", query="model:gpt-4o* errors:>0")
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    base = datetime_to_ns(NOW - MINUTE)
    spans = [
        otlp.span(trace_id, root, "agent", base_ns=base),
        otlp.span(trace_id, otlp.new_span_id(), "chat", parent=root, base_ns=base,
                  error="rate limited", gen_ai__request__model="gpt-4o-mini"),
    ]  # fmt: skip
    spans_ingest(to_params(decode_protobuf(otlp.body(*spans)).rows))
    assert [event.trace_id for event in run(NOW).events] == [trace_id]
    assert pricey.events.get().detail["trace"]["errors"] == 1


# --- Two evaluators ------------------------------------------------------------------------


def test_the_lease_goes_to_one_evaluator_until_it_expires_or_is_released(db):
    assert lease_acquire(holder="server", now=NOW, seconds=60)
    assert not lease_acquire(holder="cron", now=NOW + MINUTE / 2, seconds=60)
    assert lease_acquire(holder="server", now=NOW + MINUTE / 2, seconds=60)  # renewed
    assert not lease_acquire(holder="cron", now=NOW + MINUTE, seconds=60)
    assert lease_acquire(holder="cron", now=NOW + 2 * MINUTE, seconds=60)  # expired
    lease_release(holder="cron", now=NOW + 2 * MINUTE)
    assert lease_acquire(holder="server", now=NOW + 2 * MINUTE, seconds=60)


def test_an_evaluator_that_read_a_stale_rule_writes_nothing(db):
    trace(NOW - MINUTE, errors=1)
    watched = rule()
    mine, theirs = AlertRule.objects.get(pk=watched.pk), AlertRule.objects.get(pk=watched.pk)
    assert [event.kind for event in rule_evaluate(mine, now=NOW)] == ["firing"]
    assert rule_evaluate(theirs, now=NOW) is None  # the same transition, already recorded
    assert watched.events.count() == 1


def test_a_pending_notification_is_claimed_by_one_evaluator_and_old_ones_expire(db):
    watched = rule(targets=[{"kind": "webhook", "to": "http://127.0.0.1:9/x"}])
    long_ago = NOW - 2 * alerting.MAX_PENDING_AGE
    old = AlertEvent.objects.create(rule=watched, kind="firing", at=long_ago, delivery="pending")
    fresh = AlertEvent.objects.create(rule=watched, kind="firing", at=NOW, delivery="pending")
    sent = []
    result = run(NOW, deliver=lambda event: sent.append(event.pk))
    assert sent == [fresh.pk]
    assert [event.pk for event in result.delivered] == [fresh.pk]
    old.refresh_from_db()
    assert old.delivery == "expired"
    assert run(NOW, deliver=lambda event: sent.append(event.pk)).delivered == []


@pytest.mark.django_db(transaction=True)
def test_two_evaluators_at_once_notify_each_transition_exactly_once():
    """A server's evaluator and a cron run, started together round after round, with real
    webhook deliveries: every transition reaches the receiver once."""
    with Receiver() as receiver:
        hook = [{"kind": "webhook", "to": receiver.url}]
        rule(name="A", targets=hook)
        rule(name="B", metric="traces", comparator=">=", threshold=2, targets=hook)
        # Both fire, nothing, both resolve (the traces left the window), both fire again, nothing.
        rounds = [NOW, NOW + MINUTE, NOW + 6 * MINUTE, NOW + 8 * MINUTE, NOW + 9 * MINUTE]
        trace(NOW - MINUTE, errors=1)
        trace(NOW - MINUTE)
        trace(NOW + 7 * MINUTE, errors=1)
        trace(NOW + 7 * MINUTE)
        held: list[list[bool]] = []
        errors: list[BaseException] = []

        def evaluator(holder: str, at: datetime, barrier: threading.Barrier) -> None:
            try:
                barrier.wait(5)
                cron = holder == "cron"
                result = alerts_run(now=at, holder=holder, lease_seconds=30, release=cron)
                held[-1].append(result.held)
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)
            finally:
                connection.close()

        for at in rounds:
            held.append([])
            barrier = threading.Barrier(2)
            threads = [threading.Thread(target=evaluator, args=(holder, at, barrier))
                       for holder in ("server", "cron")]  # fmt: skip
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(20)
        assert errors == []
        transitions = AlertEvent.objects.order_by("pk")
        kinds = [(event.rule.name, event.kind) for event in transitions]
        assert sorted(kinds) == sorted(
            [("A", "firing"), ("B", "firing"), ("A", "resolved"), ("B", "resolved")]
            + [("A", "firing"), ("B", "firing")]
        )
        deadline = time.monotonic() + 5
        while len(receiver.received) < len(kinds) and time.monotonic() < deadline:
            time.sleep(0.02)
        ids = [body["event"]["id"] for body in receiver.bodies()]
        assert sorted(ids) == sorted(event.pk for event in transitions)  # each exactly once
        assert all(event.delivery == "sent" for event in transitions)
        assert all(sorted(pair) == [False, True] for pair in held)  # one evaluator a round


# --- Where it runs -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_evaluation_reads_without_the_write_lock_and_writes_briefly():
    """On SQLite, atomic() is BEGIN IMMEDIATE (the write lock, which ingest needs): the
    reads must not be in one, and a quiet evaluation is one UPDATE of the rule."""
    watched = rule(metric="p95", threshold=10_000)
    trace(NOW - MINUTE)
    with CaptureQueriesContext(connection) as queries:
        assert rule_evaluate(watched, now=NOW) == []
    statements = [query["sql"].split()[0].upper() for query in queries.captured_queries]
    assert statements.count("UPDATE") == 1
    assert "INSERT" not in statements
    if connection.vendor == "sqlite":
        assert not any("IMMEDIATE" in query["sql"] for query in queries.captured_queries)


def test_the_server_evaluates_every_interval_on_its_clock():
    ticks = iter(NOW + timedelta(seconds=s) for s in range(100))
    calls: list[datetime] = []
    three = threading.Event()

    def fake(*, now, holder, lease_seconds, publish):
        calls.append(now)
        assert holder.startswith("server:")
        assert lease_seconds == 2 * 0.01 + 60
        if len(calls) == 3:
            three.set()

    evaluator = Evaluator(0.01, clock=lambda: next(ticks), run=fake).start()
    try:
        assert three.wait(5)
    finally:
        evaluator.stop(5)
    assert calls[:3] == [NOW, NOW + timedelta(seconds=1), NOW + timedelta(seconds=2)]
    assert alerting.alerts_start(0) is None


def test_a_failed_evaluation_is_logged_and_the_next_one_still_runs(caplog):
    calls = []
    two = threading.Event()

    def failing(**options):
        calls.append(1)
        if len(calls) == 2:
            two.set()
        raise RuntimeError("database went away")

    evaluator = Evaluator(0.01, run=failing).start()
    try:
        assert two.wait(5)
    finally:
        evaluator.stop(5)
    assert "alerts: evaluation failed" in caplog.text


def test_evaluate_alerts_reports_what_it_did_and_skips_while_another_holds_the_lease(db):
    rule()
    trace(datetime.now(UTC) - MINUTE, errors=1)
    out = StringIO()
    call_command("evaluate_alerts", stdout=out)
    assert out.getvalue() == (
        "1 rule checked: 1 firing, 0 resolved, 0 broken; 0 events notified.\n"
    )
    assert lease_acquire(holder="server:elsewhere", now=datetime.now(UTC), seconds=60)
    out = StringIO()
    call_command("evaluate_alerts", stdout=out)
    assert out.getvalue().startswith("Another evaluator is checking the rules (server:elsewhere")
