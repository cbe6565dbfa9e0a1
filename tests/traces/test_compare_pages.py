"""The compare page and ``/api/v1/compare``, on traces stored through the write path."""

from __future__ import annotations

import time

import pytest

from ingest.otlp import decode_protobuf, to_params
from ingest.writer import spans_ingest
from tests import otlp

pytestmark = pytest.mark.django_db
MS = 1_000_000


def run(steps: list[tuple[str, int, bool]], *, minutes_ago: int = 5) -> str:
    """A root "agent" with one child per (name, duration ms, failed) step, in order."""
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    base = time.time_ns() - minutes_ago * 60_000 * MS
    total = sum(duration for _, duration, _ in steps) + 10
    spans = [otlp.span(trace_id, root, "agent", base_ns=base, duration_ms=total)]
    at = 5
    for name, duration, failed in steps:
        spans.append(
            otlp.span(
                trace_id, otlp.new_span_id(), name, parent=root, base_ns=base, start_ms=at,
                duration_ms=duration, error="boom" if failed else None,
                gen_ai__usage__input_tokens=100 if name == "llm" else 0,
            )
        )  # fmt: skip
        at += duration
    spans_ingest(to_params(decode_protobuf(otlp.body(*spans)).rows))
    return trace_id


@pytest.fixture
def pair():
    a = run([("llm", 100, False), ("search", 50, False), ("llm", 100, False)])
    b = run(
        [("llm", 100, False), ("search", 50, True), ("search", 400, False), ("llm", 900, False)]
    )
    return a, b


def test_compare_page_shows_the_summary_and_the_biggest_regression_first(client, pair):
    a, b = pair
    response = client.get(f"/traces/compare?a={a}&b={b}")
    text = response.content.decode()
    assert response.status_code == 200
    assert "1 only in B" in text and "0 only in A" in text
    assert "ok → error" in text
    table = text[text.index("compare-table") :]
    # The root grew by 1.2 s, the second llm call by 800 ms, the added retry took 400 ms.
    assert table.index("+1.20 s") < table.index("+800 ms") < table.index("+400 ms")


def test_a_zero_baseline_is_new_not_a_division_by_zero(client):
    a = run([("llm", 100, False)])
    b = run([("llm", 100, True)])
    text = client.get(f"/traces/compare?a={a}&b={b}").content.decode()
    assert 'title="A had none: no percentage">new' in text


def test_threshold_hides_small_changes_but_keeps_added_spans(client, pair):
    a, b = pair
    text = client.get(f"/traces/compare?a={a}&b={b}&min_change=500").content.decode()
    table = text[text.index("compare-table") : text.index("By span name")]
    assert "+800 ms" in table and "+400 ms" in table  # the added retry stays
    assert table.count("data-pair=") == 4  # root, llm (+800), the retry, the status change


def test_aggregates_by_name(client, pair):
    a, b = pair
    text = client.get(f"/traces/compare?a={a}&b={b}").content.decode()
    aggregates = text[text.index("By span name") :]
    assert "1 / 50.0 ms" in aggregates and "2 / 450 ms" in aggregates  # search: 1 → 2 calls


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("a=&b=", 400, "a: give the id of trace A"),
        ("a=xyz&b=", 400, "a: &#x27;xyz&#x27; is not a trace id"),
        (f"a={'0' * 32}&b={'1' * 32}", 404, "a: no trace"),
    ],
)
def test_bad_compare_input_says_what_is_wrong(client, query, status, message):
    response = client.get(f"/traces/compare?{query}")
    assert response.status_code == status
    assert message in response.content.decode()


def test_bad_sort_and_threshold_are_400(client, pair):
    a, b = pair
    assert client.get(f"/traces/compare?a={a}&b={b}&sort=evil").status_code == 400
    assert client.get(f"/traces/compare?a={a}&b={b}&min_change=-1").status_code == 400
    assert client.get(f"/traces/compare?a={a}&b={b}&min_change=nan").status_code == 400
    assert client.get(f"/traces/compare?a={a}&b={b}&min_change=inf").status_code == 400


def test_compare_api_returns_the_same_comparison(client, pair):
    a, b = pair
    data = client.get(f"/api/v1/compare?a={a}&b={b}").json()
    assert data["a"]["trace_id"] == a and data["b"]["trace_id"] == b
    assert (data["matched"], data["added"], data["removed"], data["status_changes"]) == (4, 1, 0, 1)
    duration = next(item for item in data["summary"] if item["metric"] == "Duration")
    assert duration["trend"] == "worse" and duration["delta"] == 1_200 * MS
    added = [row for row in data["rows"] if row["kind"] == "added"]
    assert added[0]["path"] == "agent / search" and added[0]["b"]["duration_ms"] == 400


def test_compare_api_errors_are_json(client):
    response = client.get("/api/v1/compare?a=nope&b=")
    assert response.status_code == 400
    assert response.json()["parameter"] == "a"


def test_compare_page_query_count(client, pair, django_assert_num_queries):
    a, b = pair
    with django_assert_num_queries(3):  # both traces, then each one's span rows
        client.get(f"/traces/compare?a={a}&b={b}")
