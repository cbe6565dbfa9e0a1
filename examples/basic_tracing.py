"""Plain OpenTelemetry into msgtrace: the standard SDK and its OTLP/HTTP exporter, nothing else.

A docs assistant answers one question: it embeds the question, searches the docs, and asks
a model, each step a span with the OpenTelemetry GenAI attributes (model, tokens, messages).
The model call is simulated (realistic timing, tokens and text); no network, no API key.

The exporter is configured only by the standard environment variables, as in any app:

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4321 OTEL_SERVICE_NAME=docs-assistant \\
        python examples/basic_tracing.py

Without them, this script sends to a msgtrace on 127.0.0.1:4321.
"""

from __future__ import annotations

import json
import os
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

QUESTION = "How do I rotate the API key without downtime?"
DOCS = [
    ("docs/keys.md#rotation", "Create the new key, deploy it beside the old one, then revoke."),
    ("docs/keys.md#scopes", "Keys carry scopes; a rotated key keeps the scopes of the old one."),
]
ANSWER = (
    "Create a second key in Settings > API keys, deploy it alongside the current one, "
    "and revoke the old key once no request uses it: both keys work during the overlap."
)


def setup_tracing() -> TracerProvider:
    # Defaults so that `python examples/basic_tracing.py` reaches a local msgtrace; an app
    # sets these in its environment instead. The exporter appends /v1/traces itself.
    os.environ.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4321")
    os.environ.setdefault("OTEL_SERVICE_NAME", "docs-assistant")
    # TracerProvider() reads OTEL_SERVICE_NAME and OTLPSpanExporter() the endpoint.
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def answer(question: str, tracer: trace.Tracer) -> str:
    with tracer.start_as_current_span(
        "answer_question", kind=trace.SpanKind.SERVER, attributes={"user.id": "user-481"}
    ) as root:
        root.set_attribute("input.value", question)
        with tracer.start_as_current_span(
            "embeddings text-embedding-3-small", kind=trace.SpanKind.CLIENT
        ) as span:
            span.set_attribute("gen_ai.operation.name", "embeddings")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", "text-embedding-3-small")
            time.sleep(0.06)
            span.set_attribute("gen_ai.usage.input_tokens", 11)
        with tracer.start_as_current_span("search docs") as span:
            span.set_attribute("db.system.name", "pgvector")
            span.set_attribute("db.query.text", "SELECT chunk FROM docs ORDER BY embedding <-> $1")
            time.sleep(0.02)
            span.set_attribute("retrieval.documents", json.dumps([d[0] for d in DOCS]))
        with tracer.start_as_current_span("chat gpt-4o-mini", kind=trace.SpanKind.CLIENT) as span:
            context = "\n".join(text for _, text in DOCS)
            messages = [
                {"role": "system", "content": f"Answer from these docs:\n{context}"},
                {"role": "user", "content": question},
            ]
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            span.set_attribute("gen_ai.request.temperature", 0.2)
            span.set_attribute("gen_ai.input.messages", json.dumps(messages))
            time.sleep(0.65)  # a small model's answer of ~50 tokens
            span.set_attribute("gen_ai.response.model", "gpt-4o-mini-2024-07-18")
            span.set_attribute("gen_ai.response.finish_reasons", ["stop"])
            span.set_attribute("gen_ai.usage.input_tokens", 96)
            span.set_attribute("gen_ai.usage.output_tokens", 41)
            span.set_attribute(
                "gen_ai.output.messages", json.dumps([{"role": "assistant", "content": ANSWER}])
            )
        root.set_attribute("output.value", ANSWER)
        return format(root.get_span_context().trace_id, "032x")


def main() -> None:
    provider = setup_tracing()
    trace_id = answer(QUESTION, trace.get_tracer("docs-assistant"))
    provider.shutdown()  # sends what the batch processor still holds
    base = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/")
    print(f"sent trace {trace_id}: {base}/traces/{trace_id}")


if __name__ == "__main__":
    main()
