"""Search query text to a small AST; every mistake is a ``QueryError`` with its position.

Pure Python, no Django: ``search.compiler`` turns the AST into a ``Q``. The grammar::

    query  := or
    or     := and ("OR" and)*
    and    := unary (["AND"] unary)*          adjacent terms are ANDed
    unary  := ("NOT" | "-") unary | atom
    atom   := "(" or ")" | "span(" or ")" | field ":" [op] value | word | "quoted"

Values are typed here, by field, so ``duration:abc`` fails with the position of ``abc``.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

MAX_LENGTH = 2000
MAX_DEPTH = 20
MAX_TERMS = 50

# Bounds that keep every value inside a signed 64-bit column and a datetime.
_MAX_NS = 2**62
_MAX_NUMBER = Decimal(10) ** 18
_MAX_RELATIVE = timedelta(days=36500)


class QueryError(ValueError):
    """A query that cannot be run; ``position`` is a 0-based character offset."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


# --- The AST -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    """A value for ``attr.``/``resource.`` keys, whose type only the stored data knows."""

    text: str
    number: float | None = None  # set when the value was an unquoted number
    boolean: bool | None = None  # set when the value was an unquoted true/false


@dataclass(frozen=True)
class Term:
    """``field:op value``. ``op`` is one of ``= != > >= < <=``; ``key`` is for attr./resource."""

    field: str
    op: str
    value: object
    position: int
    key: str = ""


@dataclass(frozen=True)
class Text:
    """A word without a field: a substring of trace id, root span name, workflow or service."""

    word: str
    position: int = 0


@dataclass(frozen=True)
class And:
    items: tuple  # an empty And matches everything (the empty query)


@dataclass(frozen=True)
class Or:
    items: tuple


@dataclass(frozen=True)
class Not:
    item: object


@dataclass(frozen=True)
class SpanGroup:
    """``span(...)``: every condition inside holds on one and the same span."""

    expr: object
    position: int = 0


# --- Fields ---------------------------------------------------------------------------------

# Name -> value kind. The compiler maps each name to columns; nothing else is a field.
FIELDS = {
    "duration": "duration",
    "error": "bool",
    "errors": "number",
    "spans": "number",
    "service": "text",
    "workflow": "text",
    "name": "text",
    "trace": "text",
    "tokens": "number",
    "input_tokens": "number",
    "output_tokens": "number",
    "cost": "number",
    "model": "text",
    "session": "text",
    "user": "text",
    "since": "time",
    "until": "time",
    # Span-level: true when some span of the trace matches.
    "span": "text",
    "span.duration": "duration",
    "span.error": "bool",
    "kind": "text",
    "attr": "any",
    "resource": "any",
}
SPAN_FIELDS = frozenset({"span", "span.duration", "span.error", "kind", "attr", "resource"})
KEYED_FIELDS = frozenset({"attr", "resource"})

_ORDERED_OPS = frozenset({">", ">=", "<", "<="})
_OPS_BY_KIND = {
    "text": frozenset({"=", "!="}),
    "bool": frozenset({"=", "!="}),
    "time": frozenset({"="}),
    "duration": frozenset({"=", "!="}) | _ORDERED_OPS,
    "number": frozenset({"=", "!="}) | _ORDERED_OPS,
    "any": frozenset({"=", "!="}) | _ORDERED_OPS,
}
_OP_TEXT = {"=": ":", "!=": ":!=", ">": ":>", ">=": ":>=", "<": ":<", "<=": ":<="}

_DURATION = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ns|us|µs|ms|s|m|h|d)?")
_DURATION_NS = {
    None: 10**6,
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
    "d": 86400 * 10**9,
}
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d|w)")
_RELATIVE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_ISO_START = re.compile(r"\d{4}-\d{2}-\d{2}")


def _number(text: str) -> Decimal | None:
    if not _NUMBER.fullmatch(text):
        return None
    number = Decimal(text)
    return number if abs(number) <= _MAX_NUMBER else None


def _as_python_number(number: Decimal) -> int | float:
    return int(number) if number == number.to_integral_value() else float(number)


def _typed_value(field: str, op: str, text: str, quoted: bool, position: int) -> object:
    kind = FIELDS[field]
    shown = text if len(text) <= 40 else text[:40] + "…"
    if kind == "text":
        return text
    if kind == "duration":
        match = _DURATION.fullmatch(text.lower())
        if not match:
            raise QueryError(f'"{shown}" is not a duration (try 250ms, 1.5s, 2m or 1h)', position)
        amount, unit = match.groups()
        ns = int(Decimal(amount) * _DURATION_NS[unit])
        if ns > _MAX_NS:
            raise QueryError(f'"{shown}" is too large a duration', position)
        return ns
    if kind == "number":
        number = _number(text)
        if number is None:
            raise QueryError(f'"{shown}" is not a number', position)
        return _as_python_number(number)
    if kind == "bool":
        try:
            return _BOOLEANS[text.lower()]
        except KeyError:
            raise QueryError(f'"{shown}" is not true or false', position) from None
    if kind == "time":
        return _time_value(text, shown, position)
    # attr./resource.: keep the text; note what else an unquoted value could mean.
    number = None if quoted else _number(text)
    if op in _ORDERED_OPS and number is None:
        raise QueryError(f'"{shown}" is not a number', position)
    boolean = None
    if not quoted and text.lower() in ("true", "false"):
        boolean = text.lower() == "true"
    return Literal(
        text=text,
        number=float(number) if number is not None else None,
        boolean=boolean,
    )


