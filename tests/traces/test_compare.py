from __future__ import annotations

import json
import random
import time

import pytest

from traces.compare import Row, compare
from traces.timeline import SpanLine

MS = 1_000_000


def _line(span_id, parent, name, start, ms=1, **fields):
    line = SpanLine(
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        span_type="",
        kind="internal",
        start_ns=start,
        duration_ns=ms * MS,
        is_error=False,
        service_name="agent",
        model="",
        input_tokens=0,
        output_tokens=0,
        cost=0.0,
    )
    for field, value in fields.items():
        setattr(line, field, value)
    return line


def _s(name, *children, ms=1, **fields):
    return (name, children, ms, fields)


def _trace(root, prefix):
    """Spans of a nested ``_s(...)`` tree in start order, ids ``prefix0``, ``prefix1``... in
    depth-first order, so a test can name the span it means."""
    lines = []

    def add(node, parent):
        name, children, ms, fields = node
        span_id = f"{prefix}{len(lines)}"
        lines.append(_line(span_id, parent, name, len(lines) * 1000, ms, **fields))
        for child in children:
            add(child, span_id)

    add(root, "")
    return lines


def _pairs(comparison):
    return {row.a.span_id: row.b.span_id for row in comparison.rows if row.kind == "matched"}


def _ids(rows, kind):
    return [(row.a or row.b).span_id for row in rows if row.kind == kind]


def _agent(*steps):
    return _s("run", *(_s("step", *(_s(name) for name in names)) for names in steps))


def test_identical_traces_match_every_span_with_zero_deltas():
    tree = _s("run", _s("plan"), _s("step", _s("llm"), _s("tool")), _s("answer"), ms=10)
    comparison = compare(_trace(tree, "a"), _trace(tree, "b"))
    assert (comparison.matched, comparison.added, comparison.removed) == (6, 0, 0)
    assert _pairs(comparison) == {f"a{i}": f"b{i}" for i in range(6)}
    for row in comparison.rows:
        assert row.duration_delta_ns == 0
        assert row.tokens_delta == 0
        assert row.cost_delta == 0.0
        assert row.status_change == ""
        assert not row.renamed
    assert [row.path for row in comparison.rows][:4] == [
        ("run",),
        ("run", "plan"),
        ("run", "step"),
        ("run", "step", "llm"),
    ]
    assert [row.depth for row in comparison.rows] == [0, 1, 1, 2, 2, 1]


def test_an_extra_retry_in_b_is_one_added_span_and_later_siblings_still_pair():
    a = _trace(_s("run", _s("plan"), _s("llm"), _s("tool"), _s("llm"), _s("answer")), "a")
    b = _trace(
        _s("run", _s("plan"), _s("llm"), _s("tool"), _s("tool"), _s("llm"), _s("answer")), "b"
    )
    comparison = compare(a, b)
    assert (comparison.matched, comparison.added, comparison.removed) == (6, 1, 0)
    assert _ids(comparison.rows, "added") == ["b4"]
    assert _pairs(comparison) == {
        "a0": "b0",
        "a1": "b1",
        "a2": "b2",
        "a3": "b3",
        "a4": "b5",
        "a5": "b6",
    }
    # The aligned view shows the retry where it happened.
    assert [(row.a or row.b).name for row in comparison.rows] == [
        "run", "plan", "llm", "tool", "tool", "llm", "answer",
    ]  # fmt: skip


def test_a_branch_only_in_a_is_removed_with_its_whole_subtree():
    a = _trace(
        _s("run", _s("plan"), _s("research", _s("search"), _s("fetch", _s("parse"))), _s("answer")),
        "a",
    )
    b = _trace(_s("run", _s("plan"), _s("answer")), "b")
    comparison = compare(a, b)
    assert (comparison.matched, comparison.added, comparison.removed) == (3, 0, 4)
    assert [(row.kind, row.path, row.depth) for row in comparison.rows] == [
        ("matched", ("run",), 0),
        ("matched", ("run", "plan"), 1),
        ("removed", ("run", "research"), 1),
        ("removed", ("run", "research", "search"), 2),
        ("removed", ("run", "research", "fetch"), 2),
        ("removed", ("run", "research", "fetch", "parse"), 3),
        ("matched", ("run", "answer"), 1),
    ]
    removed = [row for row in comparison.rows if row.kind == "removed"]
    assert all(row.b is None for row in removed)
    assert removed[0].duration_delta_ns == -1 * MS


