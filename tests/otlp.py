"""Hand-built OTLP requests with the real protobuf classes, for exact control in tests."""

from __future__ import annotations

import os
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


def any_value(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(item) for item in value)
        return out
    if isinstance(value, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(
            KeyValue(key=k, value=any_value(v)) for k, v in value.items()
        )
        return out
    return AnyValue(string_value=value)


def span(
    trace_id: str,
    span_id: str,
    name: str,
    *,
    parent: str = "",
    start_ms: float = 0,
    duration_ms: float = 10,
    error: str | None = None,
    base_ns: int | None = None,
    **attributes,
) -> Span:
    base = base_ns if base_ns is not None else time.time_ns() - 60_000_000_000
    start = base + int(start_ms * 1e6)
    result = Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent) if parent else b"",
        name=name,
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=start,
        end_time_unix_nano=start + int(duration_ms * 1e6),
    )
    for key, value in attributes.items():
        result.attributes.append(KeyValue(key=key.replace("__", "."), value=any_value(value)))
    if error is not None:
        result.status.code = Status.STATUS_CODE_ERROR
        result.status.message = error
        event = result.events.add(name="exception", time_unix_nano=start)
        event.attributes.append(KeyValue(key="exception.type", value=any_value("ValueError")))
        event.attributes.append(KeyValue(key="exception.message", value=any_value(error)))
    return result


def request(*spans: Span, service: str = "test-service") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    resource_spans = req.resource_spans.add()
    resource_spans.resource.attributes.append(
        KeyValue(key="service.name", value=any_value(service))
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "tests"
    scope_spans.spans.extend(spans)
    return req


def body(*spans: Span, service: str = "test-service") -> bytes:
    return request(*spans, service=service).SerializeToString()


def parse_response(data: bytes) -> ExportTraceServiceResponse:
    return ExportTraceServiceResponse.FromString(data)