def _time_value(text: str, shown: str, position: int) -> datetime | timedelta:
    """A span back from now (``15m``, ``24h``, ``7d``, ``2w``) or an ISO 8601 date/time."""
    match = _RELATIVE.fullmatch(text.lower())
    if match:
        amount, unit = match.groups()
        seconds = Decimal(amount) * _RELATIVE_SECONDS[unit]
        if seconds > Decimal(_MAX_RELATIVE.total_seconds()):
            raise QueryError(f'"{shown}" is too far back', position)
        return timedelta(seconds=float(seconds))
    moment = None
    if _ISO_START.match(text):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
    if moment is None:
        raise QueryError(
            f'"{shown}" is not a time (try 15m, 24h, 7d or 2026-01-31T12:00:00Z)', position
        )
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_moment(text: str, now: datetime) -> datetime:
    """A ``since``/``until`` value given outside a query (a command option): 7d, ISO date.

    Raises ``QueryError`` as the query's own time fields do, with the same wording.
    """
    shown = text if len(text) <= 40 else text[:40] + "…"
    value = _time_value(text.strip(), shown, 0)
    return now - value if isinstance(value, timedelta) else value


def _unknown_field(name: str, position: int) -> QueryError:
    shown = name if len(name) <= 40 else name[:40] + "…"
    choices = [field for field in FIELDS if field not in KEYED_FIELDS]
    close = difflib.get_close_matches(name.lower(), [*choices, "attr", "resource"], n=1)
    if close and close[0] in KEYED_FIELDS:
        return QueryError(f'unknown field "{shown}" — did you mean "{close[0]}.<key>"?', position)
    if close:
        return QueryError(f'unknown field "{shown}" — did you mean "{close[0]}"?', position)
    return QueryError(f'unknown field "{shown}"', position)


# --- Tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # ( ) span( AND OR NOT - term text end
    position: int
    text: str = ""
    term: Term | None = None


