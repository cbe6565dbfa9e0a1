"""A real msgflux agent with one tool, traced into msgtrace as one trace per run.

The agent's model is served by a small local stand-in for the OpenAI API (below, standard
library only): it answers the first request with a call to the agent's ``get_weather``
tool and the second, which carries the tool's result, with the final answer, with
realistic delays and token counts. Nothing leaves the machine and no API key is needed.

    python examples/msgflux_tracing.py

msgflux traces through msgtrace-sdk, configured by the MSGTRACE_* variables (defaulted
here to a msgtrace on 127.0.0.1:4321). msgflux 0.5.1 never makes its spans current, so
a plain ``agent(...)`` call arrives as one trace per span: 8 one-span traces for this run.
Making a span of your own current around the call does not help: msgflux then takes its
nested-module path, which calls msgtrace-sdk 1.2's ``Spans.init_module`` with an argument
it does not accept, and the call fails with a TypeError. What works is handing the run the
W3C ``traceparent`` of a root span you start yourself (``traced_run`` below): every
msgflux span then joins that trace, directly under the root.
"""

# No `from __future__ import annotations` here: msgflux 0.5.1 reads a tool's annotations
# as types to describe it to the model, and refuses the strings that import makes them.
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Before msgflux (and so msgtrace.sdk) is imported: the exporter is set up then. An app
# sets these in its environment instead.
os.environ.setdefault("MSGTRACE_TELEMETRY_ENABLED", "true")
os.environ.setdefault("MSGTRACE_OTLP_ENDPOINT", "http://127.0.0.1:4321/api/v1/traces/export")
os.environ.setdefault("MSGTRACE_SERVICE_NAME", "weather-assistant")
os.environ.setdefault("OPENAI_API_KEY", "sk-local-stand-in")  # the stand-in takes any key

import msgflux as mf  # noqa: E402
import msgflux.nn as nn  # noqa: E402
from msgtrace.sdk.tracer import tracer_manager  # noqa: E402
from opentelemetry import context, trace  # noqa: E402
from opentelemetry.trace.propagation.tracecontext import (  # noqa: E402
    TraceContextTextMapPropagator,
)

QUESTION = "Should I take an umbrella in Lisbon today?"


# --- the agent ---------------------------------------------------------------------------------


def get_weather(city: str) -> str:
    """Current weather for a city: conditions, temperature and chance of rain."""
    time.sleep(0.12)  # a weather service's answer
    return json.dumps({"city": city, "conditions": "light rain", "temp_c": 17, "rain": 0.8})


def traced_run(agent, question: str, workflow: str) -> tuple[str, str]:
    """Run the agent inside a root span of ours; (trace id, answer).

    The root is passed on as a W3C traceparent (``00-<trace id>-<span id>-01``), which is
    also how it would arrive from another process, such as in an HTTP request's header.
    msgflux sees a current span that is not recording, treats the call as a new flow, and
    its spans take the root as their parent.
    """
    root = tracer_manager.tracer.start_span(workflow, kind=trace.SpanKind.SERVER)
    root.set_attribute("workflow.name", workflow)
    root.set_attribute("user.id", "user-1093")
    root.set_attribute("input.value", question)
    carrier: dict[str, str] = {}
    propagator = TraceContextTextMapPropagator()
    propagator.inject(carrier, context=trace.set_span_in_context(root))
    token = context.attach(propagator.extract(carrier))
    try:
        answer = agent(question)
        root.set_attribute("output.value", answer)
        return format(root.get_span_context().trace_id, "032x"), answer
    except Exception as exc:
        root.record_exception(exc)
        root.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
        raise
    finally:
        context.detach(token)
        root.end()


# --- a stand-in for the OpenAI API -------------------------------------------------------------


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)  # about four characters a token, as for English text


class StandInModel(BaseHTTPRequestHandler):
    """``POST /v1/chat/completions``: a tool call first, then an answer from its result."""

    def do_POST(self) -> None:  # noqa: N802 (the name http.server looks for)
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        messages = request["messages"]
        tool_results = [m["content"] for m in messages if m.get("role") == "tool"]
        if not tool_results:
            time.sleep(0.35)  # deciding to call a tool: a short completion
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_w1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'},
                    }
                ],
            }
            finish_reason, completion = "tool_calls", 18
        else:
            time.sleep(0.6)  # writing the answer
            weather = json.loads(tool_results[-1])
            text = (
                f"Yes, take one: {weather['city']} has {weather['conditions']} and "
                f"{weather['temp_c']} °C, with an {weather['rain']:.0%} chance of rain today."
            )
            message = {"role": "assistant", "content": text}
            finish_reason, completion = "stop", _tokens(text)
        prompt = sum(_tokens(json.dumps(m)) for m in messages) + 60  # + the tool schema
        body = json.dumps(
            {
                "id": f"chatcmpl-standin-{len(messages)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass  # quiet: the traces tell what happened


def main() -> None:
    stand_in = ThreadingHTTPServer(("127.0.0.1", 0), StandInModel)
    threading.Thread(target=stand_in.serve_forever, daemon=True).start()
    model = mf.Model.chat_completion(
        "openai/gpt-4o-mini", base_url=f"http://127.0.0.1:{stand_in.server_port}/v1"
    )
    agent = nn.Agent(
        "weather_agent",
        model,
        system_message="You are a concise assistant. Use the tools for facts.",
        tools=[get_weather],
    )
    try:
        trace_id, answer = traced_run(agent, QUESTION, "weather_assistant")
    finally:
        stand_in.shutdown()
        tracer_manager.shutdown()  # sends the spans still waiting in the batch processor
    print(answer)
    base = os.environ["MSGTRACE_OTLP_ENDPOINT"].removesuffix("/api/v1/traces/export")
    print(f"sent trace {trace_id}: {base}/traces/{trace_id}")


if __name__ == "__main__":
    main()
