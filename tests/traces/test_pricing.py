"""Costs: price matching, the token arithmetic, ingest, unpriced spans, the span panel's
explanation and ``recompute_costs``, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from ingest.otlp import decode_protobuf, to_params
from ingest.writer import spans_ingest
from tests import otlp
from traces.models import ModelPrice, Span, Trace
from traces.pricing import Price, PriceBook, cost_of

HTMX = {"HTTP_HX_REQUEST": "true"}


def price(pattern, valid_from="2024-01-01", provider="", input="1", output="2", **others):
    fields = {"cache_read": None, "cache_write": None, "reasoning": None} | {
        name: Decimal(value) for name, value in others.items()
    }
    return Price(
        id=hash((pattern, provider, valid_from)) % 10_000,
        pattern=pattern,
        provider=provider,
        valid_from=date.fromisoformat(valid_from),
        input=Decimal(input),
        output=Decimal(output),
        currency="USD",
        **fields,
    )


def ns(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) * 10**9


# --- matching -------------------------------------------------------------------------------


def test_an_exact_name_beats_any_glob_and_longer_globs_beat_shorter():
    book = PriceBook([price("gpt-4o*"), price("gpt-4o-mini*"), price("gpt-4o-mini-2024-07-18")])
    day = date(2025, 1, 1)
    assert book.match("gpt-4o-2024-08-06", "", day).pattern == "gpt-4o*"
    assert book.match("gpt-4o-mini", "", day).pattern == "gpt-4o-mini*"
    assert book.match("gpt-4o-mini-2024-07-18", "", day).pattern == "gpt-4o-mini-2024-07-18"
    assert book.match("gpt-4", "", day) is None
    assert book.match("", "", day) is None


def test_glob_star_matches_anywhere_and_matching_ignores_case():
    book = PriceBook([price("*sonnet*"), price("Claude-3-Haiku*")])
    day = date(2025, 1, 1)
    assert book.match("anthropic.claude-3-5-SONNET-v2:0", "", day).pattern == "*sonnet*"
    assert book.match("claude-3-haiku-20240307", "", day).pattern == "Claude-3-Haiku*"


def test_the_price_valid_on_the_spans_day_is_used():
    old = price("gpt-4o*", "2024-05-13", input="5", output="15")
    new = price("gpt-4o*", "2024-08-06", input="2.50", output="10")
    book = PriceBook([new, old])
    assert book.match("gpt-4o", "", date(2024, 6, 1)) is old
    assert book.match("gpt-4o", "", date(2024, 8, 6)) is new  # valid from that day on
    assert book.match("gpt-4o", "", date(2024, 5, 12)) is None  # before any price


def test_a_pattern_not_yet_priced_on_that_day_falls_back_to_a_less_specific_one():
    book = PriceBook([price("gpt-4o*", "2024-05-13"), price("gpt-4o", "2025-06-01", input="9")])
    assert book.match("gpt-4o", "", date(2025, 1, 1)).pattern == "gpt-4o*"
    assert book.match("gpt-4o", "", date(2025, 7, 1)).pattern == "gpt-4o"


def test_a_row_for_the_spans_provider_is_preferred_over_another_providers():
    generic = price("llama-3.1-8b*", input="0.18")
    groq = price("llama-3.1-8b*", provider="groq", input="0.05")
    book = PriceBook([generic, groq])
    assert book.match("llama-3.1-8b-instant", "groq", date(2025, 1, 1)) is groq
    assert book.match("llama-3.1-8b-instant", "together", date(2025, 1, 1)) is generic
    assert book.match("llama-3.1-8b-instant", "", date(2025, 1, 1)) is generic


def test_a_provider_prefix_in_the_model_name_is_tried_without_it():
    book = PriceBook([price("gpt-4o*"), price("llama-3.3-70b*")])
    day = date(2025, 1, 1)
    assert book.match("openai/gpt-4o", "", day).pattern == "gpt-4o*"
    assert book.match("meta-llama/Llama-3.3-70B-Instruct-Turbo", "", day).pattern == (
        "llama-3.3-70b*"
    )


# --- the arithmetic -------------------------------------------------------------------------


def test_plain_input_and_output():
    costing = cost_of(price("m", input="2.50", output="10"), input_tokens=1200, output_tokens=300)
    assert [(line.label, line.tokens) for line in costing.lines] == [
        ("input", 1200),
        ("output", 300),
    ]
    assert costing.total == pytest.approx(0.006)


def test_cached_tokens_inside_the_input_are_priced_at_their_own_rate_and_counted_once():
    # OpenAI / GenAI conventions: 1,000 input tokens of which 400 were read from the cache.
    gpt = price("m", input="2.50", output="10", cache_read="1.25")
    costing = cost_of(gpt, input_tokens=1000, output_tokens=100, cache_read_tokens=400)
    assert [(line.label, line.tokens) for line in costing.lines] == [
        ("input", 600), ("cache read", 400), ("output", 100),
    ]  # fmt: skip
    assert costing.total == pytest.approx((600 * 2.5 + 400 * 1.25 + 100 * 10) / 1e6)


def test_cache_tokens_beyond_the_input_are_anthropics_raw_usage_and_are_added():
    # Anthropic's own usage: input_tokens excludes the cache reads and writes.
    claude = price("m", input="3", output="15", cache_read="0.30", cache_write="3.75")
    costing = cost_of(
        claude, input_tokens=50, output_tokens=200, cache_read_tokens=2000, cache_write_tokens=300
    )
    assert [(line.label, line.tokens) for line in costing.lines] == [
        ("input", 50), ("cache read", 2000), ("cache write", 300), ("output", 200),
    ]  # fmt: skip
    assert costing.total == pytest.approx((50 * 3 + 2000 * 0.3 + 300 * 3.75 + 200 * 15) / 1e6)


def test_reasoning_tokens_inside_the_output_use_the_reasoning_rate_or_the_output_rate():
    with_rate = cost_of(
        price("m", input="1", output="4", reasoning="8"),
        input_tokens=10, output_tokens=500, reasoning_tokens=300,
    )  # fmt: skip
    assert [(line.label, line.tokens, line.rate) for line in with_rate.lines][1:] == [
        ("output", 200, Decimal(4)), ("reasoning", 300, Decimal(8)),
    ]  # fmt: skip
    fallback = cost_of(
        price("m", input="1", output="4"), input_tokens=10, output_tokens=500, reasoning_tokens=300
    )
    reasoning = fallback.lines[-1]
    assert (reasoning.rate, reasoning.note) == (Decimal(4), "output price")
    assert fallback.total == pytest.approx((10 * 1 + 500 * 4) / 1e6)  # the same as no split


def test_a_cache_price_left_empty_falls_back_to_the_input_price():
    costing = cost_of(
        price("m", input="2"), input_tokens=100, output_tokens=0, cache_read_tokens=40
    )
    cache = costing.lines[1]
    assert (cache.label, cache.rate, cache.note) == ("cache read", Decimal(2), "input price")
    assert costing.total == pytest.approx(100 * 2 / 1e6)


# --- ingest ---------------------------------------------------------------------------------


def store(*spans, service="svc"):
    spans_ingest(to_params(decode_protobuf(otlp.body(*spans, service=service)).rows))


def llm_span(day="2024-09-01", **attributes):
    trace_id = otlp.new_trace_id()
    return trace_id, otlp.span(
        trace_id, otlp.new_span_id(), "chat", base_ns=ns(day), duration_ms=400, **attributes
    )


def stored(trace_id) -> Span:
    return Span.objects.get(trace_id=trace_id)


pytestmark = pytest.mark.django_db


def test_the_shipped_table_prices_gpt_4o_by_the_day_the_span_ran():
    new_id, new = llm_span(
        "2024-09-01",
        **{"gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.provider.name": "openai",
           "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300},
    )  # fmt: skip
    old_id, old = llm_span(
        "2024-06-01",
        **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1200,
           "gen_ai.usage.output_tokens": 300},
    )  # fmt: skip
    store(new, old)
    span = stored(new_id)
    assert span.cost_source == "price"
    assert span.cost == pytest.approx(1200 * 2.5e-6 + 300 * 10e-6)
    assert span.currency == "USD"
    assert (span.price.pattern, span.price.valid_from) == ("gpt-4o*", date(2024, 8, 6))
    assert stored(old_id).cost == pytest.approx(1200 * 5e-6 + 300 * 15e-6)
    assert Trace.objects.get(pk=new_id).cost == pytest.approx(0.006)


CONVENTIONS = {
    "GenAI": {
        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 200, "gen_ai.usage.cache_read.input_tokens": 400,
    },
    "GenAI, older names": {
        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.prompt_tokens": 1000,
        "gen_ai.usage.completion_tokens": 200, "gen_ai.usage.cache_read_input_tokens": 400,
    },
    "OpenInference": {
        "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini",
        "llm.token_count.prompt": 1000, "llm.token_count.completion": 200,
        "llm.token_count.prompt_details.cache_read": 400,
    },
    "OpenLLMetry": {
        "llm.request.type": "chat", "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini", "llm.usage.prompt_tokens": 1000,
        "llm.usage.completion_tokens": 200, "llm.usage.cache_read_input_tokens": 400,
    },
}  # fmt: skip


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_each_conventions_token_keys_are_priced_alike(convention):
    trace_id, span = llm_span("2025-03-01", **CONVENTIONS[convention])
    store(span)
    row = stored(trace_id)
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens) == (1000, 200, 400)
    assert row.cost_source == "price"
    assert row.cost == pytest.approx((600 * 0.15 + 400 * 0.075 + 200 * 0.60) / 1e6)


@pytest.mark.parametrize(
    ("attributes", "cost"),
    [
        # msgtrace-sdk: input and output cost.
        ({"gen_ai.usage.cost.input_tokens": 0.01, "gen_ai.usage.cost.output_tokens": 0.02}, 0.03),
        ({"gen_ai.usage.cost.total": 0.5}, 0.5),
        ({"llm.cost.total": 0.25}, 0.25),
        ({"llm.cost.prompt": 0.1, "llm.cost.completion": 0.2}, 0.3),
    ],
)
def test_a_cost_the_span_reports_is_kept_and_not_repriced(attributes, cost):
    trace_id, span = llm_span(
        **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000,
           "gen_ai.usage.output_tokens": 1000, **attributes},
    )  # fmt: skip
    store(span)
    row = stored(trace_id)
    assert (row.cost, row.cost_source, row.price_id) == (pytest.approx(cost), "span", None)
    call_command("recompute_costs", stdout=io.StringIO())
    assert stored(trace_id).cost == pytest.approx(cost)


def test_spans_with_tokens_but_no_price_are_unpriced_not_free():
    trace_id = otlp.new_trace_id()
    root = otlp.new_span_id()
    base = ns("2025-03-01")
    store(
        otlp.span(trace_id, root, "agent", base_ns=base, duration_ms=900),
        otlp.span(trace_id, otlp.new_span_id(), "priced", parent=root, base_ns=base,
                  **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000,
                     "gen_ai.usage.output_tokens": 0}),
        otlp.span(trace_id, otlp.new_span_id(), "unknown model", parent=root, base_ns=base,
                  **{"gen_ai.request.model": "acme-llm-7", "gen_ai.usage.input_tokens": 10}),
        otlp.span(trace_id, otlp.new_span_id(), "no model", parent=root, base_ns=base,
                  **{"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}),
        otlp.span(trace_id, otlp.new_span_id(), "total only", parent=root, base_ns=base,
                  **{"gen_ai.request.model": "gpt-4o", "llm.usage.total_tokens": 99}),
    )  # fmt: skip
    spans = {span.name: span for span in Span.objects.filter(trace_id=trace_id)}
    assert spans["agent"].cost_source == "" and spans["agent"].cost is None
    assert spans["priced"].cost == pytest.approx(1000 * 2.5e-6)
    for name in ("unknown model", "no model", "total only"):
        assert (spans[name].cost_source, spans[name].cost) == ("unpriced", None), name
    trace = Trace.objects.get(pk=trace_id)
    assert trace.unpriced_count == 3
    assert trace.cost == pytest.approx(1000 * 2.5e-6)


def test_a_price_added_in_this_process_applies_to_the_next_span_at_once():
    first_id, first = llm_span(
        **{"gen_ai.request.model": "acme-1", "gen_ai.usage.input_tokens": 10}
    )
    store(first)
    assert stored(first_id).cost_source == "unpriced"
    ModelPrice.objects.create(
        pattern="acme-*", valid_from=date(2024, 1, 1), input_per_million=3, output_per_million=3
    )
    second_id, second = llm_span(
        **{"gen_ai.request.model": "acme-1", "gen_ai.usage.input_tokens": 10}
    )
    store(second)
    assert stored(second_id).cost == pytest.approx(30e-6)


def test_the_real_otel_sdk_exporter_gets_its_llm_spans_priced(server):
    provider = TracerProvider(resource=Resource.create({"service.name": "pricing-test"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.url + "/v1/traces"))
    )
    span = provider.get_tracer("tests").start_span(
        "chat claude",
        attributes={
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-20250514",
            "gen_ai.usage.input_tokens": 2000, "gen_ai.usage.output_tokens": 500,
            "gen_ai.usage.cache_read.input_tokens": 1500,
        },
    )  # fmt: skip
    span.end()
    provider.shutdown()
    trace_id = format(span.get_span_context().trace_id, "032x")
    server.wait_for_trace(trace_id, spans=1)
    stored_span = server.get_json(f"/api/v1/traces/{trace_id}")["spans"][0]
    assert stored_span["cost"] == pytest.approx((500 * 3 + 1500 * 0.30 + 500 * 15) / 1e6)


# --- the span panel -------------------------------------------------------------------------


def panel(client, trace_id) -> str:
    span = stored(trace_id)
    response = client.get(f"/traces/{trace_id}/spans/{span.span_id}", **HTMX)
    assert response.status_code == 200
    return " ".join(response.content.decode().split())


def test_the_panel_shows_the_arithmetic_and_the_price_it_used(client):
    trace_id, span = llm_span(
        **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1200,
           "gen_ai.usage.output_tokens": 300},
    )  # fmt: skip
    store(span)
    html = panel(client, trace_id)
    assert "1,200 input × $2.50/M</span> + " in html
    assert "300 output × $10/M</span> = <b>$0.0060</b>" in html
    assert "Price: <code>gpt-4o*</code> (openai), since 2024-08-06" in html


def test_the_panel_says_when_the_price_changed_since(client):
    trace_id, span = llm_span(
        **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000}
    )
    store(span)
    ModelPrice.objects.filter(pk=stored(trace_id).price_id).update(input_per_million=3)
    html = panel(client, trace_id)
    assert "= <b>$0.0030</b>" in html
    assert "The price changed after this span was stored ($0.0025 then)" in html


def test_the_panel_says_which_attributes_a_reported_cost_came_from(client):
    trace_id, span = llm_span(
        **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10,
           "gen_ai.usage.cost.input_tokens": 0.01, "gen_ai.usage.cost.output_tokens": 0.02},
    )  # fmt: skip
    store(span)
    html = panel(client, trace_id)
    assert (
        "Reported by the span itself: <code>gen_ai.usage.cost.input_tokens</code> + "
        "<code>gen_ai.usage.cost.output_tokens</code>"
    ) in html


def test_the_panel_explains_an_unpriced_span_and_links_to_add_a_price(client):
    trace_id, span = llm_span(
        **{"gen_ai.request.model": "acme/<b>x</b>", "gen_ai.usage.input_tokens": 10}
    )
    store(span)
    html = panel(client, trace_id)
    assert "unpriced</span>" in html
    assert "no price matches this model on 2024-09-01" in html
    assert "/admin/traces/modelprice/add/?pattern=acme%2F%3Cb%3Ex%3C%2Fb%3E&amp;provider=" in html
    assert "<b>x</b>" not in html


# --- recompute_costs ------------------------------------------------------------------------


def recompute(*args) -> str:
    out = io.StringIO()
    call_command("recompute_costs", *args, stdout=out)
    return out.getvalue()


def test_recompute_prices_spans_after_a_price_is_added_and_updates_trace_totals():
    trace_id, span = llm_span(
        **{"gen_ai.request.model": "acme-2", "gen_ai.usage.input_tokens": 100}
    )
    store(span)
    assert Trace.objects.get(pk=trace_id).unpriced_count == 1
    ModelPrice.objects.create(
        pattern="acme-2", valid_from=date(2024, 1, 1), input_per_million=10, output_per_million=10
    )
    assert "1 spans changed cost, 0 have no price" in recompute()
    trace = Trace.objects.get(pk=trace_id)
    assert (trace.cost, trace.unpriced_count) == (pytest.approx(0.001), 0)
    assert "0 spans changed cost" in recompute()  # nothing left to change


def test_recompute_follows_a_new_price_row_and_leaves_older_days_alone():
    old_id, old = llm_span("2024-09-01", **{"gen_ai.request.model": "gpt-4o",
                                             "gen_ai.usage.input_tokens": 1000})  # fmt: skip
    new_id, new = llm_span("2026-01-10", **{"gen_ai.request.model": "gpt-4o",
                                             "gen_ai.usage.input_tokens": 1000})  # fmt: skip
    store(old, new)
    ModelPrice.objects.create(
        pattern="gpt-4o*", provider="openai", valid_from=date(2026, 1, 1),
        input_per_million=1, output_per_million=4,
    )  # fmt: skip
    recompute()
    assert stored(old_id).cost == pytest.approx(1000 * 2.5e-6)
    assert stored(new_id).cost == pytest.approx(1000 * 1e-6)


def test_recompute_since_and_query_limit_what_is_repriced():
    a_id, a = llm_span("2024-09-01", **{"gen_ai.request.model": "acme-3",
                                         "gen_ai.usage.input_tokens": 1000})  # fmt: skip
    b_id, b = llm_span("2024-09-01", **{"gen_ai.request.model": "acme-3",
                                         "gen_ai.usage.input_tokens": 1000})  # fmt: skip
    store(a, service="alpha")
    store(b, service="beta")
    ModelPrice.objects.create(
        pattern="acme-3", valid_from=date(2024, 1, 1), input_per_million=1, output_per_million=1
    )
    assert "0 spans in 0 traces" in recompute("--since", "1d")
    recompute("--query", "service:alpha", "--since", "2024-08-01")
    assert stored(a_id).cost == pytest.approx(0.001)
    assert stored(b_id).cost_source == "unpriced"
    recompute("--batch-size", "1")
    assert stored(b_id).cost == pytest.approx(0.001)


def test_recompute_prices_spans_stored_before_costs_were_computed():
    trace_id, span = llm_span(
        **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000}
    )
    store(span)
    Span.objects.filter(trace_id=trace_id).update(cost=None, cost_source="", price=None)
    recompute()
    assert (stored(trace_id).cost_source, stored(trace_id).cost) == ("price", pytest.approx(0.0025))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], '--since: "yesterday" is not a time'),
        (["--since", "999999d"], "--since: "),
        (["--query", "duraton:>1s"], '--query: unknown field "duraton"'),
        (["--query", "(error:true"], "--query: "),
        (["--batch-size", "0"], "--batch-size must be from 1 to 10000"),
        (["--batch-size", "100000"], "--batch-size must be from 1 to 10000"),
    ],
)
def test_recompute_refuses_bad_options_clearly(args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        recompute(*args)
