"""A trace's spans as a tree, robust to what arrives over the wire.

Spans whose parent never arrived, extra parentless spans, and parent cycles all hang under
the root marked ``orphan``: nothing is dropped. Iterative, so a 50,000-span chain cannot
overflow the stack; nesting beyond ``MAX_DEPTH`` is flattened onto the deepest allowed
ancestor (marked ``depth_limited``) so any JSON encoder can write it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from traces.models import Span

MAX_DEPTH = 100


@dataclass(slots=True)
class Placed:
    span: Span
    depth: int
    parent: Span | None  # the span it hangs under in the tree (None for the root)
    orphan: bool = False
    depth_limited: bool = False


def walk(spans: Sequence[Span]) -> Iterator[Placed]:
    """Spans in depth-first tree order (children by start time), each placed once."""
    by_id = {span.span_id: span for span in spans}
    children: dict[str, list[Span]] = defaultdict(list)
    parentless: list[Span] = []
    for span in spans:  # already in start order
        parent_id = span.parent_span_id
        if parent_id and parent_id in by_id and parent_id != span.span_id:
            children[parent_id].append(span)
        else:
            parentless.append(span)
    root = next((span for span in parentless if not span.parent_span_id), None)
    visited: set[str] = set()

    def descend(top: Span, depth: int, parent: Span | None, orphan: bool) -> Iterator[Placed]:
        stack = [(top, depth, parent, orphan, False)]
        while stack:
            span, level, above, is_orphan, limited = stack.pop()
            if span.span_id in visited:  # a parent cycle: already placed
                continue
            visited.add(span.span_id)
            yield Placed(span, level, above, is_orphan, limited)
            kids = children.get(span.span_id, ())
            if level + 1 > MAX_DEPTH:
                # Too deep: its children hang beside it, under the same parent.
                entries = [(kid, level, above, False, True) for kid in kids]
            else:
                entries = [(kid, level + 1, span, False, False) for kid in kids]
            stack.extend(reversed(entries))

    base_depth = 0
    if root is not None:
        yield from descend(root, 0, None, False)
        base_depth = 1
    # Parent missing, or a second parentless span: an orphan under the root.
    for span in parentless:
        if span.span_id not in visited:
            yield from descend(span, base_depth, root, True)
    # What is left sits on a parent cycle that nothing reaches: cut it at its earliest span.
    for span in spans:
        if span.span_id not in visited:
            yield from descend(span, base_depth, root, True)


def build_tree(spans: Sequence[Span], to_dict: Callable[[Span], dict]) -> dict:
    """The seed's shape: ``{"span": ..., "children": [...]}`` from the root down."""
    nodes: dict[str, dict] = {}
    top: dict | None = None
    for placed in walk(spans):
        node = {"span": to_dict(placed.span), "children": []}
        if placed.orphan:
            node["orphan"] = True
        if placed.depth_limited:
            node["depth_limited"] = True
        nodes[placed.span.span_id] = node
        if placed.parent is None and top is None and not placed.orphan:
            top = node
            continue
        if placed.parent is not None:
            nodes[placed.parent.span_id]["children"].append(node)
        else:
            if top is None:
                # The root never arrived: a placeholder holds what did.
                top = {"span": None, "missing_root": True, "children": []}
            top["children"].append(node)
    return top or {"span": None, "missing_root": True, "children": []}
