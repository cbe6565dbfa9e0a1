"""A parsed query to a ``Q`` over ``Trace``, through an allow-list of fields.

User text only ever becomes a lookup *value*: field names map to columns here, and
attribute keys are passed as SQL parameters. Span conditions become ``Exists`` subqueries
on ``Span``; the conditions of one ``span(...)`` group share one subquery, so they hold on
the same span. ``a:!=b`` is exactly ``-a:b``, at the level it sits: on the trace at the
top, on the span inside ``span(...)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime

from django.db.models import (
    Case,
    Exists,
    F,
    FloatField,
    Func,
    OuterRef,
    Q,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    IContains,
    IEndsWith,
    IExact,
    In,
    IRegex,
    IStartsWith,
    LessThan,
    LessThanOrEqual,
)

from search import attribute_index
from search.parser import And, Literal, Not, Or, QueryError, SpanGroup, Term, Text, parse
from search.terms import MAX_INDEXED_CHARS, RESOURCE_SCOPE, SPAN_SCOPE
from traces.models import Span, datetime_to_ns

# Field -> column, for the fields that are one column compared as the parser typed it.
TRACE_COLUMNS = {
    "duration": "duration_ns",
    "errors": "error_count",
    "spans": "span_count",
    "service": "service_name",
    "workflow": "workflow_name",
    "name": "root_span_name",
    "trace": "trace_id",
    "tokens": "total_tokens",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cost": "cost",
    "session": "session_id",
    "user": "user_id",
}
SPAN_COLUMNS = {"span": "name", "span.duration": "duration_ns", "kind": "span_type"}
JSON_COLUMNS = {"attr": "attributes", "resource": "resource_attributes"}
# Fields compiled by their own rule below.
SPECIAL_FIELDS = frozenset({"error", "model", "since", "until", "span.error"})
FREE_TEXT_COLUMNS = ("trace_id", "root_span_name", "workflow_name", "service_name")

_ORDERED = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
_ORDERED_LOOKUPS = {
    ">": GreaterThan,
    ">=": GreaterThanOrEqual,
    "<": LessThan,
    "<=": LessThanOrEqual,
}
_TEXT_LOOKUPS = {
    "iexact": IExact,
    "icontains": IContains,
    "istartswith": IStartsWith,
    "iendswith": IEndsWith,
    "iregex": IRegex,
}
_INT64 = 2**63 - 1

# What each database calls a JSON value's type: SQLite's json_type() and PostgreSQL's
# jsonb_typeof() never share a name, so one IN list serves both.
_STRING_TYPES = ("text", "string")
_NUMBER_TYPES = ("integer", "real", "number")


# --- JSON values, one top-level key at a time ------------------------------------------------


class _JSONKey(Func):
    """One top-level key of a JSON column; the key is a parameter, never a path.

    Django's ``KeyTextTransform`` would do for most keys, but reads an integer-like key
    (``"0"``) as an array index; attribute keys are always object keys here.
    """

    sqlite_template = ""
    postgresql_template = ""

    def __init__(self, column: str, key: str, **extra) -> None:
        super().__init__(F(column), **extra)
        self.key = key

    def as_sql(self, compiler, connection, **extra_context):
        column_sql, params = compiler.compile(self.source_expressions[0])
        if connection.vendor == "postgresql":
            return self.postgresql_template % column_sql, (*params, self.key)
        if connection.vendor == "sqlite":
            # A quoted label: dots in the key are part of the name, not a path.
            path = "$." + json.dumps(self.key, ensure_ascii=False)
            return self.sqlite_template % column_sql, (*params, path)
        raise NotImplementedError(f"search does not support {connection.vendor}")


class _JSONText(_JSONKey):
    """The value as SQL text/number (strings unquoted); NULL when the key is absent."""

    output_field = TextField()
    sqlite_template = "JSON_EXTRACT(%s, %%s)"
    postgresql_template = "(%s ->> %%s)"


class _JSONType(_JSONKey):
    """The value's JSON type name, in the database's own words; NULL when absent."""

    output_field = TextField()
    sqlite_template = "JSON_TYPE(%s, %%s)"
    postgresql_template = "JSONB_TYPEOF(%s -> %%s)"


# --- Strings and globs ----------------------------------------------------------------------


def glob_lookup(pattern: str) -> tuple[str, str] | None:
    """The cheapest case-insensitive lookup for a ``*`` glob; None when it matches anything."""
    pattern = re.sub(r"\*+", "*", pattern)
    if "*" not in pattern:
        return "iexact", pattern
    parts = pattern.split("*")
    if not any(parts):
        return None
    if len(parts) == 2 and parts[0] == "":
        return "iendswith", parts[1]
    if len(parts) == 2 and parts[1] == "":
        return "istartswith", parts[0]
    if len(parts) == 3 and parts[0] == "" and parts[2] == "":
        return "icontains", parts[1]
    # \A, \Z and (?:.|\n) mean the same to Python's re (SQLite) and PostgreSQL's regexes;
    # re.escape only puts backslashes before punctuation, which PostgreSQL reads literally.
    anything = r"(?:.|\n)*"
    return "iregex", r"\A" + anything.join(re.escape(part) for part in parts) + r"\Z"


# Explicit always/never conditions: an empty Q() would vanish from an OR.
MATCH_ALL = ~Q(pk__in=[])
MATCH_NONE = Q(pk__in=[])


def _column_match(column: str, pattern: str) -> Q:
    found = glob_lookup(pattern)
    if found is None:
        return MATCH_ALL
    lookup, value = found
    return Q(**{f"{column}__{lookup}": value})


def compare_column(column: str, op: str, value, *, trace_level: bool = True) -> Q:
    if op == "=":
        return Q(**{column: value})
    if column == "duration_ns" and trace_level:
        # SQLite (no STAT4) answers a duration range through the duration index and then
        # sorts every match by start: 105 ms for `duration:>5s` on 100,000 traces, growing
        # with the table. "+ 0" hides that index, so the list walks start order and stops
        # at a page: 0.1 ms, and at worst (nothing matches) one pass, ~30 ms.
        return Q(_ORDERED_LOOKUPS[op](F(column) + 0, value))
    return Q(**{f"{column}__{_ORDERED[op]}": value})


def _clamped_ns(moment: datetime) -> int:
    return max(-_INT64, min(_INT64, datetime_to_ns(moment)))


# --- Compilation ----------------------------------------------------------------------------


def _combine(node, compile_node: Callable[[object], Q]) -> Q | None:
    """AND/OR/NOT of the conditions ``compile_node`` makes; None for any other node.

    The same boolean folding serves the trace level and the span level (``span(...)``).
    """
    if isinstance(node, And):
        result = Q()
        for item in node.items:
            result &= compile_node(item)
        return result
    if isinstance(node, Or):
        result = compile_node(node.items[0])
        for item in node.items[1:]:
            result |= compile_node(item)
        return result
    if isinstance(node, Not):
        return ~compile_node(node.item)
    return None


class _Compiler:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def trace(self, node) -> Q:
        combined = _combine(node, self.trace)
        if combined is not None:
            return combined
        if isinstance(node, Text):
            result = MATCH_NONE
            for column in FREE_TEXT_COLUMNS:
                result |= _column_match(column, f"*{node.word}*")
            return result
        if isinstance(node, SpanGroup):
            return Q(self.spans_exist(self.span(node.expr)))
        if isinstance(node, Term):
            if node.op == "!=":
                return ~self.trace(_positive(node))
            if node.field in SPAN_FIELDS_COMPILED:
                condition = Q(self.spans_exist(self.span_term(node)))
                narrowed = _indexed_traces(node)
                # The index only narrows: the exact condition still decides, so the
                # result (and the negation of it) is the same with or without it.
                return condition if narrowed is None else narrowed & condition
            return self.trace_term(node)
        raise QueryError("the query could not be compiled", 0)  # not an AST node

    def trace_term(self, term: Term) -> Q:
        field, value = term.field, term.value
        if field == "error":
            return Q(error_count__gt=0) if value else Q(error_count=0)
        if field == "model":
            return Q(self.spans_exist(~Q(model="") & _column_match("model", value)))
        if field in ("since", "until"):
            moment = self.moment(value, term.position)
            ns = _clamped_ns(moment)
            return Q(start_ns__gte=ns) if field == "since" else Q(start_ns__lt=ns)
        column = TRACE_COLUMNS[field]
        if field == "trace":
            return _column_match(column, value if "*" in value else value + "*")
        if isinstance(value, str):
            return _column_match(column, value)
        return compare_column(column, term.op, value)

    def moment(self, value, position: int) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return self.now - value
        except OverflowError:
            raise QueryError("that time is too far back", position) from None

    def spans_exist(self, condition: Q) -> Exists:
        return Exists(Span.objects.filter(trace=OuterRef("pk")).filter(condition))

    def span(self, node) -> Q:
        """A condition on one span (inside ``span(...)``)."""
        combined = _combine(node, self.span)
        if combined is not None:
            return combined
        if isinstance(node, Term) and node.field in SPAN_FIELDS_COMPILED:
            if node.op == "!=":
                return ~self.span_term(_positive(node))
            return self.span_term(node)
        raise QueryError("only span fields can be used inside span(...)", _position(node))

    def span_term(self, term: Term) -> Q:
        field, value = term.field, term.value
        if field == "span.error":
            return Q(is_error=value)
        if field in JSON_COLUMNS:
            return _json_condition(JSON_COLUMNS[field], term.key, term.op, value)
        column = SPAN_COLUMNS[field]
        if isinstance(value, str):
            return _column_match(column, value)
        # Inside "some span of the trace": the span index is entered by trace, keep it whole.
        return compare_column(column, term.op, value, trace_level=False)


SPAN_FIELDS_COMPILED = frozenset({*SPAN_COLUMNS, *JSON_COLUMNS, "span.error"})


def _indexed_traces(term: Term) -> Q | None:
    """The attribute index's narrowing for ``attr.k:v`` / ``resource.k:v`` with a plain
    string ``v`` (no glob, not a number or boolean, which also match typed values)."""
    literal = term.value
    if term.field not in JSON_COLUMNS or term.op != "=" or not isinstance(literal, Literal):
        return None
    if literal.number is not None or literal.boolean is not None or "*" in literal.text:
        return None
    if len(literal.text) > MAX_INDEXED_CHARS:
        return None  # longer values are not indexed
    scope = SPAN_SCOPE if term.field == "attr" else RESOURCE_SCOPE
    return attribute_index.traces_with(scope, term.key, literal.text)


def _positive(term: Term) -> Term:
    return Term(term.field, "=", term.value, term.position, term.key)


def _position(node) -> int:
    return getattr(node, "position", 0)


def _json_condition(column: str, key: str, op: str, literal: Literal) -> Q:
    """``attr.key op value`` on one span; never NULL, so NOT of it is exact.

    Strings match strings (case-insensitive, globs); ``*`` alone matches any value of the
    key; an unquoted number also matches numbers, compared as floats, and ``>``/``<``
    only ever compare numbers; an unquoted true/false also matches booleans. A missing
    key matches nothing. The float cast sits in a CASE on the JSON type, so PostgreSQL
    never tries to cast a string.
    """
    json_type = Coalesce(_JSONType(column, key), Value("missing"), output_field=TextField())
    text = _JSONText(column, key)
    is_number = Q(In(json_type, _NUMBER_TYPES))
    number = Case(
        When(is_number, then=Cast(text, FloatField())),
        default=Value(None),
        output_field=FloatField(),
    )
    if op in _ORDERED_LOOKUPS:
        return is_number & Q(_ORDERED_LOOKUPS[op](number, literal.number))
    found = glob_lookup(literal.text)
    if found is None:
        return ~Q(Exact(json_type, "missing"))  # attr.key:* asks whether the key is there
    lookup, pattern = found
    condition = Q(In(json_type, _STRING_TYPES)) & Q(_TEXT_LOOKUPS[lookup](text, pattern))
    if literal.number is not None:
        condition |= is_number & Q(Exact(number, literal.number))
    if literal.boolean is not None:
        word = "true" if literal.boolean else "false"
        # SQLite names the value (json_type 'true'); PostgreSQL says 'boolean' and ->> gives it.
        condition |= Q(Exact(json_type, word)) | (
            Q(Exact(json_type, "boolean")) & Q(Exact(Cast(text, TextField()), word))
        )
    return condition


def compile_query(text: str, now: datetime | None = None) -> Q:
    """The ``Q`` over ``Trace`` for a query; ``Q()`` for a blank one. Raises ``QueryError``."""
    tree = parse(text)
    if tree == And(()):
        return Q()
    now = now or datetime.now(UTC)
    return _Compiler(now).trace(tree)


__all__ = ["QueryError", "compile_query", "glob_lookup"]