def test_reordered_siblings_still_match_by_name():
    a = _trace(_s("run", _s("search"), _s("fetch"), _s("rank"), _s("answer")), "a")
    b = _trace(_s("run", _s("rank"), _s("fetch"), _s("search"), _s("answer")), "b")
    comparison = compare(a, b)
    assert (comparison.matched, comparison.added, comparison.removed) == (5, 0, 0)
    assert all(row.a.name == row.b.name for row in comparison.rows)
    assert _pairs(comparison) == {"a0": "b0", "a1": "b3", "a2": "b2", "a3": "b1", "a4": "b4"}


def test_repeated_names_pair_within_their_own_loop_iteration():
    a = _trace(_agent(["llm", "tool"], ["llm"]), "a")
    b = _trace(_agent(["llm", "tool", "tool"], ["llm", "tool"]), "b")
    # a: a0 run, a1 step, a2 llm, a3 tool, a4 step, a5 llm
    # b: b0 run, b1 step, b2 llm, b3 tool, b4 tool, b5 step, b6 llm, b7 tool
    comparison = compare(a, b)
    pairs = _pairs(comparison)
    assert pairs == {"a0": "b0", "a1": "b1", "a2": "b2", "a3": "b3", "a4": "b5", "a5": "b6"}
    assert _ids(comparison.rows, "added") == ["b4", "b7"]
    parent_a = {line.span_id: line.parent_span_id for line in a}
    parent_b = {line.span_id: line.parent_span_id for line in b}
    for span_a, span_b in pairs.items():
        if parent_a[span_a]:
            assert pairs[parent_a[span_a]] == parent_b[span_b]


def test_different_roots_still_pair_and_are_marked_renamed():
    a = _trace(_s("run-v1", _s("llm")), "a")
    b = _trace(_s("run-v2", _s("llm")), "b")
    comparison = compare(a, b)
    assert [(row.kind, row.renamed) for row in comparison.rows] == [
        ("matched", True),
        ("matched", False),
    ]
    assert comparison.rows[1].path == ("run-v1", "llm")


def test_orphans_pair_where_the_tree_places_them_under_the_root():
    a = _trace(_s("run", _s("llm"), _s("tool")), "a")
    b = [_line("b0", "", "run", 0), _line("b1", "lost", "llm", 1), _line("b2", "b0", "tool", 2)]
    comparison = compare(a, b)
    assert _pairs(comparison) == {"a0": "b0", "a1": "b1", "a2": "b2"}


def test_a_missing_root_aligns_the_spans_at_the_top_by_name():
    a = [_line("a1", "gone", "llm", 1), _line("a2", "gone", "tool", 2)]
    b = [_line("b1", "gone", "llm", 1), _line("b2", "gone", "llm", 2)]
    comparison = compare(a, b)
    assert _pairs(comparison) == {"a1": "b1"}
    assert _ids(comparison.rows, "removed") == ["a2"]
    assert _ids(comparison.rows, "added") == ["b2"]


def test_one_empty_trace_makes_everything_added_or_removed():
    spans = _trace(_s("run", _s("step", _s("llm")), _s("answer")), "x")
    added = compare([], spans)
    assert (added.matched, added.added, added.removed) == (0, 4, 0)
    assert _ids(added.rows, "added") == ["x0", "x1", "x2", "x3"]
    assert [row.depth for row in added.rows] == [0, 1, 2, 1]
    removed = compare(spans, [])
    assert (removed.matched, removed.added, removed.removed) == (0, 0, 4)
    assert removed.rows[0].duration_delta_ns == -1 * MS
    nothing = compare([], [])
    assert (nothing.rows, nothing.aggregates, nothing.matched) == ([], [], 0)


