"""Two runs side by side: which spans correspond, and what changed between them.

Span ids of two traces are unrelated, so spans pair by their place in the tree: the roots
always pair (they are "the run", even if renamed), then the children of each matched pair
are aligned by name in start order. A sequence alignment makes an extra retry in B one
"added" span instead of shifting every later pair; a second pass pairs leftovers of the
same name, so reordered siblings still match. A span that found no partner is "removed"
(only in A) or "added" (only in B) together with its whole subtree.

Pure Python over ``SpanLine`` lists in start order (as ``load_lines`` returns them); the
tree comes from ``tree.walk``, so orphans sit where the trace pages show them.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from traces.timeline import SpanLine
from traces.tree import walk

# SequenceMatcher is quadratic on long lists of few distinct names: an llm/tool loop of
# 1,000 siblings takes ~0.2 s, of 2,000 ~0.5 s. Past this, leftovers after the common head
# and tail pair k-th with k-th by name.
MAX_ALIGN = 1000

MATCHED, ADDED, REMOVED = "matched", "added", "removed"


def _duration(span: SpanLine | None) -> int:
    return span.duration_ns if span is not None else 0


def _tokens(span: SpanLine | None) -> int:
    return span.input_tokens + span.output_tokens if span is not None else 0


def _ms(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1_000_000, 3)


@dataclass(slots=True)
class Row:
    kind: str  # MATCHED, ADDED or REMOVED
    path: tuple[str, ...]  # names from the root down; A's names where A has the span
    depth: int
    a: SpanLine | None
    b: SpanLine | None
    renamed: bool = False  # only the roots pair under different names

    @property
    def duration_delta_ns(self) -> int:
        return _duration(self.b) - _duration(self.a)

    @property
    def tokens_delta(self) -> int:
        return _tokens(self.b) - _tokens(self.a)

    @property
    def cost_delta(self) -> float | None:
        """None when a side present in the row has an unknown cost: 0 would be a guess."""
        if (self.a is not None and self.a.cost is None) or (
            self.b is not None and self.b.cost is None
        ):
            return None
        return (self.b.cost if self.b else 0.0) - (self.a.cost if self.a else 0.0)

    @property
    def status_change(self) -> str:
        if self.a is None or self.b is None or self.a.is_error == self.b.is_error:
            return ""
        return "ok→error" if self.b.is_error else "error→ok"

    @property
    def regression_score(self) -> int:
        # Time is what "why is B slower" asks about: an added span costs all of its
        # duration, a removed one gives all of it back.
        return self.duration_delta_ns

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "path": " / ".join(self.path),
            "depth": self.depth,
            "renamed": self.renamed,
            "a": _span_dict(self.a),
            "b": _span_dict(self.b),
            "duration_delta_ms": _ms(self.duration_delta_ns),
            "tokens_delta": self.tokens_delta,
            "cost_delta": self.cost_delta,
            "status_change": self.status_change,
        }


def _span_dict(span: SpanLine | None) -> dict | None:
    if span is None:
        return None
    return {
        "span_id": span.span_id,
        "name": span.name,
        "duration_ms": _ms(span.duration_ns),
        "tokens": _tokens(span),
        "cost": span.cost,
        "is_error": span.is_error,
    }


@dataclass(slots=True)
class NameAggregate:
    name: str
    a_count: int = 0
    a_total_ns: int = 0
    b_count: int = 0
    b_total_ns: int = 0

    @property
    def a_mean_ns(self) -> float | None:
        return self.a_total_ns / self.a_count if self.a_count else None

    @property
    def b_mean_ns(self) -> float | None:
        return self.b_total_ns / self.b_count if self.b_count else None

    @property
    def total_delta_ns(self) -> int:
        return self.b_total_ns - self.a_total_ns

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "a_count": self.a_count,
            "a_total_ms": _ms(self.a_total_ns),
            "a_mean_ms": _ms(self.a_mean_ns),
            "b_count": self.b_count,
            "b_total_ms": _ms(self.b_total_ns),
            "b_mean_ms": _ms(self.b_mean_ns),
        }


@dataclass(slots=True)
class Comparison:
    rows: list[Row]  # tree order of the merged tree
    aggregates: list[NameAggregate]  # biggest change in total duration first
    matched: int
    added: int
    removed: int
    status_changes: int

    def by_regression(self) -> list[Row]:
        """Rows with the biggest slowdown first; equal scores by path."""
        return sorted(self.rows, key=lambda row: (-row.regression_score, row.path))

    def to_dict(self) -> dict:
        return {
            "matched": self.matched,
            "added": self.added,
            "removed": self.removed,
            "status_changes": self.status_changes,
            "rows": [row.to_dict() for row in self.rows],
            "aggregates": [aggregate.to_dict() for aggregate in self.aggregates],
        }


def _children(spans: Sequence[SpanLine]) -> dict[str | None, list[SpanLine]]:
    """Children by parent span id (None: the top level), each list in start order."""
    children: dict[str | None, list[SpanLine]] = defaultdict(list)
    for placed in walk(spans):
        parent = placed.parent.span_id if placed.parent is not None else None
        children[parent].append(placed.span)
    # walk lists a root's orphans after its real children; compare them by start.
    for kids in children.values():
        kids.sort(key=lambda span: span.start_ns)
    return children


def _pair_indexes(names_a: list[str], names_b: list[str]) -> dict[int, int]:
    """Index in B for each index in A that found a partner of the same name."""
    b_for_a: dict[int, int] = {}
    # Equal heads and tails pair in linear time: identical runs and a single retry never
    # reach SequenceMatcher.
    limit = min(len(names_a), len(names_b))
    head = 0
    while head < limit and names_a[head] == names_b[head]:
        b_for_a[head] = head
        head += 1
    tail = 0
    while tail < limit - head and names_a[-1 - tail] == names_b[-1 - tail]:
        b_for_a[len(names_a) - 1 - tail] = len(names_b) - 1 - tail
        tail += 1
    middle_a = names_a[head : len(names_a) - tail]
    middle_b = names_b[head : len(names_b) - tail]
    if middle_a and middle_b and max(len(middle_a), len(middle_b)) <= MAX_ALIGN:
        matcher = SequenceMatcher(None, middle_a, middle_b, autojunk=False)
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                b_for_a[head + block.a + k] = head + block.b + k
    # Leftovers of the same name pair in start order: reordered siblings, and the k-th
    # with the k-th when the lists were too long to align.
    taken = set(b_for_a.values())
    free: dict[str, deque[int]] = defaultdict(deque)
    for j, name in enumerate(names_b):
        if j not in taken:
            free[name].append(j)
    for i, name in enumerate(names_a):
        if i not in b_for_a and free.get(name):
            b_for_a[i] = free[name].popleft()
    return b_for_a


def _align(
    kids_a: list[SpanLine], kids_b: list[SpanLine]
) -> list[tuple[SpanLine | None, SpanLine | None]]:
    """Sibling pairs, partnerless ones with None, in B's order.

    A span only in A goes right after the B partner of its nearest matched elder sibling,
    so the merged list reads like both runs at once.
    """
    if not kids_a or not kids_b:  # most spans are leaves: nothing to align
        return [(span, None) for span in kids_a] + [(None, span) for span in kids_b]
    b_for_a = _pair_indexes([s.name for s in kids_a], [s.name for s in kids_b])
    a_for_b = {j: i for i, j in b_for_a.items()}
    keyed: list[tuple[tuple[int, int, int], SpanLine | None, SpanLine | None]] = []
    for j, span_b in enumerate(kids_b):
        i = a_for_b.get(j)
        keyed.append(((j, 0, 0), kids_a[i] if i is not None else None, span_b))
    after = -1
    for i, span_a in enumerate(kids_a):
        j = b_for_a.get(i)
        if j is None:
            keyed.append(((after, 1, i), span_a, None))
        else:
            after = j
    keyed.sort(key=lambda item: item[0])
    return [(span_a, span_b) for _, span_a, span_b in keyed]


def _aggregates(a: Iterable[SpanLine], b: Iterable[SpanLine]) -> list[NameAggregate]:
    by_name: dict[str, NameAggregate] = {}
    for span in a:
        aggregate = by_name.setdefault(span.name, NameAggregate(span.name))
        aggregate.a_count += 1
        aggregate.a_total_ns += span.duration_ns
    for span in b:
        aggregate = by_name.setdefault(span.name, NameAggregate(span.name))
        aggregate.b_count += 1
        aggregate.b_total_ns += span.duration_ns
    return sorted(
        by_name.values(),
        key=lambda agg: (-abs(agg.b_total_ns - agg.a_total_ns), agg.name),
    )


def compare(a: Sequence[SpanLine], b: Sequence[SpanLine]) -> Comparison:
    """Align run B against run A, spans in start order as ``load_lines`` returns them."""
    children_a, children_b = _children(a), _children(b)
    tops_a, tops_b = children_a.get(None, []), children_b.get(None, [])
    if len(tops_a) == 1 and len(tops_b) == 1:
        top_pairs = [(tops_a[0], tops_b[0])]  # the runs themselves, whatever their names
    else:
        # A missing root leaves several spans at the top (as tree.walk places them).
        top_pairs = _align(tops_a, tops_b)

    rows: list[Row] = []
    counts = {MATCHED: 0, ADDED: 0, REMOVED: 0}
    empty: list[SpanLine] = []
    # An explicit stack, as in tree.walk: no recursion limit to reason about.
    stack = [(span_a, span_b, 0, ()) for span_a, span_b in reversed(top_pairs)]
    while stack:
        span_a, span_b, depth, above = stack.pop()
        if span_a is not None and span_b is not None:
            kind, name = MATCHED, span_a.name
            kids = _align(
                children_a.get(span_a.span_id, empty), children_b.get(span_b.span_id, empty)
            )
        elif span_a is not None:
            kind, name = REMOVED, span_a.name
            kids = [(kid, None) for kid in children_a.get(span_a.span_id, empty)]
        else:
            kind, name = ADDED, span_b.name
            kids = [(None, kid) for kid in children_b.get(span_b.span_id, empty)]
        path = (*above, name)
        renamed = kind == MATCHED and span_a.name != span_b.name
        rows.append(Row(kind, path, depth, span_a, span_b, renamed))
        counts[kind] += 1
        stack.extend((kid_a, kid_b, depth + 1, path) for kid_a, kid_b in reversed(kids))

    return Comparison(
        rows=rows,
        aggregates=_aggregates(a, b),
        matched=counts[MATCHED],
        added=counts[ADDED],
        removed=counts[REMOVED],
        status_changes=sum(1 for row in rows if row.status_change),
    )


@dataclass(slots=True)
class Metric:
    """One line of the summary: a figure of A and of B, and what the change means."""

    label: str
    unit: str  # "duration" (ns), "count" or "money": how pages format it
    a: float
    b: float
    judged: bool  # more is worse (time, errors, tokens, cost); span counts are neutral

    @property
    def delta(self) -> float:
        return self.b - self.a

    @property
    def percent(self) -> float | None:
        """None on a zero baseline: the change is "new", not a division by zero."""
        return None if self.a == 0 else self.delta / self.a * 100

    @property
    def trend(self) -> str:
        if self.delta == 0:
            return "same"
        if self.a == 0:
            return "new"
        if not self.judged:
            return "neutral"
        return "worse" if self.delta > 0 else "better"

    def to_dict(self) -> dict:
        return {
            "metric": self.label, "a": self.a, "b": self.b, "delta": self.delta,
            "percent": None if self.percent is None else round(self.percent, 2),
            "trend": self.trend,
        }  # fmt: skip


_SUMMARY = (
    ("Duration", "duration_ns", "duration", True), ("Spans", "span_count", "count", False),
    ("Errors", "error_count", "count", True), ("Input tokens", "input_tokens", "count", True),
    ("Output tokens", "output_tokens", "count", True), ("Cost", "cost", "money", True),
)  # fmt: skip


def summary(a, b) -> list[Metric]:
    """The headline figures of two ``Trace`` rows (their summary columns), B against A."""
    return [
        Metric(label, unit, getattr(a, column), getattr(b, column), judged)
        for label, column, unit, judged in _SUMMARY
    ]
