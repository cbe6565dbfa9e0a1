"""Decoding and the semantic-convention table, without a server."""

from __future__ import annotations

import base64
import json

import pytest

from ingest.conventions import derive_columns
from ingest.otlp import MAX_DEPTH, PayloadError, decode_json, decode_protobuf
from tests import otlp


def _json(spans, resource=None):
    return json.dumps(
        {
            "resourceSpans": [
                {"resource": {"attributes": resource or []}, "scopeSpans": [{"spans": spans}]}
            ]
        }
    ).encode()


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        # OTel GenAI, current names
        (
            {
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 5,
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.operation.name": "chat",
            },
            {
                "input_tokens": 10,
                "output_tokens": 5,
                "total_tokens": 15,
                "model": "gpt-4o",
                "span_type": "llm",
                "operation": "chat",
            },
        ),
        # OTel GenAI, older names; the response model wins over the request model
        (
            {
                "gen_ai.usage.prompt_tokens": 7,
                "gen_ai.usage.completion_tokens": 3,
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
            },
            {"input_tokens": 7, "output_tokens": 3, "model": "gpt-4o-2024-08-06"},
        ),
        # msgtrace-sdk cost parts, currency, module and workflow
        (
            {
                "gen_ai.usage.cost.input_tokens": 0.25,
                "gen_ai.usage.cost.output_tokens": 0.5,
                "gen_ai.usage.cost.currency": "eur",
                "module.name": "planner",
                "module.type": "Agent",
                "workflow.name": "wf",
                "session.id": "s1",
                "user.id": "u1",
            },
            {
                "cost": 0.75,
                "currency": "EUR",
                "module_name": "planner",
                "span_type": "agent",
                "workflow_name": "wf",
                "session_id": "s1",
                "user_id": "u1",
            },
        ),
        # msgflux's workflow key beats workflow.name
        ({"msgflux.workflow.name": "mf", "workflow.name": "plain"}, {"workflow_name": "mf"}),
        # OpenInference
        (
            {
                "llm.token_count.prompt": 11,
                "llm.token_count.completion": 4,
                "llm.token_count.total": 20,
                "llm.model_name": "claude-3-5-sonnet",
                "openinference.span.kind": "RETRIEVER",
            },
            {
                "input_tokens": 11,
                "output_tokens": 4,
                "total_tokens": 20,
                "model": "claude-3-5-sonnet",
                "span_type": "retriever",
            },
        ),
        # legacy llm.usage.* / llm.cost.*
        (
            {
                "llm.usage.prompt_tokens": 9,
                "llm.usage.completion_tokens": 1,
                "llm.cost.total": 0.01,
                "llm.model": "mistral-large",
            },
            {
                "input_tokens": 9,
                "output_tokens": 1,
                "cost": 0.01,
                "currency": "USD",
                "model": "mistral-large",
            },
        ),
        # cache-read and reasoning counts are kept
        (
            {
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.cache_read.input_tokens": 80,
                "gen_ai.usage.reasoning.output_tokens": 30,
                "llm.token_count.prompt_details.cache_write": 5,
            },
            {"cache_read_tokens": 80, "reasoning_tokens": 30, "cache_write_tokens": 5},
        ),
        # two conventions for the same cost parts are not added together
        ({"gen_ai.usage.cost.input_tokens": 0.1, "llm.cost.input": 0.1}, {"cost": 0.1}),
        # the conversation id and gen_ai.provider.name / gen_ai.system
        (
            {"gen_ai.conversation.id": "c9", "gen_ai.system": "openai"},
            {"session_id": "c9", "provider": "openai"},
        ),
        ({"gen_ai.tool.name": "search", "span.type": "module"}, {"span_type": "tool"}),
        ({"gen_ai.agent.name": "helper"}, {"span_type": "agent"}),
        ({"gen_ai.operation.name": "embeddings"}, {"span_type": "embedding"}),
        (
            {"traceloop.span.kind": "workflow", "traceloop.workflow.name": "tl"},
            {"span_type": "workflow", "workflow_name": "tl"},
        ),
        # bad numbers do not count
        (
            {
                "gen_ai.usage.input_tokens": "lots",
                "gen_ai.usage.output_tokens": True,
                "llm.cost.total": "NaN?",
            },
            {"input_tokens": 0, "output_tokens": 0, "cost": None, "currency": ""},
        ),
        ({"gen_ai.usage.input_tokens": "12"}, {"input_tokens": 12}),
        ({}, {"span_type": "", "cost": None, "model": "", "total_tokens": 0}),
    ],
)
def test_convention_table(attributes, expected):  # noqa: D103
    columns = derive_columns(dict(attributes))
    for key, value in expected.items():
        assert columns[key] == value, key


def test_protobuf_and_json_decode_to_the_same_rows():
    trace_id, span_id = otlp.new_trace_id(), otlp.new_span_id()
    pb = otlp.span(
        trace_id,
        span_id,
        "same",
        base_ns=1_000,
        duration_ms=2,
        gen_ai__usage__input_tokens=3,
        nested={"a": [1, 2.5, True, "x"]},
    )
    from_pb = decode_protobuf(otlp.body(pb, service="svc")).rows[0]
    from_json = decode_json(
        _json(
            [
                {
                    "traceId": trace_id,
                    "spanId": span_id,
                    "name": "same",
                    "kind": 1,
                    "startTimeUnixNano": "1000",
                    "endTimeUnixNano": str(1000 + 2_000_000),
                    "attributes": [
                        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "3"}},
                        {
                            "key": "nested",
                            "value": {
                                "kvlistValue": {
                                    "values": [
                                        {
                                            "key": "a",
                                            "value": {
                                                "arrayValue": {
                                                    "values": [
                                                        {"intValue": 1},
                                                        {"doubleValue": 2.5},
                                                        {"boolValue": True},
                                                        {"stringValue": "x"},
                                                    ]
                                                }
                                            },
                                        }
                                    ]
                                }
                            },
                        },
                    ],
                }
            ],
            resource=[{"key": "service.name", "value": {"stringValue": "svc"}}],
        )
    ).rows[0]
    for key in (
        "trace_id",
        "span_id",
        "name",
        "kind",
        "start_ns",
        "end_ns",
        "duration_ns",
        "attributes",
        "input_tokens",
        "service_name",
        "span_type",
    ):
        assert from_pb[key] == from_json[key], key