def test_status_changes_are_reported_both_ways():
    a = _trace(_s("run", _s("llm"), _s("tool", is_error=True)), "a")
    b = _trace(_s("run", _s("llm", is_error=True), _s("tool"), _s("retry", is_error=True)), "b")
    comparison = compare(a, b)
    assert [row.status_change for row in comparison.rows] == ["", "ok→error", "error→ok", ""]
    assert comparison.status_changes == 2
    assert comparison.to_dict()["rows"][1]["status_change"] == "ok→error"


def test_an_unknown_cost_gives_an_unknown_cost_delta_not_zero():
    a = _trace(
        _s("run", _s("known", cost=0.25), _s("unknown", cost=None), _s("gone", cost=0.1)), "a"
    )
    b = _trace(
        _s("run", _s("known", cost=0.75), _s("unknown", cost=0.5), _s("new", cost=None)), "b"
    )
    deltas = {(row.a or row.b).name: row.cost_delta for row in compare(a, b).rows}
    assert deltas["known"] == pytest.approx(0.5)
    assert deltas["unknown"] is None
    assert deltas["gone"] == pytest.approx(-0.1)
    assert deltas["new"] is None


def test_token_deltas_add_input_and_output_tokens():
    a = _trace(_s("run", _s("llm", input_tokens=100, output_tokens=20)), "a")
    b = _trace(
        _s("run", _s("llm", input_tokens=150, output_tokens=50), _s("extra", input_tokens=7)), "b"
    )
    deltas = [row.tokens_delta for row in compare(a, b).rows]
    assert deltas == [0, 80, 7]


def test_aggregates_count_total_and_average_by_name():
    a = _trace(_s("run", _s("llm", ms=100), _s("tool", ms=50), _s("llm", ms=300), ms=500), "a")
    b = _trace(_s("run", _s("llm", ms=100), _s("llm", ms=200), _s("llm", ms=600), ms=1000), "b")
    aggregates = compare(a, b).aggregates
    assert [agg.name for agg in aggregates] == ["llm", "run", "tool"]  # by |change in total|
    llm, run, tool = aggregates
    assert (llm.a_count, llm.a_total_ns, llm.a_mean_ns) == (2, 400 * MS, 200 * MS)
    assert (llm.b_count, llm.b_total_ns, llm.b_mean_ns) == (3, 900 * MS, 300 * MS)
    assert (tool.b_count, tool.b_total_ns, tool.b_mean_ns) == (0, 0, None)
    assert run.a_mean_ns == 500 * MS


