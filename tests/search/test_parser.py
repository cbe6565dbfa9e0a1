"""The query parser: text to AST, and every error with its position."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.parser import (
    FIELDS,
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_TERMS,
    And,
    Literal,
    Not,
    Or,
    QueryError,
    SpanGroup,
    Term,
    Text,
    parse,
)


def shape(node) -> object:
    """The AST without positions, so expectations stay short."""
    if isinstance(node, And):
        return ("and", *(shape(item) for item in node.items))
    if isinstance(node, Or):
        return ("or", *(shape(item) for item in node.items))
    if isinstance(node, Not):
        return ("not", shape(node.item))
    if isinstance(node, SpanGroup):
        return ("span", shape(node.expr))
    if isinstance(node, Text):
        return node.word
    field = f"{node.field}.{node.key}" if node.key else node.field
    return (field, node.op, node.value)


MS = 1_000_000
S = 1_000 * MS

PARSES = [
    ("", ("and",)),
    ("   ", ("and",)),
    ("refund", "refund"),
    ("a b", ("and", "a", "b")),
    ("a AND b", ("and", "a", "b")),
    ("a OR b", ("or", "a", "b")),
    ("a b OR c", ("or", ("and", "a", "b"), "c")),
    ("a OR b c", ("or", "a", ("and", "b", "c"))),
    ("a OR b AND c", ("or", "a", ("and", "b", "c"))),
    ("NOT a b", ("and", ("not", "a"), "b")),
    ("NOT a OR b", ("or", ("not", "a"), "b")),
    ("NOT (a OR b)", ("not", ("or", "a", "b"))),
    ("-a", ("not", "a")),
    ("-service:x y", ("and", ("not", ("service", "=", "x")), "y")),
    ("-(a b)", ("not", ("and", "a", "b"))),
    ("NOT NOT a", ("not", ("not", "a"))),
    ("(a OR b) c", ("and", ("or", "a", "b"), "c")),
    ("((a))", "a"),
    ("a and b or not c", ("or", ("and", "a", "b"), ("not", "c"))),
    ("a And b Or c", ("or", ("and", "a", "b"), "c")),
    ('"and"', "and"),
    ("gpt-4o", "gpt-4o"),
    ('"hello world"', "hello world"),
    (r'"say \"hi\""', 'say "hi"'),
    (r'"back\\slash"', "back\\slash"),
    (r'"a\nb"', r"a\nb"),
    ("service:billing", ("service", "=", "billing")),
    ("SERVICE:Billing", ("service", "=", "Billing")),
    ('service:"a b"', ("service", "=", "a b")),
    ('name:"quote \\" inside"', ("name", "=", 'quote " inside')),
    ("service:!=billing", ("service", "!=", "billing")),
    ("name:*retriev*", ("name", "=", "*retriev*")),
    ("model:gpt-4*", ("model", "=", "gpt-4*")),
    ("duration:>250ms", ("duration", ">", 250 * MS)),
    ("duration:>=1.5s", ("duration", ">=", 1500 * MS)),
    ("duration:<2m", ("duration", "<", 120 * S)),
    ("duration:<=1h", ("duration", "<=", 3600 * S)),
    ("duration:300", ("duration", "=", 300 * MS)),
    ("duration:!=0.1s", ("duration", "!=", 100 * MS)),
    ("duration:5us", ("duration", "=", 5000)),
    ("duration:7ns", ("duration", "=", 7)),
    ("duration:1S", ("duration", "=", S)),
    ("span.duration:>2s", ("span.duration", ">", 2 * S)),
    ("error:true", ("error", "=", True)),
    ("error:FALSE", ("error", "=", False)),
    ("error:yes", ("error", "=", True)),
    ("span.error:0", ("span.error", "=", False)),
    ("errors:>0", ("errors", ">", 0)),
    ("spans:>=10", ("spans", ">=", 10)),
    ("tokens:<1000", ("tokens", "<", 1000)),
    ("cost:>0.5", ("cost", ">", 0.5)),
    ("cost:<=-1", ("cost", "<=", -1)),
    ("since:15m", ("since", "=", timedelta(minutes=15))),
    ("since:24h", ("since", "=", timedelta(hours=24))),
    ("since:7d", ("since", "=", timedelta(days=7))),
    ("since:2w", ("since", "=", timedelta(weeks=2))),
    ("until:2026-01-31", ("until", "=", datetime(2026, 1, 31, tzinfo=UTC))),
    (
        "until:2026-01-31T12:30:00Z",
        ("until", "=", datetime(2026, 1, 31, 12, 30, tzinfo=UTC)),
    ),
    (
        "since:2026-01-31T12:30:00+02:00",
        ("since", "=", datetime(2026, 1, 31, 10, 30, tzinfo=UTC)),
    ),
    ("kind:llm", ("kind", "=", "llm")),
    ("span:embed*", ("span", "=", "embed*")),
    (
        "attr.gen_ai.request.model:gpt-4o",
        ("attr.gen_ai.request.model", "=", Literal("gpt-4o")),
    ),
    ('attr."key with spaces":x', ("attr.key with spaces", "=", Literal("x"))),
    ("ATTR.Mixed.Case:x", ("attr.Mixed.Case", "=", Literal("x"))),
    ("attr.n:>=3", ("attr.n", ">=", Literal("3", number=3.0))),
    ("attr.n:3", ("attr.n", "=", Literal("3", number=3.0))),
    ('attr.n:"3"', ("attr.n", "=", Literal("3"))),
    ("attr.flag:TRUE", ("attr.flag", "=", Literal("TRUE", boolean=True))),
    ("attr.flag:!=false", ("attr.flag", "!=", Literal("false", boolean=False))),
    ("resource.service.name:api", ("resource.service.name", "=", Literal("api"))),
    ("span(kind:llm)", ("span", ("kind", "=", "llm"))),
    (
        "span(kind:llm AND span.duration:>2s)",
        ("span", ("and", ("kind", "=", "llm"), ("span.duration", ">", 2 * S))),
    ),
    (
        "SPAN(kind:tool OR -span.error:true) x",
        ("and", ("span", ("or", ("kind", "=", "tool"), ("not", ("span.error", "=", True)))), "x"),
    ),
    ("12:30", "12:30"),
    (
        "since:2026-01-31T12:00:00Z model:x",
        ("and", ("since", "=", datetime(2026, 1, 31, 12, tzinfo=UTC)), ("model", "=", "x")),
    ),
]


@pytest.mark.parametrize(("query", "expected"), PARSES)
def test_query_parses_to_the_expected_tree(query, expected):
    assert shape(parse(query)) == expected


def test_terms_and_words_keep_their_positions():
    tree = parse('  service:x -"two words" span(kind:llm)')
    service, negated, group = tree.items
    assert service.position == 2
    assert negated.item.position == 13
    assert group.position == 25
    assert group.expr.position == 30


ERRORS = [
    (")", 'unexpected ")" at 0', 0),
    ("a )", 'unexpected ")" at 2', 2),
    ("(a OR b) c)", 'unexpected ")" at 10', 10),
    ("service:x AND (error:true))", 'unexpected ")" at 26', 26),
    ("()", 'unexpected ")" at 1', 1),
    ("(a", 'missing ")" for the "(" at 0', 0),
    ("x span(kind:llm", 'missing ")" for the "span(" at 2', 2),
    ("a AND", "unexpected end of query at 5", 5),
    ("a OR", "unexpected end of query at 4", 4),
    ("NOT", "unexpected end of query at 3", 3),
    ("-", "unexpected end of query at 1", 1),
    ("OR a", 'unexpected "OR" at 0', 0),
    ("a AND OR b", 'unexpected "OR" at 6', 6),
    ("(a AND)", 'unexpected ")" at 6', 6),
    ('"open', "unterminated string starting at 0", 0),
    ('name:"open', "unterminated string starting at 5", 5),
    ('attr."open:x', "unterminated string starting at 5", 5),
    ("duraton:>1s", 'unknown field "duraton" — did you mean "duration"?', 0),
    ("x servce:a", 'unknown field "servce" — did you mean "service"?', 2),
    ("atr.x:1", 'unknown field "atr.x" — did you mean "attr.<key>"?', 0),
    ("zzzz:1", 'unknown field "zzzz"', 0),
    ("http://example.com", 'unknown field "http"', 0),
    ("attr:x", '"attr." needs a key, as in attr.service.name:x', 0),
    ('attr."":x', '"attr." needs a key, as in attr.service.name:x', 0),
    ('attr."a\\"b":x', 'attribute keys cannot contain " or \\ ("attr.a"b")', 0),
    ("name:", 'missing value after "name:" at 5', 5),
    ("name:!= x", 'missing value after "name:!=" at 7', 7),
    ("duration:>", 'missing value after "duration:>" at 10', 10),
    ("duration:abc", '"abc" is not a duration (try 250ms, 1.5s, 2m or 1h)', 9),
    ("duration:>1.5x", '"1.5x" is not a duration (try 250ms, 1.5s, 2m or 1h)', 10),
    ("duration:-5", '"-5" is not a duration (try 250ms, 1.5s, 2m or 1h)', 9),
    ("duration:99999999999d", '"99999999999d" is too large a duration', 9),
    ("tokens:many", '"many" is not a number', 7),
    ("cost:1e9999", '"1e9999" is not a number', 5),
    ("errors:9999999999999999999", '"9999999999999999999" is not a number', 7),
    ("error:maybe", '"maybe" is not true or false', 6),
    ("since:yesterday", '"yesterday" is not a time (try 15m, 24h, 7d or 2026-01-31T12:00:00Z)', 6),
    (
        "until:2026-13-45",
        '"2026-13-45" is not a time (try 15m, 24h, 7d or 2026-01-31T12:00:00Z)',
        6,
    ),
    ("since:99999d", '"99999d" is too far back', 6),
    ("service:>a", '"service" cannot be compared with ":>"', 7),
    ("error:<=true", '"error" cannot be compared with ":<="', 5),
    ("since:>1h", '"since" cannot be compared with ":>"', 5),
    ("attr.x:>abc", '"abc" is not a number', 8),
    ('attr.x:>"3"', '"3" is not a number', 8),
    (
        "span(service:x)",
        '"service" is not a span field and cannot be used inside span(...)',
        5,
    ),
    (
        "span(kind:llm word)",
        'free text "word" cannot be used inside span(...); use span:name',
        14,
    ),
    ("span(span(kind:llm))", "span(...) cannot be nested at 5", 5),
    ("a\x00b", "the query contains an invalid character at 1", 1),
    ("a\ud800", "the query contains an invalid character at 1", 1),
]


@pytest.mark.parametrize(("query", "message", "position"), ERRORS)
def test_bad_query_raises_query_error_with_message_and_position(query, message, position):
    with pytest.raises(QueryError) as caught:
        parse(query)
    assert (caught.value.message, caught.value.position) == (message, position)
    assert str(caught.value) == message


def test_limits_on_length_depth_and_terms():
    with pytest.raises(QueryError) as caught:
        parse("a" * (MAX_LENGTH + 1))
    assert caught.value.position == MAX_LENGTH
    parse("a" * MAX_LENGTH)

    deep = "(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH
    assert shape(parse(deep)) == "a"
    with pytest.raises(QueryError, match=f"deeper than {MAX_DEPTH}") as caught:
        parse("(" + deep + ")")
    with pytest.raises(QueryError, match=f"deeper than {MAX_DEPTH}"):
        parse("NOT " * (MAX_DEPTH + 1) + "a")
    with pytest.raises(QueryError, match=f"deeper than {MAX_DEPTH}"):
        parse("-" * 500 + "a")

    parse(" ".join(["a"] * MAX_TERMS))
    with pytest.raises(QueryError, match=f"more than {MAX_TERMS} terms") as caught:
        parse(" ".join(["a"] * (MAX_TERMS + 1)))
    assert caught.value.position == 2 * MAX_TERMS


def test_every_field_parses_with_a_value_of_its_kind():
    samples = {
        "text": "x*",
        "duration": "2s",
        "number": "3",
        "bool": "true",
        "time": "1h",
        "any": "3",
    }
    for field, kind in FIELDS.items():
        name = f"{field}.key" if field in ("attr", "resource") else field
        term = parse(f"{name}:{samples[kind]}")
        assert isinstance(term, Term)
        assert term.field == field


# --- Property tests: any text is an AST or a QueryError, never anything else ----------------

_TOKENS = [
    "AND",
    "OR",
    "NOT",
    "and",
    "-",
    "(",
    ")",
    "span(",
    '"',
    '\\"',
    "*",
    ":",
    ":!=",
    ":>",
    ":>=",
    ":<",
    ":<=",
    "service",
    "duration",
    "error",
    "model",
    "since",
    "until",
    "kind",
    "span.duration",
    "attr.",
    "attr.gen_ai.request.model",
    'attr."a b"',
    "resource.",
    "250ms",
    "1.5s",
    "2m",
    "7d",
    "2026-01-31",
    "true",
    "gpt-4*",
    "-3.5",
    "x",
    " ",
    "  ",
]


def _parses_or_fails_cleanly(text: str) -> None:
    try:
        parse(text)
    except QueryError as exc:
        assert isinstance(exc.position, int)
        assert 0 <= exc.position <= len(text)
        assert exc.message


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_random_text_is_a_tree_or_a_query_error(text):
    _parses_or_fails_cleanly(text)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=40))
def test_text_from_the_languages_own_tokens_is_a_tree_or_a_query_error(tokens):
    _parses_or_fails_cleanly("".join(tokens))
    _parses_or_fails_cleanly(" ".join(tokens))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["(", ")", "NOT ", "-", "span(", "a "]), max_size=600))
def test_deep_nesting_never_overflows_the_stack(tokens):
    _parses_or_fails_cleanly("".join(tokens))
