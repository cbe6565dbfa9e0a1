"""The agent run of agent_tracing.py, with OpenInference attribute names instead.

Arize Phoenix's instrumentations (OpenInference) name things differently from the
OpenTelemetry GenAI conventions that msgtrace-sdk uses: ``openinference.span.kind``,
``llm.model_name``, ``llm.token_count.prompt``, ``llm.input_messages.0.message.content``,
``tool.name``... msgtrace reads both, so this run shows in the same views, with the same
span types, models, tokens, costs and conversation, as the msgtrace-sdk one.

The model calls are simulated (realistic timings, tokens and text): no network, no API
key. Sent with the plain OpenTelemetry SDK and OTLP/HTTP exporter:

    python examples/openinference_tracing.py

It sends to a msgtrace on 127.0.0.1:4321 unless OTEL_EXPORTER_OTLP_ENDPOINT says otherwise.
"""

from __future__ import annotations

import json
import os
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

TICKET = "Order 8812 was charged twice. Can I get the duplicate refunded?"
# $ per token: (input, output)
PRICES = {"gpt-4o-mini": (0.15e-6, 0.6e-6), "gpt-4o": (2.5e-6, 10e-6)}
# What the simulated models answer: (seconds, text, model version, input, output tokens).
SCRIPT = {
    "gpt-4o-mini": (0.45, "Look up order 8812, then refund the duplicate charge.",
                    "gpt-4o-mini-2024-07-18", 412, 88),
    "gpt-4o": (0.8, "Sorry about the double charge on order 8812. I have refunded the "
               "duplicate payment of $42.50; it reaches your card within 5 business days.",
               "gpt-4o-2024-08-06", 1380, 210),
}  # fmt: skip

tracer = trace.get_tracer("support-agent")


def chat(model: str, messages: list[dict]) -> str:
    """A model call, with the attributes OpenInference's OpenAI instrumentation sets."""
    with tracer.start_as_current_span(f"chat {model}", kind=trace.SpanKind.CLIENT) as span:
        span.set_attribute("openinference.span.kind", "LLM")
        span.set_attribute("llm.provider", "openai")
        span.set_attribute("llm.system", "openai")
        span.set_attribute("llm.invocation_parameters", json.dumps({"temperature": 0.2}))
        for index, message in enumerate(messages):
            span.set_attribute(f"llm.input_messages.{index}.message.role", message["role"])
            span.set_attribute(f"llm.input_messages.{index}.message.content", message["content"])
        span.set_attribute("input.value", json.dumps({"messages": messages}))
        span.set_attribute("input.mime_type", "application/json")
        latency, text, version, input_tokens, output_tokens = SCRIPT[model]
        time.sleep(latency)  # stands in for the provider's answer
        span.set_attribute("llm.model_name", version)
        span.set_attribute("llm.output_messages.0.message.role", "assistant")
        span.set_attribute("llm.output_messages.0.message.content", text)
        span.set_attribute("output.value", text)
        span.set_attribute("llm.token_count.prompt", input_tokens)
        span.set_attribute("llm.token_count.completion", output_tokens)
        span.set_attribute("llm.token_count.total", input_tokens + output_tokens)
        input_price, output_price = PRICES[model]
        span.set_attribute("llm.cost.prompt", input_tokens * input_price)
        span.set_attribute("llm.cost.completion", output_tokens * output_price)
        return text


def lookup_order(order_id: str, attempt: int) -> dict:
    """The order service: the first call times out, as a busy service does."""
    if attempt == 1:
        time.sleep(0.25)
        raise TimeoutError("order service did not answer within 250 ms")
    time.sleep(0.08)
    return {"order_id": order_id, "total": 42.50, "charges": 2, "status": "delivered"}


def lookup_order_with_retry(order_id: str, attempts: int = 3) -> dict:
    for attempt in range(1, attempts + 1):
        try:
            # One span per attempt: the failed one shows the error (the SDK records the
            # exception and sets the status as it leaves the span), the next the retry.
            with tracer.start_as_current_span("lookup_order") as span:
                span.set_attribute("openinference.span.kind", "TOOL")
                span.set_attribute("tool.name", "lookup_order")
                span.set_attribute("tool.description", "Fetch an order by id")
                span.set_attribute("tool.parameters", json.dumps({"order_id": order_id}))
                span.set_attribute("input.value", json.dumps({"order_id": order_id}))
                span.set_attribute("retry.count", attempt - 1)
                order = lookup_order(order_id, attempt)
                span.set_attribute("output.value", json.dumps(order))
                return order
        except TimeoutError:
            if attempt == attempts:
                raise
            time.sleep(0.1 * attempt)  # back off before trying again
    raise AssertionError("unreachable")


def answer_ticket(ticket: str) -> tuple[str, str]:
    """(trace id, reply)"""
    with tracer.start_as_current_span("answer_ticket", kind=trace.SpanKind.SERVER) as root:
        root.set_attribute("openinference.span.kind", "CHAIN")
        root.set_attribute("session.id", "ticket-5531")
        root.set_attribute("user.id", "customer-2207")
        root.set_attribute("input.value", ticket)
        with tracer.start_as_current_span("triage") as span:
            span.set_attribute("openinference.span.kind", "AGENT")
            chat("gpt-4o-mini", [{"role": "user", "content": ticket}])
        order = lookup_order_with_retry("8812")
        with tracer.start_as_current_span("reply_writer") as span:
            span.set_attribute("openinference.span.kind", "AGENT")
            reply = chat(
                "gpt-4o",
                [
                    {"role": "system", "content": "You write short, kind support replies."},
                    {"role": "user", "content": f"Ticket: {ticket}\nOrder: {order}"},
                ],
            )
        root.set_attribute("output.value", reply)
        return format(root.get_span_context().trace_id, "032x"), reply


def main() -> None:
    # Defaults so that the script reaches a local msgtrace; an app sets these in its
    # environment instead. The exporter appends /v1/traces itself.
    os.environ.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4321")
    os.environ.setdefault("OTEL_SERVICE_NAME", "support-agent")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    trace_id, reply = answer_ticket(TICKET)
    provider.shutdown()  # sends the spans still waiting in the batch processor
    print(reply)
    base = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/")
    print(f"sent trace {trace_id}: {base}/traces/{trace_id}")


if __name__ == "__main__":
    main()
