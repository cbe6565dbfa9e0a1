"""A trace's spans laid out for the timeline and tree: order, depth, bar geometry, ticks.

Everything a row needs is computed here so templates only format. Rows are loaded as
plain tuples of the few columns the timeline shows (not the ~2 KB span rows with their
JSON), which is what keeps a 5,000-span page well under half a second of server time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from traces.models import Span, Trace
from traces.tree import walk

# Rows rendered per request; the rest arrive with "show more" (HTMX) or plain links.
WINDOW = 500

_FIELDS = (
    "span_id", "parent_span_id", "name", "span_type", "kind", "start_ns", "duration_ns",
    "is_error", "service_name", "model", "input_tokens", "output_tokens", "cost",
)  # fmt: skip

# span_type values that get their own colour and icon; anything else is drawn as "other".
TYPE_LABELS = {
    "llm": "LLM", "tool": "Tool", "agent": "Agent", "retriever": "Retr", "embedding": "Embed",
    "chain": "Chain", "reranker": "Rerank", "guardrail": "Guard",
}  # fmt: skip


@dataclass(slots=True)
class SpanLine:
    span_id: str
    parent_span_id: str
    name: str
    span_type: str
    kind: str
    start_ns: int
    duration_ns: int
    is_error: bool
    service_name: str
    model: str
    input_tokens: int
    output_tokens: int
    cost: float | None


@dataclass(slots=True)
class Row:
    span: SpanLine
    index: int  # position in tree order, over the whole trace
    depth: int
    parent_id: str
    has_children: bool
    orphan: bool
    left: str  # bar offset and width, percent of the trace's duration, as SVG attributes
    width: str
    offset_ns: int  # start relative to the trace's start

    @property
    def type_class(self) -> str:
        return self.span.span_type if self.span.span_type in TYPE_LABELS else "other"

    @property
    def type_label(self) -> str:
        return TYPE_LABELS.get(self.span.span_type, "")


@dataclass(slots=True)
class Layout:
    rows: list[Row]  # every row, in tree order
    start_ns: int
    duration_ns: int
    ticks: list[tuple[str, int, str]]  # (percent, ns from start, SVG text-anchor)
    first_error: str | None
    max_depth: int

    def index_of(self, span_id: str) -> int | None:
        for row in self.rows:
            if row.span.span_id == span_id:
                return row.index
        return None


def load_lines(trace: Trace) -> list[SpanLine]:
    """The trace's spans, start order, as light rows."""
    values = Span.objects.filter(trace=trace).in_tree_order().values_list(*_FIELDS)
    return [SpanLine(*value) for value in values]


def nice_step(duration_ns: int, target: int = 6) -> int:
    """A round tick interval (1, 2 or 5 × 10^k ns) giving about ``target`` ticks."""
    if duration_ns <= 0:
        return 1
    raw = duration_ns / target
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return int(factor * magnitude)
    return int(10 * magnitude)


def _percent(part: float, whole: float) -> str:
    return f"{part / whole * 100:.3f}" if whole > 0 else "0"


def lay_out(lines: list[SpanLine], scale_ns: int | None = None) -> Layout:
    """Rows in tree order with bar geometry; ``scale_ns`` puts two traces on one time axis."""
    if not lines:
        return Layout([], 0, 0, [], None, 0)
    start = min(line.start_ns for line in lines)
    end = max(line.start_ns + line.duration_ns for line in lines)
    total = max(scale_ns or end - start, 1)
    placed = list(walk(lines))
    parents_with_children = {p.parent.span_id for p in placed if p.parent is not None}
    rows = []
    first_error = None
    max_depth = 0
    for index, item in enumerate(placed):
        line = item.span
        offset = line.start_ns - start
        # A zero-length span still gets a visible sliver.
        width = max(line.duration_ns / total * 100, 0.15)
        left = min(offset / total * 100, 100 - width)
        rows.append(
            Row(
                span=line,
                index=index,
                depth=item.depth,
                parent_id=item.parent.span_id if item.parent is not None else "",
                has_children=line.span_id in parents_with_children,
                orphan=item.orphan,
                left=f"{max(left, 0):.3f}",
                width=f"{width:.3f}",
                offset_ns=offset,
            )
        )
        if line.is_error and first_error is None:
            first_error = line.span_id
        max_depth = max(max_depth, item.depth)
    return Layout(rows, start, total, axis_ticks(total), first_error, max_depth)


def axis_ticks(total_ns: int) -> list[tuple[str, int, str]]:
    """(percent, ns, SVG text-anchor) at round intervals across ``total_ns``."""
    total_ns = max(total_ns, 1)
    step = nice_step(total_ns)
    # A tick too close to the right edge would print over its neighbour's label.
    return [
        (_percent(ns, total_ns), ns, "start")
        for ns in range(0, total_ns + 1, step)
        if ns == 0 or ns / total_ns <= 0.9
    ]


def narrow(layout: Layout, needle: str) -> list[Row]:
    """Rows whose name, type, service, model or id contain ``needle``, with their ancestors.

    Ancestors stay so a match is shown where it sits in the tree.
    """
    needle = needle.casefold()
    by_id = {row.span.span_id: row for row in layout.rows}
    keep: set[int] = set()
    for row in layout.rows:
        line = row.span
        fields = (line.name, line.span_type, line.service_name, line.model, line.span_id)
        haystack = "\n".join(fields)
        if needle in haystack.casefold():
            current: Row | None = row
            while current is not None and current.index not in keep:
                keep.add(current.index)
                current = by_id.get(current.parent_id)
    return [row for row in layout.rows if row.index in keep]
