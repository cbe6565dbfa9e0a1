from __future__ import annotations

from traces.models import Span
from traces.tree import MAX_DEPTH, build_tree, walk


def _span(span_id, parent="", start=0):
    return Span(
        span_id=span_id,
        parent_span_id=parent,
        name=f"n{span_id}",
        start_ns=start,
        end_ns=start + 1,
        duration_ns=1,
    )


def _names(node):
    return {
        "span": node["span"]["span_id"] if node["span"] else None,
        "children": [_names(child) for child in node["children"]],
        **({"orphan": True} if node.get("orphan") else {}),
    }


def _to_dict(span):
    return {"span_id": span.span_id}


def test_nested_tree_in_start_order():
    spans = [_span("r"), _span("a", "r", 1), _span("b", "r", 2), _span("c", "a", 3)]
    assert _names(build_tree(spans, _to_dict)) == {
        "span": "r",
        "children": [
            {"span": "a", "children": [{"span": "c", "children": []}]},
            {"span": "b", "children": []},
        ],
    }


def test_missing_parents_second_roots_and_cycles_are_orphans_under_the_root():
    spans = [
        _span("r"),
        _span("lost", "gone", 1),
        _span("r2", "", 2),
        _span("x", "y", 3),
        _span("y", "x", 4),
        _span("self", "self", 5),
    ]
    tree = _names(build_tree(spans, _to_dict))
    assert tree["span"] == "r"
    orphans = {child["span"]: child for child in tree["children"]}
    assert set(orphans) == {"lost", "r2", "x", "self"}
    assert all(child["orphan"] for child in orphans.values())
    assert orphans["x"]["children"] == [{"span": "y", "children": []}]
    assert sum(1 for _ in walk(spans)) == len(spans)


def test_a_missing_root_gives_a_placeholder_holding_every_span():
    tree = build_tree([_span("a", "gone"), _span("b", "a", 1)], _to_dict)
    assert tree["span"] is None and tree["missing_root"] is True
    assert tree["children"][0]["span"]["span_id"] == "a"
    assert tree["children"][0]["children"][0]["span"]["span_id"] == "b"


def test_a_very_deep_chain_is_flattened_below_max_depth_and_nothing_is_lost():
    spans = [_span("s0")] + [_span(f"s{i}", f"s{i - 1}", i) for i in range(1, 5000)]
    placed = list(walk(spans))
    assert len(placed) == 5000
    assert max(p.depth for p in placed) == MAX_DEPTH
    assert sum(p.depth_limited for p in placed) == 5000 - MAX_DEPTH - 1
    import json

    json.dumps(build_tree(spans, _to_dict))  # encodable, no RecursionError


def test_empty_trace():
    assert build_tree([], _to_dict) == {"span": None, "missing_root": True, "children": []}
