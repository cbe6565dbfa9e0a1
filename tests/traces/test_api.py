"""The JSON API, in-process, on the data the write path stores."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ingest.otlp import decode_protobuf, to_params
from ingest.writer import spans_ingest
from tests import otlp
from traces.models import Span, Trace

pytestmark = pytest.mark.django_db
MS = 1_000_000
NOW_NS = time.time_ns()


def store(*spans, service="svc"):
    spans_ingest(to_params(decode_protobuf(otlp.body(*spans, service=service)).rows))


def make_trace(
    *,
    service="svc",
    workflow="wf",
    duration_ms=100,
    error=False,
    minutes_ago=1,
    tokens=10,
    children=1,
):
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    base = NOW_NS - minutes_ago * 60_000 * MS
    spans = [
        otlp.span(
            trace_id, root, "root", base_ns=base, duration_ms=duration_ms, workflow__name=workflow
        )
    ]
    for i in range(children):
        spans.append(
            otlp.span(
                trace_id,
                otlp.new_span_id(),
                f"llm-{i}",
                parent=root,
                base_ns=base,
                start_ms=1,
                duration_ms=1,
                error="boom" if error and i == 0 else None,
                gen_ai__usage__input_tokens=tokens,
                gen_ai__request__model="gpt-4o",
            )
        )
    store(*spans, service=service)
    return trace_id


def test_list_is_newest_first_with_total_limit_and_offset(client):
    old, mid, new = (make_trace(minutes_ago=m) for m in (30, 20, 10))
    data = client.get("/api/v1/traces", {"limit": 2}).json()
    assert [t["trace_id"] for t in data["traces"]] == [new, mid]
    assert (data["total"], data["limit"], data["offset"]) == (3, 2, 0)
    data = client.get("/api/v1/traces", {"limit": 2, "offset": 2}).json()
    assert [t["trace_id"] for t in data["traces"]] == [old]
    summary = data["traces"][0]
    for key in (
        "trace_id",
        "start_time",
        "end_time",
        "duration_ms",
        "span_count",
        "error_count",
        "service_name",
        "workflow_name",
        "root_span_name",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "cost",
    ):
        assert key in summary


def test_list_filters(client):
    a = make_trace(service="billing", workflow="refund", duration_ms=50, minutes_ago=5)
    b = make_trace(
        service="search", workflow="lookup", duration_ms=2000, error=True, minutes_ago=90
    )
    c = make_trace(service="billing", workflow="lookup", duration_ms=700, minutes_ago=60 * 48)

    def ids(**params):
        return {t["trace_id"] for t in client.get("/api/v1/traces", params).json()["traces"]}

    assert ids(service="billing") == {a, c}
    assert ids(workflow="lookup") == {b, c}
    assert ids(min_duration=500) == {b, c}
    assert ids(max_duration=700) == {a, c}
    assert ids(has_errors="true") == {b}
    assert ids(has_errors="false") == {a, c}
    assert ids(since="2h") == {a, b}
    assert ids(until="1h") == {b, c}
    assert ids(since="30m", service="billing") == {a}


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"limit": "ten"}, "limit"),
        ({"limit": "5000"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"min_duration": "slow"}, "min_duration"),
        ({"max_duration": "-5"}, "max_duration"),
        ({"has_errors": "maybe"}, "has_errors"),
        ({"since": "last tuesday"}, "since"),
        ({"until": "2026-13-45"}, "until"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(client, params, parameter):
    response = client.get("/api/v1/traces", params)
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{parameter}: ")
    assert response.json()["parameter"] == parameter


def test_detail_has_summary_and_spans_and_unknown_ids_are_404_json(client):
    trace_id = make_trace(children=2)
    data = client.get(f"/api/v1/traces/{trace_id}").json()
    assert data["trace_id"] == trace_id and data["span_count"] == 3
    span = data["spans"][0]
    for key in (
        "span_id",
        "parent_span_id",
        "name",
        "kind",
        "start_time",
        "end_time",
        "duration_ms",
        "status",
        "attributes",
        "events",
        "links",
        "resource_attributes",
    ):
        assert key in span
    for path in (
        "/api/v1/traces/ffffffffffffffffffffffffffffffff",
        "/api/v1/traces/nope/tree",
        "/api/v1/traces/<script>",
    ):
        response = client.get(path)
        assert response.status_code == 404
        assert "not found" in response.json()["error"]


def test_delete_removes_the_trace_and_its_spans(client):
    keep, gone = make_trace(), make_trace(children=3)
    response = client.delete(f"/api/v1/traces/{gone}")
    assert response.status_code == 200
    assert not Trace.objects.filter(pk=gone).exists()
    assert not Span.objects.filter(trace_id=gone).exists()
    assert Span.objects.filter(trace_id=keep).count() == 2
    assert client.delete(f"/api/v1/traces/{gone}").status_code == 404


def test_stats_counts_rates_tokens_and_interpolated_percentiles(client):
    for duration, error in ((100, False), (200, True), (300, False), (400, False), (1000, False)):
        make_trace(duration_ms=duration, error=error, tokens=5)
    stats = client.get("/api/v1/stats").json()
    assert stats["total_traces"] == 5 and stats["total_spans"] == 10
    assert stats["error_rate"] == 0.2
    assert stats["input_tokens"] == 25
    assert stats["p50_duration_ms"] == 300.0
    assert stats["p95_duration_ms"] == pytest.approx(400 + 0.8 * 600)  # percentile_cont


def test_stats_on_an_empty_store(client):
    stats = client.get("/api/v1/stats").json()
    assert stats["total_traces"] == 0 and stats["error_rate"] == 0.0
    assert stats["p50_duration_ms"] is None


def test_health(client):
    assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/api/v1/traces"), ("put", "/api/v1/stats"), ("delete", "/health"),
     ("post", "/api/v1/traces/ab"), ("patch", "/api/v1/traces/ab/tree")],
)  # fmt: skip
def test_wrong_methods_are_json_405_with_allow(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 405
    assert "not allowed" in response.json()["error"]
    assert "GET" in response["Allow"]


def test_head_is_allowed_where_get_is(client):
    assert client.head("/health").status_code == 200


def test_list_detail_and_tree_use_a_fixed_number_of_queries(client, django_assert_max_num_queries):
    ids = [make_trace(children=20) for _ in range(30)]
    with django_assert_max_num_queries(2):
        client.get("/api/v1/traces", {"limit": 50})
    with django_assert_max_num_queries(2):
        client.get(f"/api/v1/traces/{ids[0]}")
    with django_assert_max_num_queries(2):
        client.get(f"/api/v1/traces/{ids[0]}/tree")


def test_trace_summary_is_recomputed_exactly_when_spans_are_rewritten():
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    child = otlp.new_span_id()
    store(otlp.span(trace_id, child, "c", parent=root, gen_ai__usage__input_tokens=10))
    assert Trace.objects.get(pk=trace_id).root_span_name == ""
    store(
        otlp.span(trace_id, child, "c", parent=root, gen_ai__usage__input_tokens=30),
        otlp.span(trace_id, root, "r", duration_ms=50),
    )
    trace = Trace.objects.get(pk=trace_id)
    assert (trace.span_count, trace.input_tokens, trace.root_span_name) == (2, 30, "r")
    with CaptureQueriesContext(connection) as queries:
        store(otlp.span(trace_id, child, "c", parent=root))
    # One upsert batch, the summary recompute, the analytics hours marked out of date: a
    # fixed handful, never one per span.
    assert len(queries) <= 9


def test_list_takes_a_search_query(client):
    slow = make_trace(service="billing", duration_ms=3000, error=True)
    make_trace(service="billing", duration_ms=10)
    make_trace(service="search", duration_ms=5000)
    data = client.get("/api/v1/traces", {"q": "duration:>1s AND error:true"}).json()
    assert [t["trace_id"] for t in data["traces"]] == [slow] and data["total"] == 1
    data = client.get("/api/v1/traces", {"q": "duration:>1s", "service": "billing"}).json()
    assert [t["trace_id"] for t in data["traces"]] == [slow]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("duration:>1s AND (", "at"),
        ("duraton:>1s", 'did you mean "duration"'),
        ("duration:>abc", "duration"),
    ],
)
def test_a_bad_query_is_400_with_its_position_and_never_runs_unfiltered(client, query, fragment):
    make_trace()
    response = client.get("/api/v1/traces", {"q": query})
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == "q" and isinstance(body["position"], int)
    assert fragment in body["error"]
    assert "traces" not in body


def test_stats_is_a_fixed_handful_of_queries(client, django_assert_max_num_queries):
    for duration in (10, 20, 30):
        make_trace(duration_ms=duration)
    with django_assert_max_num_queries(3):  # totals, then one look-up per percentile
        client.get("/api/v1/stats")
