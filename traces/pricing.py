"""What a span's tokens cost: matching a model to a price, and the arithmetic, explained.

A span that reports its own cost keeps it (``ingest.conventions``). For the others the
writer looks the model up here: the most specific ``ModelPrice`` pattern that matches
(an exact name beats any glob; among globs, the one with the most literal characters),
the row of that pattern valid on the span's day, a row of the span's own provider
preferred. Spans with tokens and no price are "unpriced", never a silent $0.

Token arithmetic, per the OTel GenAI conventions (and OpenAI, OpenInference): input
tokens *include* the cache-read and cache-write tokens, and output tokens *include* the
reasoning tokens; each part is priced at its own rate and counted once. Some
instrumentations report Anthropic's raw usage, where input excludes the cache: when the
cache tokens exceed the input tokens they cannot be part of it, and are added instead.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from django.db.models import Count, Max
from django.db.models.signals import post_delete, post_save

from traces.models import ModelPrice, Span


@dataclass(frozen=True, slots=True)
class Price:
    """A ``ModelPrice`` row, read once: prices are per million tokens."""

    id: int
    pattern: str
    provider: str
    valid_from: date
    input: Decimal
    output: Decimal
    cache_read: Decimal | None
    cache_write: Decimal | None
    reasoning: Decimal | None
    currency: str

    @classmethod
    def of(cls, row: ModelPrice) -> Price:
        return cls(
            row.pk, row.pattern, row.provider, row.valid_from, row.input_per_million,
            row.output_per_million, row.cache_read_per_million, row.cache_write_per_million,
            row.reasoning_per_million, row.currency,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Line:
    """One priced part of a cost: ``tokens`` at ``rate`` per million."""

    label: str
    tokens: int
    rate: Decimal
    note: str = ""  # e.g. "input price" when a cache price falls back to it

    @property
    def amount(self) -> float:
        return float(self.tokens * self.rate / 1_000_000)


@dataclass(frozen=True, slots=True)
class Costing:
    price: Price
    lines: tuple[Line, ...]

    @property
    def total(self) -> float:
        return sum(line.amount for line in self.lines)


def cost_of(
    price: Price,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> Costing:
    """The cost of these tokens at ``price``, part by part (see the module's rules)."""
    cached = cache_read_tokens + cache_write_tokens
    fresh_input = input_tokens - cached if cached <= input_tokens else input_tokens
    visible_output = (
        output_tokens - reasoning_tokens if reasoning_tokens <= output_tokens else output_tokens
    )
    parts = (
        ("input", fresh_input, price.input, ""),
        ("cache read", cache_read_tokens, price.cache_read, "input price"),
        ("cache write", cache_write_tokens, price.cache_write, "input price"),
        ("output", visible_output, price.output, ""),
        ("reasoning", reasoning_tokens, price.reasoning, "output price"),
    )
    lines = []
    for label, tokens, rate, fallback in parts:
        if not tokens:
            continue
        if rate is None:  # no separate price: billed as plain input or output
            rate = price.input if fallback == "input price" else price.output
            lines.append(Line(label, tokens, rate, fallback))
        else:
            lines.append(Line(label, tokens, rate))
    return Costing(price, tuple(lines))


def _specificity(pattern: str) -> tuple[bool, int]:
    """Exact names first, then globs by how many literal characters they pin down."""
    return ("*" not in pattern, len(pattern.replace("*", "")))


class PriceBook:
    """Every price, grouped by pattern, most specific first; answers ``match`` from memory."""

    CACHE_SIZE = 10_000

    def __init__(self, prices: Sequence[Price]) -> None:
        groups: dict[tuple[str, str], list[Price]] = {}
        for price in prices:
            groups.setdefault((price.pattern.lower(), price.provider.lower()), []).append(price)
        self._groups = []
        for (pattern, provider), rows in groups.items():
            rows.sort(key=lambda row: row.valid_from, reverse=True)
            regex = re.compile(".*".join(re.escape(part) for part in pattern.split("*")))
            self._groups.append((_specificity(pattern), provider, regex, rows))
        self._groups.sort(key=lambda group: group[0], reverse=True)
        self._cache: dict[tuple[str, str, date], Price | None] = {}

    @classmethod
    def load(cls) -> PriceBook:
        return cls([Price.of(row) for row in ModelPrice.objects.all()])

    def match(self, model: str, provider: str, day: date) -> Price | None:
        """The price of ``model`` on ``day``, or None when no row covers it."""
        key = (model, provider, day)
        if key in self._cache:
            return self._cache[key]
        name = model.strip().lower()
        found = self._match(name, provider.lower(), day)
        if found is None and "/" in name:
            # "openai/gpt-4o", "models/gemini-1.5-pro", "meta-llama/Llama-3.3-70B-...".
            found = self._match(name.rsplit("/", 1)[1], provider.lower(), day)
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = found
        return found

    def _match(self, name: str, provider: str, day: date) -> Price | None:
        if not name:
            return None
        best: tuple | None = None
        for specificity, group_provider, regex, rows in self._groups:
            if best is not None and specificity < best[0][:2]:
                break  # groups are sorted: nothing later can be more specific
            if not regex.fullmatch(name):
                continue
            valid = next((row for row in rows if row.valid_from <= day), None)
            if valid is None:
                continue  # not priced yet on that day: a less specific pattern may be
            # Same specificity: a row for the span's own provider, then one for any.
            rank = (*specificity, group_provider == provider, group_provider == "")
            if best is None or rank > best[0]:
                best = (rank, valid)
        return best[1] if best else None


# The book the writer uses, reloaded when a price changes: at once in this process (the
# admin, signals below), within ``_RECHECK_SECONDS`` when another process changed one.
_RECHECK_SECONDS = 10.0
_lock = threading.Lock()
_book: PriceBook | None = None
_signature: tuple | None = None
_checked_at = 0.0


def _current_signature() -> tuple:
    summary = ModelPrice.objects.aggregate(rows=Count("pk"), changed=Max("updated_at"))
    return (summary["rows"], summary["changed"])


def book() -> PriceBook:
    global _book, _signature, _checked_at
    with _lock:
        now = time.monotonic()
        if _book is None or now - _checked_at > _RECHECK_SECONDS:
            signature = _current_signature()
            if _book is None or signature != _signature:
                _book, _signature = PriceBook.load(), signature
            _checked_at = now
        return _book


def forget_prices(**kwargs) -> None:
    global _book
    with _lock:
        _book = None


post_save.connect(forget_prices, sender=ModelPrice, dispatch_uid="msgtrace-prices-saved")
post_delete.connect(forget_prices, sender=ModelPrice, dispatch_uid="msgtrace-prices-deleted")


def span_day(start_ns: int) -> date:
    return datetime.fromtimestamp(start_ns / 1e9, tz=UTC).date()


@dataclass(frozen=True, slots=True)
class Priced:
    """What the writer stores for a span without a cost of its own."""

    cost: float | None
    currency: str
    source: str  # Span.CostSource value
    price_id: int | None


NOT_PRICED = Priced(None, "", Span.CostSource.NONE, None)


def price_span(
    prices: PriceBook,
    *,
    model: str,
    provider: str,
    start_ns: int,
    input_tokens: int,
    output_tokens: int,
    total_tokens: int,
    cache_read_tokens: int,
    cache_write_tokens: int,
    reasoning_tokens: int,
) -> Priced:
    """Cost columns for a span that carried no cost: priced, unpriced, or no tokens at all."""
    if not (input_tokens or output_tokens or total_tokens):
        return NOT_PRICED
    price = prices.match(model, provider, span_day(start_ns)) if model else None
    if price is None or not (input_tokens or output_tokens):
        # No price, or only a total that cannot be split between input and output rates.
        return Priced(None, "", Span.CostSource.UNPRICED, None)
    costing = cost_of(
        price,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read_tokens,
        cache_write_tokens=cache_write_tokens,
        reasoning_tokens=reasoning_tokens,
    )
    return Priced(costing.total, price.currency, Span.CostSource.PRICE, price.id)


_POSITIONS: dict[str, int] = {}


def price_rows(rows: list[tuple], columns: Sequence[str]) -> list[tuple]:
    """``rows`` (tuples in ``columns`` order) with the cost columns of unpriced spans filled."""
    if not _POSITIONS:
        _POSITIONS.update((name, index) for index, name in enumerate(columns))
    at = _POSITIONS
    source, cost, currency, price_id = (
        at["cost_source"], at["cost"], at["currency"], at["price_id"]
    )  # fmt: skip
    prices = None
    priced = []
    for row in rows:
        tokens = row[at["input_tokens"]] or row[at["output_tokens"]] or row[at["total_tokens"]]
        if row[source] or not tokens:
            priced.append(row)  # reported its own cost, or has no tokens to price
            continue
        prices = prices or book()
        result = price_span(
            prices,
            model=row[at["model"]],
            provider=row[at["provider"]],
            start_ns=row[at["start_ns"]],
            input_tokens=row[at["input_tokens"]],
            output_tokens=row[at["output_tokens"]],
            total_tokens=row[at["total_tokens"]],
            cache_read_tokens=row[at["cache_read_tokens"]],
            cache_write_tokens=row[at["cache_write_tokens"]],
            reasoning_tokens=row[at["reasoning_tokens"]],
        )
        values = list(row)
        values[cost], values[currency] = result.cost, result.currency
        values[source], values[price_id] = result.source, result.price_id
        priced.append(tuple(values))
    return priced


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a span costs what it costs, for the span panel."""

    source: str  # Span.CostSource value
    costing: Costing | None = None  # the arithmetic, for a cost from the price table
    stale: bool = False  # the price changed since the span was priced
    reported_keys: tuple[str, ...] = ()  # the span's own cost attributes
    problem: str = ""  # why a span with tokens has no cost

    @property
    def total(self) -> float | None:
        return self.costing.total if self.costing else None


def explain(span: Span) -> Explanation | None:
    """How ``span``'s cost came about; None for a span without tokens or cost."""
    # The one exception to "traces never imports ingest": which keys hold a reported cost
    # live in the conventions table, a module of plain data that decode worker processes
    # load without Django; a copy here would drift from what ingest actually reads.
    from ingest.conventions import COST_PART_FAMILIES, COST_TOTAL_KEYS

    source = span.cost_source
    if source == Span.CostSource.SPAN:
        keys = [key for key in COST_TOTAL_KEYS if key in span.attributes]
        if not keys:
            keys = next(
                ([k for k in family if k in span.attributes] for family in COST_PART_FAMILIES
                 if any(k in span.attributes for k in family)),
                [],
            )  # fmt: skip
        return Explanation(source, reported_keys=tuple(keys))
    if source == Span.CostSource.PRICE:
        row = span.price  # views select_related it
        if row is None:
            return Explanation(source, problem="the price it used has since been deleted")
        costing = cost_of(
            Price.of(row),
            input_tokens=span.input_tokens,
            output_tokens=span.output_tokens,
            cache_read_tokens=span.cache_read_tokens,
            cache_write_tokens=span.cache_write_tokens,
            reasoning_tokens=span.reasoning_tokens,
        )
        stale = span.cost is None or abs(costing.total - span.cost) > 1e-12 + 1e-9 * costing.total
        return Explanation(source, costing=costing, stale=stale)
    if source == Span.CostSource.UNPRICED:
        if not span.model:
            problem = "the span names no model"
        elif not (span.input_tokens or span.output_tokens):
            problem = (
                "it reports only a total token count, which cannot be split into input and output"
            )
        else:
            problem = f"no price matches this model on {span_day(span.start_ns):%Y-%m-%d}"
        return Explanation(source, problem=problem)
    if span.input_tokens or span.output_tokens or span.total_tokens:
        # Stored before costs were computed at ingest.
        return Explanation(source, problem="not priced yet: run msgtrace recompute_costs")
    return None


@dataclass(slots=True)
class Repriced:
    traces: int = 0
    spans: int = 0
    changed: int = 0
    unpriced: int = 0


def reprice(traces, *, batch_size: int = 500, progress=None) -> Repriced:
    """Re-price the spans of ``traces`` (a Trace QuerySet) from the current price table.

    Spans that report their own cost are left alone. Works through the traces in batches
    of ``batch_size`` by id, each batch one short transaction (spans and their traces'
    summaries together), so ingest is never held up for long.
    """
    from django.db import transaction
    from django.db.models import Q
    from django.utils import timezone

    from traces.rollups import hour_of, hours_invalidate
    from traces.services import traces_refresh

    result = Repriced()
    total = traces.count()
    ids = traces.order_by("pk").values_list("pk", flat=True)
    fields = ("cost", "currency", "cost_source", "price_id")
    has_tokens = Q(input_tokens__gt=0) | Q(output_tokens__gt=0) | Q(total_tokens__gt=0)
    last = ""
    while True:
        batch = list(ids.filter(pk__gt=last)[:batch_size])
        if not batch:
            break
        last = batch[-1]
        prices = book()
        with transaction.atomic():
            spans = (
                Span.objects.filter(trace_id__in=batch)
                .exclude(cost_source=Span.CostSource.SPAN)
                .filter(has_tokens)
                .only("id", "trace_id", "model", "provider", "start_ns", *_TOKEN_FIELDS, *fields)
            )
            changed, touched = [], set()
            for span in spans:
                result.spans += 1
                priced = price_span(
                    prices,
                    model=span.model,
                    provider=span.provider,
                    start_ns=span.start_ns,
                    **{name: getattr(span, name) for name in _TOKEN_FIELDS},
                )
                if priced.source == Span.CostSource.UNPRICED:
                    result.unpriced += 1
                now = (priced.cost, priced.currency, priced.source, priced.price_id)
                if now != (span.cost, span.currency, span.cost_source, span.price_id):
                    span.cost, span.currency, span.cost_source, span.price_id = now
                    changed.append(span)
                    touched.add(span.trace_id)
            Span.objects.bulk_update(changed, fields, batch_size=500)
            hours_invalidate({hour_of(span.start_ns) for span in changed})
            if touched:
                traces_refresh(trace_ids=touched, now=timezone.now())
        result.changed += len(changed)
        result.traces += len(batch)
        if progress:
            progress(result.traces, total, result.spans, result.changed)
    return result


_TOKEN_FIELDS = (
    "input_tokens", "output_tokens", "total_tokens", "cache_read_tokens", "cache_write_tokens",
    "reasoning_tokens",
)  # fmt: skip