def test_json_accepts_base64_ids_and_rejects_bad_ones_per_span():
    trace_id, span_id = otlp.new_trace_id(), otlp.new_span_id()
    b64 = base64.b64encode(bytes.fromhex(trace_id)).decode()
    decoded = decode_json(
        _json(
            [
                {"traceId": b64, "spanId": span_id, "name": "ok"},
                {"traceId": trace_id, "spanId": "zz" * 8, "name": "bad"},
                {
                    "traceId": trace_id,
                    "spanId": span_id,
                    "name": "bad time",
                    "startTimeUnixNano": "soon",
                },
                {
                    "traceId": trace_id,
                    "spanId": span_id,
                    "name": "bad kind",
                    "kind": "SPAN_KIND_NOPE",
                },
                "not an object",
            ]
        )
    )
    assert [row["name"] for row in decoded.rows] == ["ok"]
    assert decoded.rows[0]["trace_id"] == trace_id
    assert decoded.rejected == 4


@pytest.mark.parametrize("body", [b"", b"{}", b'{"resourceSpans": []}'])
def test_empty_requests_decode_to_nothing(body):
    assert decode_json(body).rows == [] and decode_json(body).rejected == 0


@pytest.mark.parametrize("body", [b"[]", b"nope", b'{"resourceSpans": [1]}', b"\xff\xfe"])
def test_undecodable_json_raises_payload_error(body):
    with pytest.raises(PayloadError):
        decode_json(body)


def test_nesting_is_bounded():
    value: dict = {"leaf": "x"}
    for _ in range(MAX_DEPTH + 5):
        value = {"k": value}
    row = decode_protobuf(
        otlp.body(otlp.span(otlp.new_trace_id(), otlp.new_span_id(), "deep", v=value))
    ).rows[0]
    depth, node = 0, row["attributes"]["v"]
    while isinstance(node, dict):
        node, depth = node["k"], depth + 1
    assert node == "[nesting too deep]"
    assert depth == MAX_DEPTH


def test_all_zero_parent_means_no_parent_and_end_before_start_means_zero_duration():
    sp = otlp.span(otlp.new_trace_id(), otlp.new_span_id(), "x", duration_ms=5)
    sp.parent_span_id = bytes(8)
    sp.end_time_unix_nano = sp.start_time_unix_nano - 1
    row = decode_protobuf(otlp.body(sp)).rows[0]
    assert row["parent_span_id"] == ""
    assert row["duration_ns"] == 0


def test_every_cut_is_recorded_with_its_original_length(settings):
    settings.MSGTRACE_MAX_ATTRIBUTE_CHARS = 64
    long = "y" * 100
    sp = otlp.span(otlp.new_trace_id(), otlp.new_span_id(), "cut", top=long, nested={"inner": long})
    sp.events.add(name="e").attributes.add(key="top", value=otlp.any_value(long))
    request = otlp.request(sp)
    request.resource_spans[0].resource.attributes.add(key="host", value=otlp.any_value(long))
    row = decode_protobuf(request.SerializeToString()).rows[0]
    assert row["attributes"]["msgtrace.truncated"] == {
        "top": 100,
        "nested": 100,
        "events.0.top": 100,
    }
    assert row["attributes"]["top"] == "y" * 64 and row["attributes"]["nested"]["inner"] == "y" * 64
    assert row["resource_attributes"]["msgtrace.truncated"] == {"host": 100}

    json_row = decode_json(
        _json(
            [
                {
                    "traceId": otlp.new_trace_id(),
                    "spanId": otlp.new_span_id(),
                    "attributes": [
                        {"key": "top", "value": {"stringValue": long}},
                        {"key": "nested", "value": {"kvlistValue": {"values": [
                            {"key": "inner", "value": {"stringValue": long}}]}}},
                    ],
                    "events": [{"name": "e", "attributes": [
                        {"key": "top", "value": {"stringValue": long}}]}],
                }
            ],
            resource=[{"key": "host", "value": {"stringValue": long}}],
        )
    ).rows[0]  # fmt: skip
    assert json_row["attributes"]["msgtrace.truncated"] == row["attributes"]["msgtrace.truncated"]
    assert json_row["resource_attributes"]["msgtrace.truncated"] == {"host": 100}


def test_label_limits_fit_the_span_columns():
    from ingest.conventions import LABEL_LIMITS
    from traces.models import Span

    for column, limit in LABEL_LIMITS.items():
        assert Span._meta.get_field(column).max_length == limit, column
    long = {
        "gen_ai.system": "p" * 500,
        "gen_ai.request.model": "m" * 500,
        "gen_ai.operation.name": "o" * 500,
    }
    columns = derive_columns(long)
    assert (len(columns["provider"]), len(columns["model"]), len(columns["operation"])) == (
        64,
        255,
        64,
    )
