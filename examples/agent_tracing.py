"""An agent run traced with msgtrace-sdk: a flow, modules, model calls, a retried tool.

A support agent answers a ticket. The ``triage`` module asks a small model what to do,
the ``lookup_order`` tool times out once and succeeds when retried, and ``reply_writer``
asks a larger model for the reply. Model calls carry model, tokens, cost and messages.
They are simulated (realistic timings, tokens and text): no network, no API key.

    python examples/agent_tracing.py

msgtrace-sdk reads its settings from the environment when it is imported; this script
defaults them to a msgtrace on 127.0.0.1:4321 (set MSGTRACE_OTLP_ENDPOINT to change it).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

# Before msgtrace.sdk is imported: it sets up its exporter then. An app sets these in its
# environment instead.
os.environ.setdefault("MSGTRACE_TELEMETRY_ENABLED", "true")
os.environ.setdefault("MSGTRACE_OTLP_ENDPOINT", "http://127.0.0.1:4321/api/v1/traces/export")
os.environ.setdefault("MSGTRACE_SERVICE_NAME", "support-agent")

from msgtrace.sdk import MsgTraceAttributes, Spans  # noqa: E402
from msgtrace.sdk.tracer import tracer_manager  # noqa: E402
from opentelemetry import trace  # noqa: E402

TICKET = "Order 8812 was charged twice. Can I get the duplicate refunded?"


@contextmanager
def current(span_context):
    """Enter a msgtrace-sdk span and make it current.

    msgtrace-sdk 1.2 starts spans without making them current, so without this their
    children would start traces of their own and ``MsgTraceAttributes`` (which writes to
    the current span) would write nowhere. The SDK records exceptions itself; use_span
    must not record them a second time.
    """
    with (
        span_context as span,
        trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ),
    ):
        yield span


@dataclass
class Reply:
    text: str
    model: str  # the version that answered
    input_tokens: int
    output_tokens: int
    finish_reason: str


# $ per token: (input, output)
PRICES = {"gpt-4o-mini": (0.15e-6, 0.6e-6), "gpt-4o": (2.5e-6, 10e-6)}
# What the simulated models answer, and how long they take (seconds).
SCRIPT = {
    "gpt-4o-mini": (
        0.45,
        Reply("Look up order 8812, then refund the duplicate charge.",
              "gpt-4o-mini-2024-07-18", 412, 88, "tool_calls"),
    ),
    "gpt-4o": (
        0.8,
        Reply("Sorry about the double charge on order 8812. I have refunded the duplicate "
              "payment of $42.50; it reaches your card within 5 business days.",
              "gpt-4o-2024-08-06", 1380, 210, "stop"),
    ),
}  # fmt: skip


def chat(model: str, messages: list[dict]) -> Reply:
    """A model call, traced like an LLM client library traces it."""
    with current(Spans.span_context(f"chat {model}")):
        MsgTraceAttributes.set_operation_name("chat")
        MsgTraceAttributes.set_provider_name("openai")
        MsgTraceAttributes.set_model(model)
        MsgTraceAttributes.set_temperature(0.2)
        MsgTraceAttributes.set_prompt(messages)
        latency, reply = SCRIPT[model]
        time.sleep(latency)  # stands in for the provider's answer
        MsgTraceAttributes.set_response_model(reply.model)
        MsgTraceAttributes.set_finish_reason(reply.finish_reason)
        MsgTraceAttributes.set_usage(
            input_tokens=reply.input_tokens, output_tokens=reply.output_tokens
        )
        input_price, output_price = PRICES[model]
        MsgTraceAttributes.set_cost(
            input_cost=reply.input_tokens * input_price,
            output_cost=reply.output_tokens * output_price,
        )
        MsgTraceAttributes.set_completion(reply.text)
        return reply


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
            # One span per attempt: the failed one shows the error, the next the retry.
            with current(Spans.init_module("lookup_order")):
                MsgTraceAttributes.set_tool_name("lookup_order")
                MsgTraceAttributes.set_tool_description("Fetch an order by id")
                MsgTraceAttributes.set_tool_call_arguments({"order_id": order_id})
                MsgTraceAttributes.set_retry_count(attempt - 1)
                order = lookup_order(order_id, attempt)
                MsgTraceAttributes.set_tool_response(order)
                return order
        except TimeoutError:
            if attempt == attempts:
                raise
            time.sleep(0.1 * attempt)  # back off before trying again
    raise AssertionError("unreachable")


def answer_ticket(ticket: str) -> tuple[str, str]:
    """(trace id, reply)"""
    with current(Spans.init_flow("answer_ticket")) as flow:
        MsgTraceAttributes.set_workflow_name("answer_ticket")
        MsgTraceAttributes.set_user_id("customer-2207")
        MsgTraceAttributes.set_session_id("ticket-5531")
        with current(Spans.init_module("triage")):
            MsgTraceAttributes.set_module_name("triage")
            MsgTraceAttributes.set_module_type("agent")
            chat("gpt-4o-mini", [{"role": "user", "content": ticket}])
        order = lookup_order_with_retry("8812")
        with current(Spans.init_module("reply_writer")):
            MsgTraceAttributes.set_module_name("reply_writer")
            MsgTraceAttributes.set_module_type("agent")
            reply = chat(
                "gpt-4o",
                [
                    {"role": "system", "content": "You write short, kind support replies."},
                    {"role": "user", "content": f"Ticket: {ticket}\nOrder: {order}"},
                ],
            )
        return format(flow.get_span_context().trace_id, "032x"), reply.text


def main() -> None:
    trace_id, reply = answer_ticket(TICKET)
    tracer_manager.shutdown()  # sends the spans still waiting in the batch processor
    print(reply)
    base = os.environ["MSGTRACE_OTLP_ENDPOINT"].removesuffix("/api/v1/traces/export")
    print(f"sent trace {trace_id}: {base}/traces/{trace_id}")


if __name__ == "__main__":
    main()
