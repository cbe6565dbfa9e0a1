"""The collector, end to end: real exporters and real bodies against a running server."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from tests import otlp

MS = 1_000_000


def _provider(server, path="/v1/traces", **exporter_options):
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout-agent"}))
    exporter = OTLPSpanExporter(endpoint=server.url + path, **exporter_options)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _send_agent_run(provider) -> str:
    """An agent run with exact times: root 1 s, an LLM call, a failing tool with a child."""
    tracer = provider.get_tracer("tests.agent")
    t0 = time.time_ns() - 5_000 * MS
    root = tracer.start_span("agent.run", start_time=t0, attributes={"workflow.name": "refund"})
    root_ctx = set_span_in_context(root)
    llm = tracer.start_span(
        "llm.chat",
        context=root_ctx,
        start_time=t0 + 10 * MS,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.cost.input_tokens": 0.003,
            "gen_ai.usage.cost.output_tokens": 0.003,
        },
    )
    llm.end(end_time=t0 + 410 * MS)
    tool = tracer.start_span(
        "tool.lookup_order",
        context=root_ctx,
        start_time=t0 + 420 * MS,
        attributes={"gen_ai.tool.name": "lookup_order"},
    )
    retriever = tracer.start_span(
        "retriever.orders",
        context=set_span_in_context(tool),
        start_time=t0 + 430 * MS,
        attributes={"openinference.span.kind": "RETRIEVER"},
    )
    retriever.end(end_time=t0 + 480 * MS)
    try:
        raise LookupError("order 42 not found")
    except LookupError as exc:
        tool.record_exception(exc)
        tool.set_status(Status(StatusCode.ERROR, "order 42 not found"))
    tool.end(end_time=t0 + 520 * MS)
    root.end(end_time=t0 + 1000 * MS)
    provider.shutdown()
    return format(root.get_span_context().trace_id, "032x")


def _assert_agent_run(server, trace_id):
    trace = server.wait_for_trace(trace_id, spans=4)
    assert trace["span_count"] == 4
    assert trace["error_count"] == 1
    assert trace["duration_ms"] == 1000.0
    assert trace["service_name"] == "checkout-agent"
    assert trace["root_span_name"] == "agent.run"
    assert trace["workflow_name"] == "refund"
    assert (trace["input_tokens"], trace["output_tokens"], trace["total_tokens"]) == (
        1200,
        300,
        1500,
    )
    assert abs(trace["cost"] - 0.006) < 1e-12
    assert trace["models"] == ["gpt-4o"]

    by_name = {span["name"]: span for span in trace["spans"]}
    assert by_name["llm.chat"]["duration_ms"] == 400.0
    assert by_name["llm.chat"]["span_type"] == "llm"
    assert by_name["tool.lookup_order"]["span_type"] == "tool"
    assert by_name["retriever.orders"]["span_type"] == "retriever"
    assert by_name["tool.lookup_order"]["status"] == {
        "code": "ERROR",
        "message": "order 42 not found",
    }
    exception = by_name["tool.lookup_order"]["events"][0]
    assert exception["name"] == "exception"
    assert exception["attributes"]["exception.type"] == "LookupError"
    assert "Traceback" in exception["attributes"]["exception.stacktrace"]

    tree = server.get_json(f"/api/v1/traces/{trace_id}/tree")
    assert tree["span"]["name"] == "agent.run"
    assert [child["span"]["name"] for child in tree["children"]] == [
        "llm.chat",
        "tool.lookup_order",
    ]
    assert tree["children"][1]["children"][0]["span"]["name"] == "retriever.orders"


def test_otel_sdk_protobuf_export_shows_tree_durations_status_and_totals(server):
    trace_id = _send_agent_run(_provider(server))
    _assert_agent_run(server, trace_id)


def test_otel_sdk_gzip_export_to_the_msgtrace_sdk_path(server):
    provider = _provider(server, path="/api/v1/traces/export", compression=Compression.Gzip)
    trace_id = _send_agent_run(provider)
    _assert_agent_run(server, trace_id)


def test_msgtrace_sdk_flow_with_modules_and_llm_usage(server, tmp_path):
    script = textwrap.dedent(
        """
        from opentelemetry import trace
        from msgtrace.sdk import MsgTraceAttributes, Spans
        from msgtrace.sdk.tracer import tracer_manager

        # msgtrace-sdk 1.2 does not make init_flow/init_module current: use_span does.
        with Spans.init_flow("support_flow") as flow, trace.use_span(flow, end_on_exit=False):
            MsgTraceAttributes.set_workflow_name("support")
            MsgTraceAttributes.set_user_id("user-7")
            MsgTraceAttributes.set_session_id("session-3")
            with Spans.init_module("planner") as module, trace.use_span(module, end_on_exit=False):
                MsgTraceAttributes.set_module_name("planner")
                MsgTraceAttributes.set_module_type("LLM")
                MsgTraceAttributes.set_model("gpt-4o-mini")
                MsgTraceAttributes.set_usage(input_tokens=800, output_tokens=120)
                MsgTraceAttributes.set_cost(input_cost=0.00012, output_cost=0.000072)
            with Spans.init_module("search_tool") as tool, trace.use_span(tool, end_on_exit=False):
                MsgTraceAttributes.set_tool_name("search")
            print(format(flow.get_span_context().trace_id, "032x"))
        tracer_manager.shutdown()
        """
    )
    env = {
        **os.environ,
        "MSGTRACE_TELEMETRY_ENABLED": "true",
        "MSGTRACE_OTLP_ENDPOINT": server.url + "/api/v1/traces/export",
        "MSGTRACE_SERVICE_NAME": "support-bot",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    trace_id = result.stdout.strip()
    trace = server.wait_for_trace(trace_id, spans=3)
    assert trace["service_name"] == "support-bot"
    assert trace["workflow_name"] == "support"
    assert trace["root_span_name"] == "support_flow"
    assert (trace["input_tokens"], trace["output_tokens"]) == (800, 120)
    assert abs(trace["cost"] - 0.000192) < 1e-12
    assert trace["models"] == ["gpt-4o-mini"]
    assert (trace["user_id"], trace["session_id"]) == ("user-7", "session-3")
    by_name = {span["name"]: span for span in trace["spans"]}
    assert by_name["planner"]["span_type"] == "llm"
    assert by_name["search_tool"]["span_type"] == "tool"
    assert by_name["planner"]["parent_span_id"] == by_name["support_flow"]["span_id"]


def _json_body(trace_id, spans):
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [
                            {"key": "service.name", "value": {"stringValue": "json-svc"}}
                        ]
                    },
                    "scopeSpans": [{"scope": {"name": "json"}, "spans": spans}],
                }
            ]
        }
    ).encode()


def test_otlp_json_body_with_hex_ids_string_ints_and_enum_names(server):
    trace_id, root_id, child_id = otlp.new_trace_id(), otlp.new_span_id(), otlp.new_span_id()
    start = time.time_ns() - 10_000 * MS
    spans = [
        {
            "traceId": trace_id,
            "spanId": root_id,
            "name": "root",
            "kind": "SPAN_KIND_SERVER",
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(start + 250 * MS),
            "attributes": [
                {"key": "llm.token_count.prompt", "value": {"intValue": "40"}},
                {"key": "llm.token_count.completion", "value": {"intValue": 2}},
                {"key": "llm.model_name", "value": {"stringValue": "claude-3-5-sonnet"}},
                {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}},
            ],
            "status": {"code": "STATUS_CODE_OK"},
        },
        {
            # snake_case keys and numeric enums are accepted too
            "trace_id": trace_id,
            "span_id": child_id,
            "parent_span_id": root_id,
            "name": "child",
            "kind": 3,
            "start_time_unix_nano": start + 10 * MS,
            "end_time_unix_nano": start + 60 * MS,
            "status": {"code": 2, "message": "bad"},
        },
    ]
    status, headers, body = server.post(_json_body(trace_id, spans), "application/json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {}
    trace = server.get_json(f"/api/v1/traces/{trace_id}")
    assert trace["span_count"] == 2 and trace["error_count"] == 1
    assert trace["duration_ms"] == 250.0
    assert (trace["input_tokens"], trace["output_tokens"]) == (40, 2)
    by_name = {span["name"]: span for span in trace["spans"]}
    assert by_name["root"]["kind"] == "server"
    assert by_name["child"]["kind"] == "client"
    assert by_name["root"]["attributes"]["tags"] == ["a"]
    assert by_name["child"]["status"] == {"code": "ERROR", "message": "bad"}


def test_json_body_with_gzip_encoding(server):
    trace_id = otlp.new_trace_id()
    spans = [
        {
            "traceId": trace_id,
            "spanId": otlp.new_span_id(),
            "name": "zipped",
            "startTimeUnixNano": "1",
            "endTimeUnixNano": "2",
        }
    ]
    status, _, _ = server.post(
        gzip.compress(_json_body(trace_id, spans)),
        "application/json",
        **{"Content-Encoding": "gzip"},
    )
    assert status == 200
    assert server.get_json(f"/api/v1/traces/{trace_id}")["spans"][0]["name"] == "zipped"


def test_some_invalid_spans_give_partial_success_and_the_rest_are_stored(server):
    trace_id = otlp.new_trace_id()
    good = [otlp.span(trace_id, otlp.new_span_id(), f"ok-{i}") for i in range(3)]
    zero_trace = otlp.span("00" * 16, otlp.new_span_id(), "zero-trace")
    short_span = otlp.span(trace_id, otlp.new_span_id(), "short")
    short_span.span_id = b"\x01\x02\x03"
    status, headers, body = server.post(otlp.body(*good, zero_trace, short_span))
    assert status == 200
    assert headers["Content-Type"] == "application/x-protobuf"
    response = otlp.parse_response(body)
    assert response.partial_success.rejected_spans == 2
    assert "trace_id" in response.partial_success.error_message
    assert "span_id" in response.partial_success.error_message
    assert server.get_json(f"/api/v1/traces/{trace_id}")["span_count"] == 3


def test_partial_success_in_json(server):
    trace_id = otlp.new_trace_id()
    spans = [
        {"traceId": trace_id, "spanId": otlp.new_span_id(), "name": "fine"},
        {"traceId": "not-hex", "spanId": otlp.new_span_id(), "name": "bad"},
    ]
    status, _, body = server.post(_json_body(trace_id, spans), "application/json")
    assert status == 200
    assert json.loads(body)["partialSuccess"]["rejectedSpans"] == "1"
    assert server.get_json(f"/api/v1/traces/{trace_id}")["span_count"] == 1


def test_undecodable_protobuf_is_400_with_a_google_rpc_status(server):
    status, headers, body = server.post(b"\xff\xff\xff\xff not protobuf")
    assert status == 400
    assert headers["Content-Type"] == "application/x-protobuf"
    rpc = status_pb2.Status.FromString(body)
    assert rpc.code == 3 and "protobuf" in rpc.message


def test_invalid_json_is_400_with_a_json_status(server):
    status, headers, body = server.post(b'{"resourceSpans": [', "application/json")
    assert status == 400
    assert "not valid JSON" in json.loads(body)["message"]
    # The message may quote the sender's text: browsers must not sniff it into HTML.
    assert {k.lower(): v for k, v in headers.items()}["x-content-type-options"] == "nosniff"


def test_json_that_is_not_an_object_is_400(server):
    status, _, body = server.post(b"[1, 2]", "application/json")
    assert status == 400


def test_bad_gzip_is_400(server):
    status, _, body = server.post(b"\x1f\x8b\x08 this is not gzip", **{"Content-Encoding": "gzip"})
    assert status == 400
    assert "gzip" in status_pb2.Status.FromString(body).message


def test_other_content_type_is_415(server):
    status, _, body = server.post(b"hello", "text/plain")
    assert status == 415
    assert "Content-Type" in json.loads(body)["message"]


def test_other_content_encoding_is_415(server):
    status, _, _ = server.post(otlp.body(), **{"Content-Encoding": "br"})
    assert status == 415


def test_get_on_the_collector_is_405_with_allow(server):
    status, headers, _ = server.request("GET", "/v1/traces")
    assert status == 405
    assert headers["Allow"] == "POST"


def test_gzip_bomb_is_refused_with_413_quickly_and_in_bounded_memory(server):
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(16 * 1024 * 1024)
    bomb = b"".join(compressor.compress(chunk) for _ in range(64)) + compressor.flush()  # 1 GiB
    assert len(bomb) < 2 * 1024 * 1024

    def rss_kb():
        status = Path(f"/proc/{server.process.pid}/status").read_text()
        return int(
            next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]
        )

    before = rss_kb()
    started = time.monotonic()
    status, _, body = server.post(bomb, **{"Content-Encoding": "gzip"})
    elapsed = time.monotonic() - started
    assert status == 413
    assert "inflates to more than" in status_pb2.Status.FromString(body).message
    assert elapsed < 2.0
    # The default limit is 32 MiB: inflating stops there, not at 1 GiB.
    assert rss_kb() - before < 200 * 1024


def test_invalid_utf8_and_nul_are_replaced_not_fatal(server):
    trace_id = otlp.new_trace_id()
    sp = otlp.span(trace_id, otlp.new_span_id(), "MARKER", prompt="PROMPTX")
    data = otlp.body(sp).replace(b"MARKER", b"na\xffmer").replace(b"PROMPTX", b"pr\x00\xfeptx")
    status, _, _ = server.post(data)
    assert status == 200
    stored = server.get_json(f"/api/v1/traces/{trace_id}")["spans"][0]
    assert stored["name"] == "na\ufffdmer"
    assert stored["attributes"]["prompt"] == "pr\ufffd\ufffdptx"

    json_trace = otlp.new_trace_id()
    spans = [
        {
            "traceId": json_trace,
            "spanId": otlp.new_span_id(),
            "name": "nul\u0000name",
            "attributes": [{"key": "k", "value": {"stringValue": "a\u0000b"}}],
        }
    ]
    status, _, _ = server.post(_json_body(json_trace, spans), "application/json")
    assert status == 200
    stored = server.get_json(f"/api/v1/traces/{json_trace}")["spans"][0]
    assert stored["name"] == "nul\ufffdname"
    assert stored["attributes"]["k"] == "a\ufffdb"


def test_over_long_attribute_is_truncated_with_its_length_recorded(server):
    trace_id = otlp.new_trace_id()
    long_prompt = "x" * 100_000
    status, _, _ = server.post(
        otlp.body(otlp.span(trace_id, otlp.new_span_id(), "big", prompt=long_prompt))
    )
    assert status == 200
    attributes = server.get_json(f"/api/v1/traces/{trace_id}")["spans"][0]["attributes"]
    assert len(attributes["prompt"]) == 65536
    assert attributes["msgtrace.truncated"] == {"prompt": 100_000}


def test_duplicates_and_out_of_order_arrivals_keep_trace_totals_exact(server):
    trace_id = otlp.new_trace_id()
    root, child, grandchild = otlp.new_span_id(), otlp.new_span_id(), otlp.new_span_id()
    base = time.time_ns() - 30_000 * MS

    def g(version):
        return otlp.span(
            trace_id,
            grandchild,
            "llm.call",
            parent=child,
            start_ms=20,
            duration_ms=30,
            base_ns=base,
            gen_ai__usage__input_tokens=100,
            gen_ai__usage__output_tokens=10,
            version=version,
        )

    c = otlp.span(
        trace_id,
        child,
        "tool",
        parent=root,
        start_ms=10,
        duration_ms=60,
        base_ns=base,
        error="timeout",
    )
    r = otlp.span(
        trace_id, root, "agent", start_ms=0, duration_ms=100, base_ns=base, workflow__name="triage"
    )

    # Grandchild first; then the child twice in one batch with the grandchild re-sent;
    # the root last, in a batch that repeats everything.
    for batch in ([g(1)], [c, c, g(2)], [r, c, g(3)]):
        status, _, body = server.post(otlp.body(*batch))
        assert status == 200
        assert otlp.parse_response(body).partial_success.rejected_spans == 0

    trace = server.get_json(f"/api/v1/traces/{trace_id}")
    assert trace["span_count"] == 3
    assert trace["error_count"] == 1
    assert (trace["input_tokens"], trace["output_tokens"]) == (100, 10)
    assert trace["duration_ms"] == 100.0
    assert trace["root_span_name"] == "agent" and trace["workflow_name"] == "triage"
    stored = {span["name"]: span for span in trace["spans"]}
    assert stored["llm.call"]["attributes"]["version"] == 3  # last write wins
    tree = server.get_json(f"/api/v1/traces/{trace_id}/tree")
    assert tree["children"][0]["children"][0]["span"]["span_id"] == grandchild


def test_a_span_whose_parent_never_arrives_hangs_under_the_root_as_orphan(server):
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    lost_parent = otlp.new_span_id()
    server.post(
        otlp.body(
            otlp.span(trace_id, root, "root", duration_ms=100),
            otlp.span(trace_id, otlp.new_span_id(), "stray", parent=lost_parent, start_ms=5),
        )
    )
    tree = server.get_json(f"/api/v1/traces/{trace_id}/tree")
    assert tree["span"]["name"] == "root"
    assert tree["children"][0]["span"]["name"] == "stray"
    assert tree["children"][0]["orphan"] is True


def test_over_long_names_and_labels_are_cut_to_fit_not_refused(server):
    trace_id = otlp.new_trace_id()
    sp = otlp.span(trace_id, otlp.new_span_id(), "n" * 5000, gen_ai__system="p" * 300,
                   gen_ai__request__model="m" * 400, workflow__name="w" * 1000,
                   gen_ai__operation__name="o" * 100, session__id="s" * 300)  # fmt: skip
    status, _, _ = server.post(otlp.body(sp, service="v" * 1000))
    assert status == 200
    trace = server.get_json(f"/api/v1/traces/{trace_id}")
    assert len(trace["root_span_name"]) == 1024
    assert len(trace["service_name"]) == 255 and len(trace["workflow_name"]) == 255
    assert trace["spans"][0]["provider"] == "p" * 64
