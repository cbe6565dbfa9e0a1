"""Browser tests: Playwright driving Debian's Chromium against a real msgtrace server.

The helpers below build spans with exact times through the OpenTelemetry SDK and export
them over OTLP/HTTP, so the pages are seeded through the real ingest path.
"""

from __future__ import annotations

import time

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, Status, StatusCode, set_span_in_context

MS = 1_000_000


def hex_trace_id(span: Span) -> str:
    return format(span.get_span_context().trace_id, "032x")


def hex_span_id(span: Span) -> str:
    return format(span.get_span_context().span_id, "016x")


class Spans:
    """Spans with exact times, built with the OpenTelemetry SDK and exported over OTLP/HTTP."""

    def __init__(
        self,
        server_url: str,
        service: str,
        *,
        resource: dict | None = None,
        scope: tuple[str, str] = ("tests.browser", "1.0"),
    ) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service, **(resource or {})})
        )
        exporter = OTLPSpanExporter(endpoint=server_url + "/v1/traces")
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=4096, max_export_batch_size=512)
        )
        self.tracer = self.provider.get_tracer(*scope)

    def span(
        self,
        name: str,
        *,
        start_ns: int,
        duration_ms: float,
        parent: Span | None = None,
        attributes: dict | None = None,
        error: str | None = None,
        exception: BaseException | None = None,
        exception_attributes: dict | None = None,
        events: tuple[tuple[str, dict], ...] = (),
        links: tuple[Link, ...] = (),
    ) -> Span:
        context = set_span_in_context(parent) if parent is not None else None
        span = self.tracer.start_span(
            name, context=context, start_time=start_ns, attributes=attributes, links=links
        )
        for event_name, event_attributes in events:
            span.add_event(event_name, event_attributes, timestamp=start_ns + MS)
        if exception is not None:
            span.record_exception(
                exception, attributes=exception_attributes, timestamp=start_ns + 2 * MS
            )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=start_ns + int(duration_ms * MS))
        return span

    def send(self) -> None:
        assert self.provider.force_flush(timeout_millis=30_000)
        self.provider.shutdown()


def now_ns(ago_s: float = 0) -> int:
    return time.time_ns() - int(ago_s * 1e9)