_WORD_END = frozenset(' \t\r\n\f\v()"')
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_KEYED_PREFIX = re.compile(r"(attr|resource)\.", re.IGNORECASE)
_SPAN_OPEN = re.compile(r"span\(", re.IGNORECASE)
_KEYWORDS = {"AND", "OR", "NOT"}


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The string opening at ``text[start] == '"'`` (``\\"`` and ``\\\\`` escaped); its end."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
        elif char == '"':
            return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise QueryError(f"unterminated string starting at {start}", start)


def _bare(text: str, start: int) -> int:
    i = start
    while i < len(text) and text[i] not in _WORD_END and not text[i].isspace():
        i += 1
    return i


def _field_at(text: str, start: int) -> tuple[str, str, int] | None:
    """``(field, key, position of the ':')`` if a ``field:`` starts here, else None."""
    prefix = _KEYED_PREFIX.match(text, start)
    if prefix:
        field, i = prefix.group(1).lower(), prefix.end()
        if i < len(text) and text[i] == '"':
            key, i = _quoted(text, i)
        else:
            end = i
            while end < len(text) and text[end] not in _WORD_END and text[end] != ":":
                if text[end].isspace():
                    break
                end += 1
            key, i = text[i:end], end
        if i < len(text) and text[i] == ":":
            return field, key, i
        return None
    match = _IDENTIFIER.match(text, start)
    if match and match.end() < len(text) and text[match.end()] == ":":
        return match.group(), "", match.end()
    return None


def _term(text: str, start: int) -> tuple[Term, int] | None:
    found = _field_at(text, start)
    if found is None:
        return None
    name, key, colon = found
    field = name.lower()
    if field in KEYED_FIELDS:
        if not key:
            raise QueryError(f'"{field}." needs a key, as in {field}.service.name:x', start)
        if '"' in key or "\\" in key:
            raise QueryError(f'attribute keys cannot contain " or \\ ("{field}.{key}")', start)
    elif field not in FIELDS:
        raise _unknown_field(name, start)
    i = colon + 1
    op = "="
    for candidate in ("!=", ">=", "<=", ">", "<"):
        if text.startswith(candidate, i):
            op, i = candidate, i + len(candidate)
            break
    label = f"{field}.{key}" if field in KEYED_FIELDS else field
    if op not in _OPS_BY_KIND[FIELDS[field]]:
        raise QueryError(f'"{label}" cannot be compared with "{_OP_TEXT[op]}"', colon)
    value_start = i
    if i < len(text) and text[i] == '"':
        value, i = _quoted(text, i)
        quoted = True
    else:
        end = _bare(text, i)
        value, i, quoted = text[value_start:end], end, False
        if not value:
            raise QueryError(f'missing value after "{label}{_OP_TEXT[op]}" at {i}', i)
    typed = _typed_value(field, op, value, quoted, value_start)
    return Term(field=field, op=op, value=typed, position=start, key=key), i


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            tokens.append(_Token("end", i))
            return tokens
        char = text[i]
        if char in "()":
            tokens.append(_Token(char, i))
            i += 1
        elif char == "-":
            tokens.append(_Token("-", i))
            i += 1
        elif char == '"':
            word, end = _quoted(text, i)
            tokens.append(_Token("text", i, word))
            i = end
        elif _SPAN_OPEN.match(text, i):
            tokens.append(_Token("span(", i))
            i += 5
        else:
            found = _term(text, i)
            if found is not None:
                term, i = found
                tokens.append(_Token("term", term.position, term=term))
                continue
            end = _bare(text, i)
            word = text[i:end]
            kind = word.upper() if word.upper() in _KEYWORDS else "text"
            tokens.append(_Token(kind, i, word))
            i = end


# --- Parser ---------------------------------------------------------------------------------

_STARTS = frozenset({"(", "span(", "NOT", "-", "term", "text"})


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "end of query"
    if token.kind in ("(", ")", "-"):
        return f'"{token.kind}"'
    if token.kind == "span(":
        return '"span("'
    return f'"{token.text}"'


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.terms = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def unexpected(self, token: _Token) -> QueryError:
        if token.kind == "end":
            return QueryError(f"unexpected end of query at {token.position}", token.position)
        return QueryError(f"unexpected {_describe(token)} at {token.position}", token.position)

    def query(self) -> object:
        if self.peek().kind == "end":
            return And(())
        expr = self.or_(0, in_span=False)
        token = self.peek()
        if token.kind != "end":
            raise self.unexpected(token)
        return expr

    def or_(self, depth: int, in_span: bool) -> object:
        items = [self.and_(depth, in_span)]
        while self.peek().kind == "OR":
            self.take()
            items.append(self.and_(depth, in_span))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self, depth: int, in_span: bool) -> object:
        items = [self.unary(depth, in_span)]
        while True:
            kind = self.peek().kind
            if kind == "AND":
                self.take()
            elif kind not in _STARTS:
                break
            items.append(self.unary(depth, in_span))
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self, depth: int, in_span: bool) -> object:
        token = self.peek()
        if token.kind in ("NOT", "-"):
            self.take()
            self.check_depth(depth + 1, token)
            return Not(self.unary(depth + 1, in_span))
        return self.atom(depth, in_span)

    def check_depth(self, depth: int, token: _Token) -> None:
        if depth > MAX_DEPTH:
            raise QueryError(
                f"the query nests deeper than {MAX_DEPTH} levels at {token.position}",
                token.position,
            )

    def count_term(self, position: int) -> None:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise QueryError(f"the query has more than {MAX_TERMS} terms at {position}", position)

    def atom(self, depth: int, in_span: bool) -> object:
        token = self.take()
        if token.kind in ("(", "span("):
            self.check_depth(depth + 1, token)
            if token.kind == "span(" and in_span:
                raise QueryError(f"span(...) cannot be nested at {token.position}", token.position)
            if self.peek().kind == ")":
                raise self.unexpected(self.peek())
            expr = self.or_(depth + 1, in_span or token.kind == "span(")
            closing = self.peek()
            if closing.kind == "end":
                raise QueryError(
                    f'missing ")" for the "{token.kind}" at {token.position}', token.position
                )
            if closing.kind != ")":
                raise self.unexpected(closing)
            self.take()
            return SpanGroup(expr, token.position) if token.kind == "span(" else expr
        if token.kind == "term":
            self.count_term(token.position)
            term = token.term
            if in_span and term.field not in SPAN_FIELDS:
                raise QueryError(
                    f'"{term.field}" is not a span field and cannot be used inside span(...)',
                    term.position,
                )
            return term
        if token.kind == "text":
            self.count_term(token.position)
            if in_span:
                raise QueryError(
                    f'free text "{token.text[:40]}" cannot be used inside span(...); use span:name',
                    token.position,
                )
            return Text(token.text, token.position)
        raise self.unexpected(token)


def parse(text: str) -> object:
    """The AST of a query; ``And(())`` (everything) for a blank one. Raises ``QueryError``."""
    if not isinstance(text, str):
        raise QueryError("the query must be text", 0)
    if len(text) > MAX_LENGTH:
        raise QueryError(f"the query is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    for position, char in enumerate(text):
        # Neither can be sent to the database (PostgreSQL refuses NUL; surrogates don't encode).
        if char == "\x00" or unicodedata.category(char) == "Cs":
            raise QueryError(f"the query contains an invalid character at {position}", position)
    return _Parser(_tokens(text)).query()
