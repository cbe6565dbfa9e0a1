"""Analytics: buckets, series, breakdowns, percentiles (both databases), the page and the API.

Rows are made directly with the ORM, with exact start times, durations and figures, so
every expected number can be worked out by hand. Windows are custom ones with fixed dates,
so buckets do not depend on the clock.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from traces import analytics, rollups
from traces.analytics import Window, bucket_step, percentile, selected_percentiles
from traces.analytics_views import list_link, quoted
from traces.models import Span, Trace, datetime_to_ns

pytestmark = pytest.mark.django_db
MS = 1_000_000
HTMX = {"HTTP_HX_REQUEST": "true"}
DAY0 = datetime(2026, 3, 9, tzinfo=UTC)  # a Monday
# Two days, so one-hour buckets: 48 of them, the first starting at DAY0.
WINDOW = Window.custom(DAY0, DAY0 + timedelta(days=2))
WINDOW_PARAMS = {"window": "custom", "since": "2026-03-09", "until": "2026-03-11"}
postgres_only = pytest.mark.skipif(
    not os.environ.get("MSGTRACE_DATABASE_URL"), reason="compares with PostgreSQL's own function"
)


def make_trace(start: datetime, duration_ms: float, **fields) -> Trace:
    start_ns = datetime_to_ns(start)
    duration_ns = int(duration_ms * MS)
    now = timezone.now()
    return Trace.objects.create(
        trace_id=os.urandom(16).hex(),
        start_ns=start_ns,
        end_ns=start_ns + duration_ns,
        duration_ns=duration_ns,
        first_seen=now,
        last_updated=now,
        **{"service_name": "svc", "workflow_name": "wf", **fields},
    )


def make_span(trace: Trace, name: str, start: datetime, duration_ns: int, **fields) -> Span:
    start_ns = datetime_to_ns(start)
    return Span(
        trace=trace,
        span_id=os.urandom(8).hex(),
        name=name,
        start_ns=start_ns,
        end_ns=start_ns + duration_ns,
        duration_ns=duration_ns,
        **fields,
    )


def at(hours: float) -> datetime:
    return DAY0 + timedelta(hours=hours)


@pytest.fixture(params=["from spans", "from rollups", "from rollups and spans"])
def span_path(request, monkeypatch) -> str:
    """Run a span test every way: every span read from the span index (no rollups built),
    every past hour from its rollup, and a mix (rollups built, then some hours written
    to, so those hours come from the spans again)."""
    real_build = rollups.rollups_build
    if request.param == "from spans":
        monkeypatch.setattr(rollups, "rollups_build", lambda **window: 0)
    elif request.param == "from rollups and spans":

        def build_then_touch(**window) -> int:
            built = real_build(**window)
            first = rollups.hour_of(window["since_ns"])
            rollups.hours_invalidate(range(first, first + 48, 3))
            return built

        monkeypatch.setattr(rollups, "rollups_build", build_then_touch)
    return request.param


def reference(values: list[int], fraction: float) -> float:
    """percentile_cont worked out exactly with fractions, then rounded once."""
    ordered = sorted(values)
    position = Fraction(fraction) * (len(ordered) - 1)
    low = int(position)
    weight = position - low
    high = ordered[min(low + 1, len(ordered) - 1)]
    return float(ordered[low] + weight * (high - ordered[low]))


# --- Windows and buckets -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "step"),
    [
        (timedelta(hours=1), timedelta(minutes=1)),
        (timedelta(days=1), timedelta(minutes=30)),
        (timedelta(days=7), timedelta(hours=6)),
        (timedelta(days=30), timedelta(days=1)),
        (timedelta(minutes=90), timedelta(minutes=2)),
        (timedelta(days=2), timedelta(hours=1)),
        (timedelta(days=366), timedelta(days=7)),
    ],
)
def test_bucket_size_is_the_smallest_giving_at_most_sixty_buckets(length, step):
    assert bucket_step(length) == step
    assert length / step <= analytics.MAX_BUCKETS


def test_buckets_align_to_utc_boundaries_and_the_edges_are_partial():
    window = Window.custom(
        datetime(2026, 3, 10, 10, 7, tzinfo=UTC), datetime(2026, 3, 11, 9, 52, tzinfo=UTC)
    )
    assert window.step == timedelta(minutes=30)
    starts = [analytics.ns_to_datetime(ns) for ns in window.bucket_starts()]
    assert starts[0] == datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
    assert starts[-1] == datetime(2026, 3, 11, 9, 30, tzinfo=UTC)
    assert len(starts) == 48
    assert all(b - a == timedelta(minutes=30) for a, b in zip(starts, starts[1:], strict=False))


def test_week_buckets_start_on_monday_midnight():
    window = Window.custom(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC))
    assert window.step == timedelta(days=7)
    first = analytics.ns_to_datetime(window.first_bucket_ns)
    assert (first.weekday(), first.hour, first.minute) == (0, 0, 0)
    assert first == datetime(2025, 12, 29, tzinfo=UTC)


def test_preset_windows_end_now_and_reach_back_their_length():
    now = datetime(2026, 3, 10, 12, 34, 56, tzinfo=UTC)
    window = Window.preset("7d", now)
    assert (window.since, window.until, window.step) == (
        now - timedelta(days=7),
        now,
        timedelta(hours=6),
    )
    # 7 days from 12:34:56 cut into 6-hour buckets aligned at 00/06/12/18: 29 buckets.
    assert len(window.bucket_starts()) == 29


# --- Percentiles -------------------------------------------------------------------------


def test_percentile_interpolates_like_percentile_cont():
    assert percentile([], 0.5) is None
    assert percentile([7], 0.95) == 7.0
    assert percentile([1, 2, 3, 4], 0.5) == 2.5
    assert percentile([100, 200, 300, 400], 0.95) == pytest.approx(385.0)
    assert percentile([10, 20], 0.99) == pytest.approx(19.9)


def test_percentile_matches_an_exact_reference_on_random_values():
    rng = random.Random(7)
    for _ in range(300):
        values = sorted(rng.randint(0, 10**12) for _ in range(rng.randint(1, 400)))
        for fraction in (0.5, 0.95, 0.99, 0.0, 1.0, 0.1234):
            assert percentile(values, fraction) == pytest.approx(
                reference(values, fraction), rel=1e-12
            )


@pytest.mark.parametrize("parts", [1, 3])
@pytest.mark.parametrize("count", [1, 2, 3, 63, 64, 65, 200, 1001])
def test_selected_percentiles_equal_sorting_everything(count, parts):
    rng = random.Random(count)
    # Ties included: equal durations may come in any order without changing the value.
    durations = [rng.choice((5, 9, 9, 13)) * MS + rng.randint(0, 3) for _ in range(count)]
    arrays = [np.array(durations[part::parts], dtype=np.int64) for part in range(parts)]
    fractions = (0.0, 0.01, 0.5, 0.95, 0.99, 1.0)
    got = selected_percentiles(arrays, fractions)
    assert got == [percentile(sorted(durations), f) for f in fractions]
    assert got == pytest.approx([reference(durations, f) for f in fractions], rel=1e-12)


def test_selected_percentiles_of_nothing_are_none():
    assert selected_percentiles([np.array([], dtype=np.int64)], (0.5, 0.95)) == [None, None]


# --- A fixture with known answers ---------------------------------------------------------


@pytest.fixture
def shop():
    """Traces in three one-hour buckets of WINDOW, and their spans.

    Bucket 0 (00:00): four traces of 100/200/300/400 ms, one with an error.
    Bucket 1 (01:00): one trace of 50 ms, billing.
    Bucket 5 (05:00): two traces of 1 s and 3 s, the second with an unpriced span.
    Plus one trace the day before and one after the window, which nothing may count.
    """
    made = {}
    fields = {"input_tokens": 100, "output_tokens": 10, "cost": 0.01}
    made["a"] = [
        make_trace(at(0.1), 100, service_name="shop", workflow_name="answer", **fields),
        make_trace(at(0.2), 200, service_name="shop", workflow_name="answer", **fields),
        make_trace(at(0.3), 300, service_name="shop", workflow_name="refund", **fields,
                   error_count=1),
        make_trace(at(0.4), 400, service_name="shop", workflow_name="", **fields),
    ]  # fmt: skip
    made["b"] = make_trace(at(1.5), 50, service_name="billing", workflow_name="invoice")
    made["c"] = [
        make_trace(at(5.0), 1000, service_name="shop", workflow_name="answer", cost=0.5,
                   input_tokens=1000, output_tokens=200),
        make_trace(at(5.9), 3000, service_name="shop", workflow_name="answer", cost=0.25,
                   input_tokens=500, output_tokens=50, unpriced_count=1),
    ]  # fmt: skip
    make_trace(at(-1), 9000, service_name="shop")
    make_trace(at(49), 9000, service_name="shop")

    spans = []
    for trace in made["a"] + made["c"]:
        start = analytics.ns_to_datetime(trace.start_ns)
        spans.append(make_span(trace, f"invoke_agent {trace.workflow_name}", start,
                               trace.duration_ns, model="gpt-4o", span_type="agent"))  # fmt: skip
    for i, ms in enumerate((40, 80, 120, 160)):
        trace = made["a"][i]
        start = analytics.ns_to_datetime(trace.start_ns)
        spans.append(make_span(trace, "chat gpt-4o", start, ms * MS, model="gpt-4o",
                               span_type="llm", input_tokens=100, output_tokens=10, cost=0.01,
                               cost_source="span", is_error=i == 2))  # fmt: skip
    start = analytics.ns_to_datetime(made["c"][1].start_ns)
    spans.append(make_span(made["c"][1], "chat mystery", start, 500 * MS, model="mystery-1",
                           span_type="llm", input_tokens=500, output_tokens=50,
                           cost_source="unpriced"))  # fmt: skip
    spans.append(make_span(made["c"][0], "chat gpt-4o", analytics.ns_to_datetime(
        made["c"][0].start_ns), 900 * MS, model="gpt-4o-mini", span_type="llm",
        input_tokens=1000, output_tokens=200, cost=0.5, cost_source="span"))  # fmt: skip
    billing = made["b"]
    spans.append(make_span(billing, "GET /invoice", analytics.ns_to_datetime(billing.start_ns),
                           50 * MS, span_type="", is_error=True))  # fmt: skip
    Span.objects.bulk_create(spans)
    return made


def test_series_counts_each_bucket_and_leaves_empty_buckets_empty(shop):
    result = analytics.report(WINDOW, Q())
    buckets = result.buckets
    assert len(buckets) == 48
    assert [b.traces for b in buckets[:7]] == [4, 1, 0, 0, 0, 2, 0]
    assert sum(b.traces for b in buckets) == 7

    first = buckets[0]
    assert (first.start, first.end) == (DAY0, DAY0 + timedelta(hours=1))
    assert (first.errors, first.error_rate) == (1, 0.25)
    assert (first.input_tokens, first.output_tokens) == (400, 40)
    assert first.cost == pytest.approx(0.04)
    assert first.p50_ns == pytest.approx(250 * MS)
    assert first.p95_ns == pytest.approx(385 * MS)
    assert first.p99_ns == pytest.approx(397 * MS)

    assert (buckets[1].traces, buckets[1].p50_ns, buckets[1].p99_ns) == (1, 50 * MS, 50 * MS)
    fifth = buckets[5]
    assert (fifth.unpriced, fifth.cost) == (1, pytest.approx(0.75))
    assert fifth.p50_ns == pytest.approx(2000 * MS)

    empty = buckets[2]
    assert (empty.traces, empty.errors, empty.cost, empty.input_tokens) == (0, 0, 0, 0)
    assert (empty.p50_ns, empty.p95_ns, empty.p99_ns, empty.error_rate) == (None,) * 4


def test_totals_cover_the_window_only(shop):
    totals = analytics.report(WINDOW, Q()).totals
    assert (totals.traces, totals.errors, totals.unpriced) == (7, 1, 1)
    assert (totals.input_tokens, totals.output_tokens) == (1900, 290)
    assert totals.cost == pytest.approx(0.79)
    durations = [100, 200, 300, 400, 50, 1000, 3000]
    assert totals.p50_ns == pytest.approx(300 * MS)
    assert totals.p95_ns == pytest.approx(reference([d * MS for d in durations], 0.95))


def _rows(breakdown) -> dict:
    return {row.name: row for row in breakdown.rows}


def test_service_and_workflow_breakdowns_count_traces(shop):
    result = analytics.report(WINDOW, Q())
    services = _rows(result.breakdowns["service"])
    assert [row.name for row in result.breakdowns["service"].rows] == ["shop", "billing"]
    shop_row = services["shop"]
    assert (shop_row.calls, shop_row.errors, shop_row.unpriced) == (6, 1, 1)
    assert shop_row.error_rate == pytest.approx(1 / 6)
    assert shop_row.p50_ns == pytest.approx(350 * MS)  # 100 200 300 400 1000 3000
    assert shop_row.cost == pytest.approx(0.79)
    assert (shop_row.input_tokens, shop_row.output_tokens) == (1900, 290)
    workflows = _rows(result.breakdowns["workflow"])
    assert {name: row.calls for name, row in workflows.items()} == {
        "answer": 4, "refund": 1, "": 1, "invoice": 1,
    }  # fmt: skip
    assert workflows["answer"].p95_ns == pytest.approx(reference([100, 200, 1000, 3000], 0.95) * MS)


def test_model_breakdown_counts_model_calls_but_not_agent_spans(shop, span_path):
    models = _rows(analytics.report(WINDOW, Q()).breakdowns["model"])
    assert set(models) == {"gpt-4o", "gpt-4o-mini", "mystery-1"}
    gpt = models["gpt-4o"]
    assert (gpt.calls, gpt.errors, gpt.input_tokens, gpt.output_tokens) == (4, 1, 400, 40)
    assert gpt.cost == pytest.approx(0.04)
    assert gpt.p50_ns == pytest.approx(100 * MS)  # 40 80 120 160
    assert gpt.p95_ns == pytest.approx(154 * MS)
    mystery = models["mystery-1"]
    assert (mystery.calls, mystery.cost, mystery.unpriced) == (1, 0.0, 1)


def test_span_name_breakdown_counts_spans_of_every_kind(shop, span_path):
    names = _rows(analytics.report(WINDOW, Q()).breakdowns["span"])
    # "chat gpt-4o" ran on two models: its percentiles come from both.
    chat = names["chat gpt-4o"]
    assert (chat.calls, chat.errors) == (5, 1)
    assert chat.p50_ns == pytest.approx(120 * MS)  # 40 80 120 160 900
    assert names["GET /invoice"].errors == 1
    assert names["invoke_agent answer"].calls == 4
    assert names["invoke_agent answer"].p95_ns == pytest.approx(
        reference([100, 200, 1000, 3000], 0.95) * MS
    )


def test_only_the_top_groups_are_listed_and_the_rest_fold_into_other(shop, span_path):
    result = analytics.report(WINDOW, Q(), top=2)
    names = result.breakdowns["span"]
    assert [row.name for row in names.rows] == ["chat gpt-4o", "invoke_agent answer"]
    other = names.other
    # "invoke_agent refund", "invoke_agent " (no workflow), "chat mystery", "GET /invoice"
    assert (other.folded, other.calls, other.errors, other.unpriced) == (4, 4, 1, 1)
    assert (other.p50_ns, other.p95_ns) == (None, None)
    assert names.groups == 6
    assert result.breakdowns["model"].other.name == "other"


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("-calls", ["gpt-4o", "gpt-4o-mini", "mystery-1"]),
        ("calls", ["gpt-4o-mini", "mystery-1", "gpt-4o"]),
        ("-cost", ["gpt-4o-mini", "gpt-4o", "mystery-1"]),
        ("-p95", ["gpt-4o-mini", "mystery-1", "gpt-4o"]),
        ("name", ["gpt-4o", "gpt-4o-mini", "mystery-1"]),
        ("-name", ["mystery-1", "gpt-4o-mini", "gpt-4o"]),
        ("-error_rate", ["gpt-4o", "gpt-4o-mini", "mystery-1"]),
        ("-tokens", ["gpt-4o-mini", "mystery-1", "gpt-4o"]),
    ],
)
def test_breakdown_sorts(shop, span_path, sort, expected):
    result = analytics.report(WINDOW, Q(), breakdowns=["model"], sorts={"model": sort})
    assert [row.name for row in result.breakdowns["model"].rows] == expected


def test_a_query_selects_the_traces_and_the_spans_of_those_traces(shop, span_path):
    from search.compiler import compile_query

    result = analytics.report(WINDOW, compile_query("service:billing"), q="service:billing")
    assert [b.traces for b in result.buckets[:3]] == [0, 1, 0]
    assert [row.name for row in result.breakdowns["service"].rows] == ["billing"]
    assert [row.name for row in result.breakdowns["span"].rows] == ["GET /invoice"]
    assert result.breakdowns["model"].rows == []


# --- Against PostgreSQL's own percentile_cont ---------------------------------------------


def _percentile_cont(sql_from: str, params: list, fractions=(0.5, 0.95, 0.99)) -> dict:
    columns = ", ".join(
        f"percentile_cont({f}) WITHIN GROUP (ORDER BY duration_ns)" for f in fractions
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT grp, {columns} FROM {sql_from} GROUP BY grp", params)  # noqa: S608
        return {row[0]: list(row[1:]) for row in cursor.fetchall()}


@postgres_only
def test_trace_percentiles_equal_postgres_percentile_cont(shop):
    rng = random.Random(3)
    for i in range(400):  # more traces, with ties, across buckets and services
        make_trace(at(rng.uniform(0, 47.9)), rng.choice((10, 20, 20, 35.5)) + rng.random(),
                   service_name=f"s{i % 3}")  # fmt: skip
    result = analytics.report(WINDOW, Q())
    first, step = WINDOW.first_bucket_ns, WINDOW.step_ns
    sql = (
        f"(SELECT (start_ns - {first}) / {step} AS grp, duration_ns FROM traces_trace "
        "WHERE start_ns >= %s AND start_ns < %s) t"
    )
    expected = _percentile_cont(sql, [WINDOW.since_ns, WINDOW.until_ns])
    for index, bucket in enumerate(result.buckets):
        got = [bucket.p50_ns, bucket.p95_ns, bucket.p99_ns]
        assert got == expected.get(index, [None, None, None]), index
    sql = (
        "(SELECT service_name AS grp, duration_ns FROM traces_trace "
        "WHERE start_ns >= %s AND start_ns < %s) t"
    )
    expected = _percentile_cont(sql, [WINDOW.since_ns, WINDOW.until_ns], (0.5, 0.95))
    for row in result.breakdowns["service"].rows:
        assert [row.p50_ns, row.p95_ns] == expected[row.name]


@postgres_only
def test_span_percentiles_equal_postgres_percentile_cont(span_path):
    rng = random.Random(5)
    trace = make_trace(at(2), 1000)
    spans = []
    for i in range(900):
        model = ("gpt-4o", "gpt-4o-mini", "claude")[i % 3]
        name = "chat" if i % 2 else f"chat {model}"  # "chat" runs on three models
        start = at(2) + timedelta(seconds=i)
        duration = rng.choice((100, 200, 200, 350)) * MS + rng.randint(0, 10**6)
        spans.append(make_span(trace, name, start, duration, model=model, span_type="llm"))
    Span.objects.bulk_create(spans)
    result = analytics.report(WINDOW, Q(), breakdowns=["model", "span"])
    bounds = [WINDOW.since_ns, WINDOW.until_ns]
    for by, column in (("model", "model"), ("span", "name")):
        sql = (
            f"(SELECT {column} AS grp, duration_ns FROM traces_span "
            "WHERE start_ns >= %s AND start_ns < %s) t"
        )
        expected = _percentile_cont(sql, bounds, (0.5, 0.95))
        rows = result.breakdowns[by].rows
        assert len(rows) == (3 if by == "model" else 4)
        for row in rows:
            assert [row.p50_ns, row.p95_ns] == expected[row.name], (by, row.name)


# --- The page --------------------------------------------------------------------------


def test_page_shows_totals_charts_with_hover_values_and_four_tables(client, shop):
    response = client.get("/analytics", WINDOW_PARAMS)
    assert response.status_code == 200
    text = response.content.decode()
    assert "<html" in text
    for title in ("Traces", "Error rate", "Trace duration", "Tokens", "Cost"):
        assert f"<h2>{title}</h2>" in text
    assert text.count('<svg class="chart-svg"') == 5
    # Every bucket has a hover title with its figures; the y axes have units.
    assert "Mar 9 00:00–01:00 UTC\n4 traces · 1 with errors (25%)" in text
    assert "p50 250 ms · p95 385 ms · p99 397 ms" in text
    # Round ticks in each chart's unit: 0-4 traces, $0-$0.80, 0-3 s.
    traces_axis = text[text.index('id="chart-traces"') : text.index('id="chart-error-rate"')]
    assert [f'end">{n}</text>' in traces_axis for n in range(5)] == [True] * 5
    assert 'end">$0.80</text>' in text and 'end">3 s</text>' in text
    for title in ("By model", "By service", "By workflow", "By span name"):
        assert f"<h2>{title}</h2>" in text
    assert "Leaves out 1 span with tokens but no known price." in text
    assert 'aria-current="page">Analytics</a>' in text


def test_window_change_returns_only_the_fragment(client, shop):
    response = client.get("/analytics", WINDOW_PARAMS, **HTMX, HTTP_HX_TARGET="analytics")
    text = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in text
    assert 'class="chart-svg"' in text and "By span name" in text


def test_a_sort_click_returns_only_that_table_sorted(client, shop):
    params = {**WINDOW_PARAMS, "sort_model": "-cost"}
    response = client.get("/analytics", params, **HTMX, HTTP_HX_TARGET="breakdown-model")
    text = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in text and "chart-svg" not in text and "By service" not in text
    assert text.index("gpt-4o-mini") < text.index(">gpt-4o<")
    assert 'aria-sort="descending"' in text
    # The header link flips the sort and keeps every other parameter.
    assert "sort_model=cost" in text and "window=custom" in text
    # The window links come along out of band, so they keep the new sort, and so does the
    # query form (a hidden field tied to it).
    assert (
        '<nav id="window-nav" class="segmented" aria-label="Time window" hx-swap-oob="true">'
        in text
    )
    assert "?window=7d&amp;sort_model=-cost" in text
    assert '<input type="hidden" name="sort_model" value="-cost" form="analytics-filters">' in text


def test_row_links_open_the_trace_list_filtered_to_that_row(client, shop):
    window = WINDOW
    link = list_link("model", "gpt-4o", "", window)
    params = parse_qs(urlsplit(link).query)
    assert params == {
        "q": ['model:"gpt-4o"'],
        "since": ["2026-03-09T00:00:00Z"],
        "until": ["2026-03-11T00:00:00Z"],
    }
    response = client.get(link)
    assert response.status_code == 200
    assert response.context["page"].traces  # the traces with a gpt-4o span
    link = list_link(
        "service", "shop", "error:true OR duration:>2s", Window.preset("24h", timezone.now())
    )
    assert parse_qs(urlsplit(link).query) == {
        "q": ['(error:true OR duration:>2s) service:"shop"'], "since": ["24h"],
    }  # fmt: skip


def test_names_are_quoted_for_the_search_language_and_escaped_in_the_page(client):
    name = 'chat "<b>x</b>" \\ *'
    assert quoted(name) == '"chat \\"<b>x</b>\\" \\\\ *"'
    from search.parser import parse

    assert parse(f"span:{quoted(name)}").value == name
    trace = make_trace(at(3), 10)
    Span.objects.bulk_create([make_span(trace, name, at(3), 5 * MS)])
    text = client.get("/analytics", WINDOW_PARAMS).content.decode()
    assert "<b>x</b>" not in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text


@pytest.mark.parametrize(("built", "expected"), [(False, 3), (True, 4)])
def test_the_page_runs_a_fixed_number_of_queries(
    client, shop, monkeypatch, django_assert_num_queries, built, expected
):
    # Traces: 1. Spans: which hours have current rollups (1), then their rows (1) when
    # some do, and the spans of the rest (1) when any is left: never one per group.
    if not built:
        monkeypatch.setattr(rollups, "rollups_build", lambda **window: 0)
    client.get("/analytics", WINDOW_PARAMS)  # builds the rollups when they are on
    trace = make_trace(at(7), 10)
    Span.objects.bulk_create([make_span(trace, f"step {i}", at(7), MS) for i in range(20)])
    rollups.hours_invalidate([rollups.hour_of(datetime_to_ns(at(7)))])
    client.get("/analytics", WINDOW_PARAMS)  # and that hour again
    with django_assert_num_queries(expected):
        response = client.get("/analytics", WINDOW_PARAMS)
    assert response.status_code == 200
    assert "step 0" in response.content.decode()  # the hour read from spans counted


def test_an_empty_window_says_so_and_still_draws_empty_axes(client):
    response = client.get("/analytics", WINDOW_PARAMS)
    text = response.content.decode()
    assert response.status_code == 200
    assert "No traces started in this window" in text
    assert text.count("<title>") >= 48 * 5
    assert "Nothing in this window." in text


BAD_PAGE_PARAMS = [
    ({"window": "2d"}, "window: must be one of 1h, 24h, 7d, 30d, custom; got '2d'"),
    ({"window": "custom"}, "since: is required with window=custom"),
    ({"window": "custom", "since": "2026-03-09", "until": "soon"}, "until: must be an ISO 8601"),
    ({"window": "custom", "since": "2026-03-09", "until": "2026-03-08"}, "until: must be later"),
    ({"window": "custom", "since": "2026-03-09", "until": "2026-03-09T00:00:30"},
     "until: must be at least a minute after since"),
    ({"window": "custom", "since": "2024-01-01", "until": "2026-01-01"},
     "until: must be at most 366 days after since"),
    ({"window": "custom", "since": "1900-01-01", "until": "1900-02-01"}, "since: must lie between"),
    ({"window": "24h", "since": "2026-03-09"}, "since: goes with window=custom only"),
    ({"q": "duration:>"}, "q: "),
    ({"sort_model": "loudest"}, "sort_model: must be one of name, calls"),
    ({"sort_span": "-"}, "sort_span: must be one of"),
]  # fmt: skip


@pytest.mark.parametrize(("params", "message"), BAD_PAGE_PARAMS)
def test_every_bad_page_parameter_is_a_400_saying_what_is_wrong(client, shop, params, message):
    for headers in ({}, HTMX):
        response = client.get("/analytics", params, **headers)
        text = response.content.decode()
        assert response.status_code == 400
        assert message.replace("'", "&#x27;") in text
        assert "chart-svg" not in text and "By model" not in text  # no figures at all


@pytest.mark.parametrize(
    ("path", "params", "parameter", "message"),
    [
        ("timeseries", {"window": "1y"}, "window", "window: must be one of"),
        ("timeseries", {"window": "custom", "since": "x", "until": "y"}, "since", "since: must"),
        ("timeseries", {"q": "(error:true"}, "q", "q: "),
        ("breakdown", {"by": "model,colour"}, "by", "by: must be one or more of"),
        ("breakdown", {"sort": "size"}, "sort", "sort: must be one of"),
        ("breakdown", {"window": "7d", "until": "2026-01-01"}, "until", "until: goes with"),
    ],
)
def test_every_bad_api_parameter_is_a_json_400(client, path, params, parameter, message):
    response = client.get(f"/api/v1/analytics/{path}", params)
    assert response.status_code == 400
    data = response.json()
    assert data["parameter"] == parameter
    assert data["error"].startswith(message)
    if parameter == "q":
        assert isinstance(data["position"], int)


def test_api_returns_exactly_what_the_page_shows(client, shop, span_path):
    params = {**WINDOW_PARAMS, "q": "-service:nobody", "sort_model": "-p95", "sort_span": "name"}
    page = client.get("/analytics", params).context["report"]
    series = client.get("/api/v1/analytics/timeseries", params).json()
    assert series == page.series_dict()
    assert series["window"] == {
        "name": "custom", "since": "2026-03-09T00:00:00Z", "until": "2026-03-11T00:00:00Z",
        "bucket_seconds": 3600,
    }  # fmt: skip
    assert len(series["buckets"]) == 48
    assert series["buckets"][0] == {
        "start": "2026-03-09T00:00:00Z", "end": "2026-03-09T01:00:00Z", "traces": 4,
        "errors": 1, "error_rate": 0.25, "p50_duration_ms": 250.0,
        "p95_duration_ms": page.buckets[0].p95_ns / 1e6,
        "p99_duration_ms": page.buckets[0].p99_ns / 1e6, "input_tokens": 400,
        "output_tokens": 40, "cost": page.buckets[0].cost, "unpriced_spans": 0,
    }  # fmt: skip
    expected = page.breakdowns_dict()["breakdowns"]
    for by, sort in (("model", "-p95"), ("span", "name"), ("service", "-calls")):
        api = client.get(
            "/api/v1/analytics/breakdown",
            {**WINDOW_PARAMS, "q": params["q"], "by": by, "sort": sort},
        ).json()
        assert list(api["breakdowns"]) == [by]
        assert api["breakdowns"][by] == expected[by]
    everything = client.get("/api/v1/analytics/breakdown", WINDOW_PARAMS).json()
    assert list(everything["breakdowns"]) == ["model", "service", "workflow", "span"]
    row = everything["breakdowns"]["model"]["rows"][0]
    assert row == {
        "name": "gpt-4o", "calls": 4, "errors": 1, "error_rate": 0.25,
        "p50_duration_ms": 100.0, "p95_duration_ms": row["p95_duration_ms"],
        "input_tokens": 400, "output_tokens": 40, "cost": row["cost"], "unpriced_spans": 0,
    }  # fmt: skip


def test_api_refuses_other_methods(client):
    response = client.post("/api/v1/analytics/timeseries")
    assert response.status_code == 405
    assert "GET" in response["Allow"]


@pytest.mark.django_db(transaction=True)
def test_a_report_outside_a_transaction_leaves_the_connection_as_it_was():
    make_trace(at(1), 10)
    result = analytics.report(WINDOW, Q())
    assert result.totals.traces == 1
    assert connection.get_autocommit() and not connection.in_atomic_block
    make_trace(at(2), 10)  # writing still works: the snapshot was closed
    assert analytics.report(WINDOW, Q()).totals.traces == 2
