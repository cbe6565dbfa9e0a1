"""Compiled queries against traces stored through the real write path, on both databases.

Besides hand-written expectations, every query is checked against a small pure-Python
evaluator of the same AST over the same traces (loaded back as objects): a differential
test that catches SQL that quietly differs between SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from ingest.otlp import decode_protobuf, to_params
from ingest.writer import spans_ingest
from search.compiler import compile_query, glob_lookup
from search.parser import And, Literal, Not, Or, QueryError, SpanGroup, Term, Text, parse
from tests import otlp
from traces.models import Trace, datetime_to_ns

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR_NS = 3600 * 10**9
DAY_NS = 24 * HOUR_NS


def _store(label: str, days_ago: float, spans: list[dict], *, service: str, resource=None) -> str:
    """One trace: ``spans[0]`` is the root, the rest its children; returns the trace id."""
    trace_id, root_id = otlp.new_trace_id(), otlp.new_span_id()
    base = datetime_to_ns(NOW) - int(days_ago * DAY_NS)
    built = []
    for index, spec in enumerate(spans):
        spec = dict(spec)
        attributes = spec.pop("attributes", {})
        built.append(
            otlp.span(
                trace_id,
                root_id if index == 0 else otlp.new_span_id(),
                spec.pop("name"),
                parent="" if index == 0 else root_id,
                base_ns=base,
                **spec,
                **attributes,
            )
        )
    request = otlp.request(*built, service=service)
    for key, value in (resource or {}).items():
        request.resource_spans[0].resource.attributes.append(
            KeyValue(key=key, value=otlp.any_value(value))
        )
    spans_ingest(to_params(decode_protobuf(request.SerializeToString()).rows))
    return trace_id


def _llm(name, model, duration_ms=100, **attributes):
    return {
        "name": name,
        "start_ms": 1,
        "duration_ms": duration_ms,
        "attributes": {"gen_ai.request.model": model, **attributes},
    }


@pytest.fixture
def traces() -> dict[str, str]:
    """Twelve varied traces, by label."""
    made = {}
    made["refund"] = _store(
        "refund",
        0.05,
        [
            {
                "name": "handle_refund",
                "duration_ms": 120,
                "attributes": {"workflow.name": "refund", "session.id": "s-1", "user.id": "u-1"},
            },
            _llm(
                "chat gpt-4o",
                "gpt-4o",
                **{
                    "gen_ai.usage.input_tokens": 100,
                    "gen_ai.usage.output_tokens": 50,
                    "gen_ai.request.temperature": 0.2,
                },
            ),
        ],
        service="billing",
        resource={"deployment.environment": "prod"},
    )
    made["retrieve"] = _store(
        "retrieve",
        1.2,
        [
            {
                "name": "retrieve_docs",
                "duration_ms": 2500,
                "attributes": {"workflow.name": "lookup"},
            },
            {
                "name": "vector search",
                "start_ms": 5,
                "duration_ms": 2400,
                "error": "timeout",
                "attributes": {
                    "openinference.span.kind": "RETRIEVER",
                    "key with spaces": "Hello World",
                    "retrieval.top_k": 5,
                },
            },
        ],
        service="search",
        resource={"deployment.environment": "staging", "host.cpus": 8},
    )
    made["chat"] = _store(
        "chat",
        2.1,
        [
            {"name": "Chat Turn", "duration_ms": 3200, "attributes": {"user.id": "u-2"}},
            _llm(
                "chat mini",
                "gpt-4o-mini",
                duration_ms=3000,
                **{"gen_ai.usage.input_tokens": 400, "gen_ai.usage.output_tokens": 20},
            ),
            {
                "name": "lookup_weather",
                "start_ms": 3001,
                "duration_ms": 100,
                "attributes": {"gen_ai.tool.name": "weather", "retrieval.top_k": 50},
            },
        ],
        service="billing",
        resource={"deployment.environment": "prod"},
    )
    made["agent"] = _store(
        "agent",
        3,
        [
            {
                "name": "agent",
                "duration_ms": 45_000,
                "attributes": {
                    "workflow.name": "agent run",
                    "gen_ai.operation.name": "invoke_agent",
                },
            },
            _llm(
                "claude call",
                "claude-3-5-sonnet",
                duration_ms=40_000,
                **{
                    "gen_ai.usage.input_tokens": 1000,
                    "gen_ai.usage.output_tokens": 500,
                    "gen_ai.usage.cost": 0.05,
                    "stream": True,
                },
            ),
        ],
        service="agents",
    )
    made["quick"] = _store(
        "quick",
        5,
        [
            {
                "name": "retrieve_docs_v2",
                "duration_ms": 50,
                "attributes": {"http.status_code": "200", "stream": False},
            }
        ],
        service="search",
        resource={"deployment.environment": "staging"},
    )
    made["errors"] = _store(
        "errors",
        8,
        [
            {
                "name": "handle_refund",
                "duration_ms": 900,
                "error": "bad",
                "attributes": {"session.id": "s-2", "workflow.name": "refund"},
            },
            _llm("retry", "gpt-4o", error="rate limited", **{"http.status_code": 429}),
        ],
        service="billing",
    )
    made["upper"] = _store(
        "upper",
        0.5,
        [{"name": "SEARCH Query", "duration_ms": 250, "attributes": {"workflow.name": "Lookup"}}],
        service="SearchAPI",
    )
    made["etl"] = _store(
        "etl",
        12,
        [
            {
                "name": "load_user_batch",
                "duration_ms": 60_000,
                "attributes": {"workflow.name": "etl (nightly) 100%_done"},
            },
            {
                "name": "step_1",
                "start_ms": 1,
                "duration_ms": 1000,
                "attributes": {"score": 0.75, "count": 12, "score_str": "0.9"},
            },
        ],
        service="etl",
    )
    made["same_span"] = _store(
        "same_span",
        0.2,
        [
            {"name": "plan", "duration_ms": 4000, "attributes": {"workflow.name": "planner"}},
            _llm("quick llm", "gpt-4o", duration_ms=500),
            {
                "name": "slow tool",
                "start_ms": 600,
                "duration_ms": 3000,
                "attributes": {"gen_ai.tool.name": "browser"},
            },
        ],
        service="agents",
    )
    made["nested"] = _store(
        "nested",
        4,
        [
            {
                "name": "with structures",
                "duration_ms": 30,
                "attributes": {"tags": ["a", "b"], "meta": {"x": 1}, "0": "zero"},
            }
        ],
        service="misc",
    )
    made["multiline"] = _store(
        "multiline",
        6,
        [
            {
                "name": "line one\nline two",
                "duration_ms": 10,
                "attributes": {"flag": False, "big": 10**15},
            }
        ],
        service="misc",
    )
    made["old"] = _store(
        "old",
        30,
        [
            {"name": "legacy job", "duration_ms": 1500, "attributes": {"user.id": "u-1"}},
            _llm("legacy llm", "gpt-3.5-turbo", **{"gen_ai.usage.total_tokens": 7}),
        ],
        service="legacy",
        resource={"deployment.environment": "prod", "region": "eu west"},
    )
    return made


def matching(query: str) -> set[str]:
    return set(Trace.objects.filter(compile_query(query, now=NOW)).values_list("pk", flat=True))


def labels(traces: dict[str, str], query: str) -> set[str]:
    by_id = {trace_id: label for label, trace_id in traces.items()}
    return {by_id[trace_id] for trace_id in matching(query)}


ALL = {
    "refund",
    "retrieve",
    "chat",
    "agent",
    "quick",
    "errors",
    "upper",
    "etl",
    "same_span",
    "nested",
    "multiline",
    "old",
}

EXPECTED = [
    ("", ALL),
    ("   ", ALL),
    ("service:billing", {"refund", "chat", "errors"}),
    ("service:BILLING", {"refund", "chat", "errors"}),
    ("service:search*", {"retrieve", "quick", "upper"}),
    ("service:!=billing", ALL - {"refund", "chat", "errors"}),
    ("-service:billing", ALL - {"refund", "chat", "errors"}),
    ("workflow:lookup", {"retrieve", "upper"}),
    ('workflow:"agent run"', {"agent"}),
    ('workflow:"etl (nightly) 100%_done"', {"etl"}),
    ("workflow:*100%_*", {"etl"}),
    ("workflow:*100_*", set()),
    ("name:*retriev*", {"retrieve", "quick"}),
    ("name:retrieve_docs", {"retrieve"}),
    ("name:r*_d*s", {"retrieve"}),
    ("name:line*two", {"multiline"}),
    ("duration:>2s", {"retrieve", "chat", "agent", "etl", "same_span"}),
    ("duration:>=2500", {"retrieve", "chat", "agent", "etl", "same_span"}),
    ("duration:<100ms", {"quick", "nested", "multiline"}),
    ("duration:1m", {"etl"}),
    ("duration:<=1.5s duration:>0.9s", {"old"}),
    ("error:true", {"retrieve", "errors"}),
    ("error:false", ALL - {"retrieve", "errors"}),
    ("errors:2", {"errors"}),
    ("errors:>=1", {"retrieve", "errors"}),
    ("spans:3", {"chat", "same_span"}),
    ("tokens:>1000", {"agent"}),
    ("input_tokens:400", {"chat"}),
    ("output_tokens:<50 output_tokens:>0", {"chat"}),
    ("tokens:7", {"old"}),
    ("cost:>0", {"agent", "chat", "refund"}),  # chat, refund: priced from their tokens
    ("cost:0.05", {"agent"}),
    ("model:gpt-4o", {"refund", "errors", "same_span"}),
    ("model:gpt-4*", {"refund", "chat", "errors", "same_span"}),
    ("model:*SONNET", {"agent"}),
    ("model:*", {"refund", "chat", "agent", "errors", "same_span", "old"}),
    ("-model:*", {"retrieve", "quick", "upper", "etl", "nested", "multiline"}),
    ("model:!=gpt-4o", ALL - {"refund", "errors", "same_span"}),
    ("session:s-1", {"refund"}),
    ("user:u-1", {"refund", "old"}),
    ("since:24h", {"refund", "upper", "same_span"}),
    ("since:2d until:12h", {"retrieve"}),
    ("since:2026-02-25 until:2026-02-27T00:00:00Z", {"agent", "nested"}),
    ("until:7d", {"errors", "etl", "old"}),
    ("trace:zz", set()),
    ("span:*search*", {"retrieve", "upper"}),
    ("span:lookup_weather", {"chat"}),
    ("span.duration:>=40s", {"agent", "etl"}),
    ("span.error:true", {"retrieve", "errors"}),
    ("kind:llm", {"refund", "chat", "agent", "errors", "same_span", "old"}),
    ("kind:retriever", {"retrieve"}),
    ("kind:tool", {"chat", "same_span"}),
    ("kind:agent", {"agent"}),
    ("kind:llm span.duration:>2s", {"chat", "agent", "same_span"}),
    ("span(kind:llm AND span.duration:>2s)", {"chat", "agent"}),
    ("span(kind:llm span.error:true)", {"errors"}),
    ("span(kind:llm -span.error:true)", {"refund", "chat", "agent", "same_span", "old"}),
    ("kind:!=llm", ALL - {"refund", "chat", "agent", "errors", "same_span", "old"}),
    ("span(kind:!=llm)", ALL),
    ("attr.gen_ai.request.model:gpt-4o", {"refund", "errors", "same_span"}),
    ("attr.gen_ai.request.model:GPT-4O*", {"refund", "chat", "errors", "same_span"}),
    ('attr."key with spaces":"hello world"', {"retrieve"}),
    ('attr."key with spaces":*WORLD', {"retrieve"}),
    ("attr.retrieval.top_k:>10", {"chat"}),
    ("attr.retrieval.top_k:5", {"retrieve"}),
    ("attr.retrieval.top_k:>=5", {"retrieve", "chat"}),
    ("attr.gen_ai.request.temperature:<0.5", {"refund"}),
    ("attr.score:0.75", {"etl"}),
    ("attr.score_str:>0.5", set()),
    ('attr.score_str:"0.9"', {"etl"}),
    ("attr.http.status_code:200", {"quick"}),
    ("attr.http.status_code:429", {"errors"}),
    ("attr.http.status_code:>=400", {"errors"}),
    ("attr.stream:true", {"agent"}),
    ("attr.stream:false", {"quick"}),
    ("attr.flag:false", {"multiline"}),
    ('attr.stream:"true"', set()),
    ("attr.big:1000000000000000", {"multiline"}),
    ("attr.0:zero", {"nested"}),
    ("attr.tags:*a*", set()),
    ("attr.missing:*", set()),
    ("attr.tags:*", {"nested"}),
    ("attr.gen_ai.request:gpt-4o", set()),
    ("span(attr.retrieval.top_k:!=5)", ALL),
    ("span(attr.retrieval.top_k:* attr.retrieval.top_k:!=5)", {"chat"}),
    ("resource.deployment.environment:prod", {"refund", "chat", "old"}),
    ("resource.deployment.environment:!=prod", ALL - {"refund", "chat", "old"}),
    ("resource.host.cpus:>4", {"retrieve"}),
    ('resource.region:"EU WEST"', {"old"}),
    ("refund", {"refund", "errors"}),
    ("REFUND billing", {"refund", "errors"}),
    ('"agent run"', {"agent"}),
    ("retriev*v2", {"quick"}),
    ("lookup OR agents", {"retrieve", "upper", "agent", "same_span"}),
    ("billing error:true OR kind:agent", {"errors", "agent"}),
    ("billing (error:true OR kind:tool)", {"errors", "chat"}),
    ("NOT billing AND NOT search", {"agent", "etl", "same_span", "nested", "multiline", "old"}),
    ("not (billing or search) and duration:>1s", {"agent", "etl", "same_span", "old"}),
    (
        "-(service:billing OR service:search*)",
        ALL - {"refund", "chat", "errors", "retrieve", "quick", "upper"},
    ),
]


@pytest.mark.parametrize(("query", "expected"), EXPECTED)
def test_query_returns_exactly_the_expected_traces(traces, query, expected):
    assert labels(traces, query) == expected


def test_trace_id_prefix_matches_that_trace_only(traces):
    trace_id = traces["agent"]
    assert matching(f"trace:{trace_id[:10]}") == {trace_id}
    assert matching(f"trace:{trace_id[:10].upper()}") == {trace_id}
    assert matching(trace_id[5:15]) == {trace_id}


@pytest.mark.parametrize(
    ("query", "position"),
    [("since:36501d", 6), ("duraton:>1s", 0), ("span(service:x)", 5), ("a )", 2)],
)
def test_bad_queries_raise_query_error_with_position(query, position):
    with pytest.raises(QueryError) as caught:
        compile_query(query, now=NOW)
    assert caught.value.position == position


def test_glob_shapes_use_the_cheapest_lookup():
    assert glob_lookup("gpt") == ("iexact", "gpt")
    assert glob_lookup("gpt*") == ("istartswith", "gpt")
    assert glob_lookup("*gpt") == ("iendswith", "gpt")
    assert glob_lookup("**gpt***") == ("icontains", "gpt")
    assert glob_lookup("***") is None
    assert glob_lookup("a*b")[0] == "iregex"
    assert glob_lookup("*a*b")[0] == "iregex"


# --- The differential test ------------------------------------------------------------------

_MISSING = object()


def _glob(value: str, pattern: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL) is not None


def _compare(actual, op: str, expected) -> bool:
    return {
        "=": actual == expected,
        ">": actual > expected,
        ">=": actual >= expected,
        "<": actual < expected,
        "<=": actual <= expected,
    }[op]


def _json_matches(value, op: str, literal: Literal) -> bool:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if op != "=":
        return is_number and _compare(float(value), op, literal.number)
    if not literal.text.strip("*"):
        return True  # attr.key:* asks whether the key is there at all
    if isinstance(value, str) and _glob(value, literal.text):
        return True
    if literal.number is not None and is_number and float(value) == literal.number:
        return True
    return literal.boolean is not None and isinstance(value, bool) and value == literal.boolean


def _span_term(term: Term, span) -> bool:
    if term.op == "!=":
        return not _span_term(Term(term.field, "=", term.value, term.position, term.key), span)
    if term.field in ("attr", "resource"):
        source = span.attributes if term.field == "attr" else span.resource_attributes
        value = source.get(term.key, _MISSING)
        return value is not _MISSING and _json_matches(value, term.op, term.value)
    if term.field == "span":
        return _glob(span.name, term.value)
    if term.field == "kind":
        return _glob(span.span_type, term.value)
    if term.field == "span.error":
        return span.is_error == term.value
    return _compare(span.duration_ns, term.op, term.value)  # span.duration


def _span_expr(node, span) -> bool:
    if isinstance(node, And):
        return all(_span_expr(item, span) for item in node.items)
    if isinstance(node, Or):
        return any(_span_expr(item, span) for item in node.items)
    if isinstance(node, Not):
        return not _span_expr(node.item, span)
    return _span_term(node, span)


_TRACE_ATTRS = {
    "duration": "duration_ns",
    "errors": "error_count",
    "spans": "span_count",
    "tokens": "total_tokens",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cost": "cost",
    "service": "service_name",
    "workflow": "workflow_name",
    "name": "root_span_name",
    "session": "session_id",
    "user": "user_id",
}


def _trace_term(term: Term, trace, spans) -> bool:
    if term.op == "!=":
        return not _evaluate(
            Term(term.field, "=", term.value, term.position, term.key), trace, spans
        )
    field, value = term.field, term.value
    if field in ("span", "span.duration", "span.error", "kind", "attr", "resource"):
        return any(_span_term(term, span) for span in spans)
    if field == "error":
        return (trace.error_count > 0) == value
    if field == "model":
        return any(span.model and _glob(span.model, value) for span in spans)
    if field == "trace":
        return _glob(trace.trace_id, value if "*" in value else value + "*")
    if field in ("since", "until"):
        moment = value if isinstance(value, datetime) else NOW - value
        start = datetime_to_ns(moment)
        return trace.start_ns >= start if field == "since" else trace.start_ns < start
    actual = getattr(trace, _TRACE_ATTRS[field])
    if isinstance(value, str):
        return _glob(actual, value)
    return _compare(actual, term.op, value)


def _evaluate(node, trace, spans) -> bool:
    if isinstance(node, And):
        return all(_evaluate(item, trace, spans) for item in node.items)
    if isinstance(node, Or):
        return any(_evaluate(item, trace, spans) for item in node.items)
    if isinstance(node, Not):
        return not _evaluate(node.item, trace, spans)
    if isinstance(node, Text):
        return any(
            _glob(text, f"*{node.word}*")
            for text in (
                trace.trace_id,
                trace.root_span_name,
                trace.workflow_name,
                trace.service_name,
            )
        )
    if isinstance(node, SpanGroup):
        return any(_span_expr(node.expr, span) for span in spans)
    return _trace_term(node, trace, spans)


def evaluate(query: str) -> set[str]:
    tree = parse(query)
    loaded = [(trace, list(trace.spans.all())) for trace in Trace.objects.prefetch_related("spans")]
    return {trace.pk for trace, spans in loaded if _evaluate(tree, trace, spans)}


DIFFERENTIAL = [query for query, _ in EXPECTED] + [
    "service:b*g",
    "name:*_*",
    "name:*%*",
    'workflow:"*(*"',
    "name:h*x",
    'name:"*a.b(c)[d]{e}+?^$|\\\\*"',
    'name:"*é\\n*x"',
    "span:*_*",
    "name:H*D",
    "service:*",
    "-*",
    "* billing",
    "NOT NOT refund",
    "-kind:llm -kind:tool",
    "span(kind:tool OR span.duration:>30s) error:false",
    "span(NOT (kind:llm OR kind:tool)) spans:>1",
    "span(attr.http.status_code:>100 AND attr.http.status_code:<300)",
    "span(attr.stream:true OR attr.stream:false)",
    "attr.stream:!=true",
    "attr.meta:*",
    "attr.count:12 OR attr.score:>=0.7",
    "attr.count:12.0",
    "attr.score:<1 attr.count:!=12",
    "resource.deployment.environment:*o* -resource.host.cpus:8",
    "resource.service.name:billing",
    "duration:>100 duration:<=2500ms OR tokens:>=100",
    "user:u-* session:s-*",
    "since:1w -error:true",
    "until:2026-02-20 OR since:1h",
    "cost:<=0 model:*",
    "a OR b OR c",
    "line",
    "*",
    "model:gpt-4o -model:gpt-4o-mini",
]


@pytest.mark.parametrize("query", DIFFERENTIAL)
def test_database_agrees_with_the_python_evaluator(traces, query):
    assert matching(query) == evaluate(query)


_WORDS = [
    "refund",
    "billing",
    "search*",
    "*o*",
    "AND",
    "OR",
    "NOT",
    "-",
    "(",
    ")",
    "span(",
    "service:billing",
    "service:*a*",
    "name:*retriev*",
    "duration:>2s",
    "duration:<=120",
    "error:true",
    "errors:>0",
    "spans:>=2",
    "tokens:>100",
    "cost:>0",
    "model:gpt-4*",
    "user:u-1",
    "since:3d",
    "until:2026-02-28",
    "kind:llm",
    "kind:tool",
    "span.duration:>1s",
    "span.error:true",
    "span:*a*",
    "attr.gen_ai.request.model:gpt-4o",
    "attr.retrieval.top_k:>=5",
    "attr.stream:true",
    'attr."key with spaces":*world*',
    "resource.deployment.environment:prod",
]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(words=st.lists(st.sampled_from(_WORDS), max_size=8))
def test_generated_queries_agree_with_the_python_evaluator(traces, words):
    query = " ".join(words)
    try:
        parse(query)
    except QueryError:
        return
    assert matching(query) == evaluate(query)


_PIECES = [*_WORDS, " ", "*", '"', ":", "%", "_", "\\", "attr.", "é", "\n", "span.duration:", "'"]


@settings(max_examples=200, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=80),
        st.lists(st.sampled_from(_PIECES), max_size=12).map("".join),
    )
)
def test_any_text_compiles_to_a_runnable_filter_or_a_query_error(text):
    try:
        query = compile_query(text, now=NOW)
    except QueryError:
        return
    list(Trace.objects.filter(query).values_list("pk", flat=True))