def test_by_regression_puts_the_biggest_slowdown_first():
    a = _trace(
        _s("run", _s("plan", ms=10), _s("llm", ms=300), _s("tool", ms=200), _s("cache", ms=100),
           _s("answer", ms=10), ms=1000),
        "a",
    )  # fmt: skip
    b = _trace(
        _s("run", _s("plan", ms=10), _s("llm", ms=700), _s("tool", ms=150), _s("extra", ms=50),
           _s("answer", ms=10), ms=1500),
        "b",
    )  # fmt: skip
    comparison = compare(a, b)
    ranked = [(row.path[-1], row.regression_score // MS) for row in comparison.by_regression()]
    assert ranked == [
        ("run", 500), ("llm", 400), ("extra", 50), ("answer", 0), ("plan", 0), ("tool", -50),
        ("cache", -100),
    ]  # fmt: skip
    assert [row.path[-1] for row in comparison.rows][:2] == ["run", "plan"]  # tree order kept


def test_to_dict_is_plain_json_with_milliseconds_and_joined_paths():
    a = _trace(_s("run", _s("llm", ms=2)), "a")
    b = _trace(_s("run", _s("llm", ms=5, cost=None)), "b")
    data = json.loads(json.dumps(compare(a, b).to_dict()))
    assert data["matched"] == 2
    row = data["rows"][1]
    assert row["path"] == "run / llm"
    assert row["a"]["span_id"] == "a1"
    assert row["b"]["duration_ms"] == 5.0
    assert row["duration_delta_ms"] == 3.0
    assert row["cost_delta"] is None
    assert data["aggregates"][0] == {
        "name": "llm",
        "a_count": 1,
        "a_total_ms": 2.0,
        "a_mean_ms": 2.0,
        "b_count": 1,
        "b_total_ms": 5.0,
        "b_mean_ms": 5.0,
    }


def _realistic(prefix, rng):
    """root → 50 steps → llm/tool turns, each tool with an http child: ~5,000 spans.

    Each run drops or repeats some tool calls, so the alignment has real work to do.
    """
    lines = [_line(f"{prefix}0", "", "run", 0)]

    def add(parent, name):
        lines.append(_line(f"{prefix}{len(lines)}", parent, name, len(lines), rng.randint(1, 9)))
        return lines[-1].span_id

    for _ in range(50):
        step = add(f"{prefix}0", "step")
        for _ in range(33):
            add(step, "llm")
            for _ in range(rng.choice((0, 1, 1, 1, 2))):
                add(add(step, "tool"), "http")
    return lines


def test_two_realistic_5000_span_traces_compare_quickly():
    rng = random.Random(7)
    a, b = _realistic("a", rng), _realistic("b", rng)
    assert len(a) > 4500 and len(b) > 4500
    started = time.perf_counter()
    comparison = compare(a, b)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0
    assert comparison.matched + comparison.removed == len(a)
    assert comparison.matched + comparison.added == len(b)
    assert comparison.matched > 0.8 * min(len(a), len(b))


def test_a_flat_5000_sibling_trace_stays_fast_and_pairs_kth_with_kth_by_name():
    rng = random.Random(11)
    names = ("llm", "tool", "retrieve")

    def flat(prefix):
        children = [
            _line(f"{prefix}{i}", f"{prefix}root", rng.choice(names), i + 1) for i in range(5000)
        ]
        return [_line(f"{prefix}root", "", "run", 0), *children]

    a, b = flat("a"), flat("b")
    started = time.perf_counter()
    comparison = compare(a, b)
    assert time.perf_counter() - started < 1.0
    for name in names:
        in_a = [line.span_id for line in a if line.name == name]
        in_b = [line.span_id for line in b if line.name == name]
        paired = [
            (row.a.span_id, row.b.span_id)
            for row in comparison.rows[1:]
            if row.kind == "matched" and row.a.name == name
        ]
        assert sorted(paired) == sorted(zip(in_a, in_b, strict=False))


def test_rows_are_row_instances_in_tree_order_of_the_merged_tree():
    a = _trace(_s("run", _s("step", _s("llm")), _s("old")), "a")
    b = _trace(_s("run", _s("new", _s("llm")), _s("step", _s("llm"))), "b")
    rows = compare(a, b).rows
    assert all(isinstance(row, Row) for row in rows)
    assert [(row.kind, row.path) for row in rows] == [
        ("matched", ("run",)),
        ("added", ("run", "new")),
        ("added", ("run", "new", "llm")),
        ("matched", ("run", "step")),
        ("matched", ("run", "step", "llm")),
        ("removed", ("run", "old")),
    ]


def test_a_retry_in_a_loop_too_long_to_align_is_still_one_added_span():
    turns = ["llm", "tool"] * 1500
    a = _trace(_s("run", *(_s(name) for name in turns)), "a")
    b = _trace(_s("run", *(_s(name) for name in [*turns[:1001], "tool", *turns[1001:]])), "b")
    comparison = compare(a, b)
    assert (comparison.matched, comparison.added, comparison.removed) == (3001, 1, 0)
    assert _ids(comparison.rows, "added") == ["b1003"]
