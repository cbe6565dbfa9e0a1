"""Realistic agent traces, as OTLP protobuf: for ``msgtrace demo`` and the benchmarks.

``TraceGenerator`` makes the benchmarks' load (bench/ingest.py and the scripts built on it):
one agent shape of ~10 spans with ``gen_ai.*`` attributes and JSON prompts, ~5% of spans
failing at random. Its random draws are part of the benchmarks' figures, so their order
must not change.

``DemoGenerator`` builds on it for ``msgtrace demo``: several services and workflows
(support, research with sub-agents, billing, travel, a one-call classifier, and now and
then a batch run of hundreds of documents), a mix of models, tools that time out and are
retried, rate-limited calls the client retried, and about one run in twenty that ends in
an error. ``stream`` posts its runs to a server at a steady rate, each timed to end as it
is sent, so the dashboard and live pages fill up as a newcomer watches.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

VOCABULARY = (
    "the a of to and in for on with is that this by from as be are it at or an which we "
    "you can will not have has was were all more about into than when what how its their "
    "agent model tool query result document search answer context user question summary "
    "report data table customer order invoice refund policy account shipping delivery "
    "payment error retry latency token budget vector index embedding chunk source page "
    "section quarter revenue growth forecast region product release feature request "
    "ticket priority status update meeting schedule calendar email draft review approve "
    "contract clause liability term renewal price discount inventory warehouse supplier "
    "weather city temperature flight hotel booking itinerary travel paris london tokyo "
    "python function class module test failure stack trace deploy cluster node memory"
)
WORDS = VOCABULARY.split()
SERVICES = ("support-agent", "research-assistant", "billing-copilot", "travel-planner")
AGENTS = ("planner", "researcher", "support_triage", "billing_helper", "itinerary_builder")
# (provider, requested model, model that answered, $ per input token, $ per output token)
MODELS = (
    ("openai", "gpt-4o", "gpt-4o-2024-08-06", 2.5e-6, 10e-6),
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.15e-6, 0.6e-6),
    ("anthropic", "claude-sonnet-4", "claude-sonnet-4-20250514", 3e-6, 15e-6),
    ("anthropic", "claude-3-5-haiku", "claude-3-5-haiku-20241022", 0.8e-6, 4e-6),
)
TOOLS = (
    ("web_search", "Search the web and return the top results"),
    ("lookup_order", "Fetch an order by id from the order service"),
    ("get_weather", "Current weather for a city"),
    ("run_sql", "Run a read-only SQL query on the analytics warehouse"),
    ("send_email", "Send an email on behalf of the user"),
    ("calculator", "Evaluate an arithmetic expression"),
)
EXCEPTIONS = (
    ("TimeoutError", "upstream did not answer within 30s"),
    ("openai.RateLimitError", "Rate limit reached for requests per min (RPM)"),
    ("httpx.ConnectError", "[Errno 111] Connection refused"),
    ("ValueError", "tool arguments do not match the schema"),
)
ERROR_RATE = 0.05
KIND_INTERNAL, KIND_CLIENT = 1, 3
STATUS_OK, STATUS_ERROR = 1, 2


@dataclass
class SpanData:
    """One span, encoding-neutral: turned into protobuf or OTLP/JSON later."""

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict
    status_code: int = 0
    status_message: str = ""
    events: list = field(default_factory=list)


@dataclass
class Run:
    """What the spans of one agent run share."""

    trace_id: bytes
    conversation: str
    user: str
    agent: str
    model: tuple  # one of MODELS: the run's main model
    question: str
    ended: list[SpanData] = field(default_factory=list)  # in the order they end


class TraceGenerator:
    """Agent traces of ~10 spans, ~1 KB and ~12 attributes per span on the wire."""

    error_rate = ERROR_RATE  # each span fails with this chance

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.clock_ns = time.time_ns() - 3600 * 10**9

    def text(self, low: int, high: int) -> str:
        words = self.rng.choices(WORDS, k=self.rng.randint(low, high))
        return " ".join(words).capitalize() + "."

    def _id(self, size: int) -> bytes:
        return self.rng.randbytes(size)

    def _start_run(self) -> Run:
        rng = self.rng
        trace_id = self._id(16)
        self.clock_ns += rng.randint(1, 50) * 10**6
        conversation = uuid.UUID(bytes=rng.randbytes(16)).hex
        user = f"user-{rng.randint(1, 5000)}"
        agent = rng.choice(AGENTS)
        model = rng.choice(MODELS)
        return Run(trace_id, conversation, user, agent, model, question="")

    def fail(self, span: SpanData, kind: str, message: str) -> None:
        """Mark ``span`` failed, with an exception event and a plausible stack trace."""
        rng = self.rng
        span.status_code, span.status_message = STATUS_ERROR, message
        frames = "".join(
            f'  File "/app/agent/{rng.choice(WORDS)}.py", line {rng.randint(10, 900)},'
            f" in {rng.choice(WORDS)}_{rng.choice(WORDS)}\n"
            for _ in range(4)
        )
        span.events.append(
            (
                "exception",
                span.end_ns,
                {
                    "exception.type": kind,
                    "exception.message": message,
                    "exception.stacktrace": "Traceback (most recent call last):\n"
                    + frames
                    + f"{kind}: {message}",
                    "exception.escaped": False,
                },
            )
        )

    def _finish(self, run: Run, span: SpanData) -> SpanData:
        if self.rng.random() < self.error_rate:
            kind, message = self.rng.choice(EXCEPTIONS)
            self.fail(span, kind, message)
        run.ended.append(span)
        return span

    def _llm(
        self, run: Run, parent: bytes, at: int, purpose: str, model: tuple | None = None
    ) -> int:
        rng = self.rng
        provider, model_name, response_model, in_price, out_price = model or run.model
        duration = rng.randint(300, 4000) * 10**6
        input_tokens = rng.randint(200, 6000)
        output_tokens = rng.randint(20, 800)
        messages = [
            {"role": "system", "content": f"You are the {run.agent} agent. {self.text(8, 16)}"},
            {"role": "user", "content": run.question},
            {"role": "assistant", "content": f"{purpose}: {self.text(10, 25)}"},
        ]
        output = [{"role": "assistant", "content": self.text(15, 35)}]
        self._finish(
            run,
            SpanData(
                run.trace_id,
                self._id(8),
                parent,
                f"chat {model_name}",
                KIND_CLIENT,
                at,
                at + duration,
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": provider,
                    "gen_ai.request.model": model_name,
                    "gen_ai.response.model": response_model,
                    "gen_ai.request.temperature": round(rng.uniform(0, 1), 2),
                    "gen_ai.request.max_tokens": 1024,
                    "gen_ai.response.id": f"chatcmpl-{rng.randbytes(12).hex()}",
                    "gen_ai.response.finish_reasons": ["stop"],
                    "gen_ai.usage.input_tokens": input_tokens,
                    "gen_ai.usage.output_tokens": output_tokens,
                    "gen_ai.usage.cost.input_tokens": round(input_tokens * in_price, 8),
                    "gen_ai.usage.cost.output_tokens": round(output_tokens * out_price, 8),
                    "gen_ai.input.messages": json.dumps(messages),
                    "gen_ai.output.messages": json.dumps(output),
                },
            ),
        )
        return at + duration

    def _tool(self, run: Run, parent: bytes, at: int, tool: tuple | None = None) -> int:
        rng = self.rng
        name, description = tool or rng.choice(TOOLS)
        span_id = self._id(8)
        end = at + rng.randint(20, 1500) * 10**6
        if rng.random() < 0.4:  # a tool that asks a model itself (nesting)
            end = max(end, self._llm(run, span_id, at + 2 * 10**6, f"{name} helper") + 10**6)
        arguments = {"query": self.text(4, 10), "limit": rng.randint(1, 20)}
        result = {"items": [self.text(6, 14) for _ in range(rng.randint(2, 4))]}
        self._finish(
            run,
            SpanData(
                run.trace_id,
                span_id,
                parent,
                f"execute_tool {name}",
                KIND_INTERNAL,
                at,
                end,
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": name,
                    "gen_ai.tool.description": description,
                    "gen_ai.tool.type": "function",
                    "gen_ai.tool.call.id": f"call_{rng.randbytes(9).hex()}",
                    "gen_ai.tool.call.arguments": json.dumps(arguments),
                    "gen_ai.tool.call.result": json.dumps(result),
                    "gen_ai.conversation.id": run.conversation,
                    "gen_ai.agent.name": run.agent,
                    "code.function": f"tools.{name}",
                    "tool.retries": 0,
                    "tool.cached": rng.random() < 0.2,
                },
            ),
        )
        return end

    def _retriever(self, run: Run, parent: bytes, at: int) -> int:
        rng = self.rng
        span_id = self._id(8)
        embed_end = at + rng.randint(30, 200) * 10**6
        self._finish(
            run,
            SpanData(
                run.trace_id,
                self._id(8),
                span_id,
                "embeddings text-embedding-3-small",
                KIND_CLIENT,
                at + 10**6,
                embed_end,
                {
                    "gen_ai.operation.name": "embeddings",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "text-embedding-3-small",
                    "gen_ai.response.model": "text-embedding-3-small",
                    "gen_ai.usage.input_tokens": rng.randint(10, 80),
                    "gen_ai.usage.cost.input_tokens": 1e-8,
                    "gen_ai.embeddings.dimension.count": 1536,
                    "gen_ai.request.encoding_formats": ["float"],
                    "input.value": run.question,
                    "server.address": "api.openai.com",
                    "server.port": 443,
                    "gen_ai.conversation.id": run.conversation,
                },
            ),
        )
        end = embed_end + rng.randint(5, 80) * 10**6
        documents = [
            {"id": f"doc-{rng.randint(1, 10**6)}", "score": round(rng.random(), 3)}
            for _ in range(5)
        ]
        self._finish(
            run,
            SpanData(
                run.trace_id,
                span_id,
                parent,
                "retrieve knowledge_base",
                KIND_INTERNAL,
                at,
                end,
                {
                    "openinference.span.kind": "RETRIEVER",
                    "gen_ai.operation.name": "retrieval",
                    "gen_ai.data_source.id": "kb-main",
                    "db.system.name": "pgvector",
                    "db.collection.name": "knowledge_chunks",
                    "retrieval.query": run.question,
                    "retrieval.top_k": 5,
                    "retrieval.documents": json.dumps(documents),
                    "retrieval.context": self.text(25, 45),
                    "gen_ai.conversation.id": run.conversation,
                    "code.function": "rag.retrieve",
                    "retrieval.latency_ms": round((end - at) / 1e6, 1),
                },
            ),
        )
        return end

    def trace(self, service: str) -> list[SpanData]:
        """One agent run; spans in the order they end, as a BatchSpanProcessor sends them."""
        rng = self.rng
        run = self._start_run()
        root_id = self._id(8)
        start = self.clock_ns
        run.question = self.text(12, 30)
        t = start + rng.randint(1, 5) * 10**6
        t = self._retriever(run, root_id, t)
        for step in range(rng.choice((2, 2, 3, 3))):
            t = self._llm(run, root_id, t, f"step {step + 1}") + rng.randint(1, 5) * 10**6
            t = self._tool(run, root_id, t) + rng.randint(1, 5) * 10**6
        t = self._llm(run, root_id, t, "final answer")
        end = t + rng.randint(1, 5) * 10**6
        provider, model, *_ = run.model
        self._finish(
            run,
            SpanData(
                run.trace_id,
                root_id,
                b"",
                f"invoke_agent {run.agent}",
                KIND_INTERNAL,
                start,
                end,
                {
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": run.agent,
                    "gen_ai.agent.id": f"agent-{run.agent}-v3",
                    "gen_ai.provider.name": provider,
                    "gen_ai.request.model": model,
                    "gen_ai.conversation.id": run.conversation,
                    "session.id": run.conversation,
                    "user.id": run.user,
                    "workflow.name": f"{service}.answer",
                    "input.value": run.question,
                    "output.value": self.text(20, 40),
                    "agent.max_steps": 8,
                },
            ),
        )
        self.clock_ns = end
        return run.ended


# --- the demo's runs -----------------------------------------------------------------------

EXTRA_MODELS = (
    ("google", "gemini-2.0-flash", "gemini-2.0-flash-001", 0.1e-6, 0.4e-6),
    ("mistral", "mistral-large", "mistral-large-2411", 2e-6, 6e-6),
)
_MODEL = {model[1]: model for model in MODELS + EXTRA_MODELS}
_TOOL = dict(TOOLS) | {
    "search_flights": "Search flights between two airports on a date",
    "search_hotels": "Search hotels in a city for the given nights",
    "refund_order": "Refund an order, fully or in part",
    "get_invoice": "Fetch an invoice and its line items",
}
# A tool call that fails and is tried again: (exception type, message).
_TRANSIENT = (
    ("TimeoutError", "upstream did not answer within 30s"),
    ("httpx.ConnectError", "[Errno 111] Connection refused"),
    ("httpx.HTTPStatusError", "Server error '503 Service Unavailable'"),
)
# A run's last model call that fails for good; the exception comes from the provider's SDK.
_FATAL = (
    ("RateLimitError", "Rate limit reached for requests per min (RPM); retries exhausted"),
    ("InternalServerError", "Error code: 529 - overloaded"),
    ("BadRequestError", "Error code: 400 - prompt is too long for the model's context window"),
    ("APITimeoutError", "Request timed out after 120s"),
)
FAILING_SHARE = 0.05  # runs with an error span; half recover through a retry, half fail
LARGE_SHARE = 0.015  # batch runs of hundreds of documents: the very large traces
RETRIED_CALL_SHARE = 0.06  # model calls the HTTP client retried after a 429 (no error)
BATCH_SIZE = 512  # spans per request, as the OTel SDK's BatchSpanProcessor sends them


@dataclass
class DemoRun(Run):
    service: str = ""
    workflow: str = ""
    failure: str = ""  # "recovered", "fatal" or "" (see DemoGenerator.run)


class DemoGenerator(TraceGenerator):
    """Varied agent runs for ``msgtrace demo``, deterministic for a given seed."""

    error_rate = 0.0  # failures are placed on purpose, per run, not per span

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.clock_ns = time.time_ns()
        self.recent_sessions: deque[tuple[str, str]] = deque(maxlen=24)
        self.workflows: list[tuple[Callable[[DemoRun, int], int], str, str, int]] = [
            (self._answer_ticket, "support-agent", "answer_ticket", 32),
            (self._research_report, "research-assistant", "research_report", 18),
            (self._explain_invoice, "billing-copilot", "explain_invoice", 18),
            (self._classify_intent, "billing-copilot", "classify_intent", 12),
            (self._plan_trip, "travel-planner", "plan_trip", 20),
        ]

    def _id(self, size: int) -> bytes:
        # Fresh ids even for a fixed seed: a second demo run must not add its spans to the
        # first run's traces.
        return os.urandom(size)

    def run(self) -> tuple[str, list[SpanData]]:
        """One run of a random workflow: (service, its spans in the order they ended)."""
        rng = self.rng
        run = DemoRun(**vars(self._start_run()))
        if self.recent_sessions and rng.random() < 0.3:  # a user coming back to a chat
            run.conversation, run.user = rng.choice(self.recent_sessions)
        self.recent_sessions.append((run.conversation, run.user))
        roll = rng.random()
        run.failure = (
            "recovered" if roll < FAILING_SHARE / 2 else "fatal" if roll < FAILING_SHARE else ""
        )
        if rng.random() < LARGE_SHARE:
            build, run.service, run.workflow = (
                self._batch_summarize,
                "research-assistant",
                "batch_summarize",
            )
        else:
            weights = [entry[3] for entry in self.workflows]
            build, run.service, run.workflow, _ = rng.choices(self.workflows, weights)[0]
        run.question = self.text(10, 28)
        start = self.clock_ns
        build(run, start)
        run.ended.sort(key=lambda span: span.end_ns)  # the order an exporter sends them in
        # Runs are generated back to back; shift this one to end now, as it is sent.
        shift = time.time_ns() - max(span.end_ns for span in run.ended)
        for span in run.ended:
            span.start_ns += shift
            span.end_ns += shift
            span.events = [(name, at + shift, attrs) for name, at, attrs in span.events]
        self.clock_ns = time.time_ns()
        return run.service, run.ended

    # --- building blocks -------------------------------------------------------------------

    def _root(
        self, run: DemoRun, root_id: bytes, name: str, start: int, end: int, attributes: dict
    ) -> None:
        span = SpanData(run.trace_id, root_id, b"", name, KIND_INTERNAL, start, end, {
            **attributes,
            "workflow.name": run.workflow,
            "session.id": run.conversation,
            "gen_ai.conversation.id": run.conversation,
            "user.id": run.user,
            "input.value": run.question,
            "output.value": self.text(15, 40),
            "deployment.environment": "production",
        })  # fmt: skip
        if run.failure == "fatal":
            failed = next(s for s in reversed(run.ended) if s.status_code == STATUS_ERROR)
            exception = next(attrs for name, _, attrs in failed.events if name == "exception")
            self.fail(span, exception["exception.type"], failed.status_message)
        run.ended.append(span)

    def _call_llm(
        self,
        run: DemoRun,
        parent: bytes,
        at: int,
        purpose: str,
        model: str | None = None,
        *,
        final: bool = False,
    ) -> int:
        """A model call; the run's planned failure may land on it (see ``run``)."""
        rng = self.rng
        chosen = _MODEL[model] if model else run.model
        if run.failure == "recovered" and rng.random() < 0.5:
            run.failure = ""  # rate-limited once, then answered after a back-off
            end = self._llm(run, parent, at, purpose, chosen)
            kind = f"{chosen[0]}.RateLimitError"
            self._failed_attempt(run.ended[-1], kind, "Error code: 429 - rate limit exceeded")
            at = end + rng.randint(500, 2500) * 10**6
        end = self._llm(run, parent, at, purpose, chosen)
        span = run.ended[-1]
        if final and run.failure == "fatal":
            kind, message = rng.choice(_FATAL)
            self._failed_attempt(span, f"{chosen[0]}.{kind}", message)
        elif rng.random() < RETRIED_CALL_SHARE:
            # The HTTP client retried a 429 inside the call: slower, not an error.
            backoff = rng.randint(800, 4000) * 10**6
            span.end_ns += backoff
            span.attributes["http.request.resend_count"] = 1
            span.events.append(("retry", span.start_ns + 10**8, {
                "http.response.status_code": 429, "retry.delay_ms": backoff // 10**6,
            }))  # fmt: skip
            end += backoff
        return end

    def _failed_attempt(self, span: SpanData, kind: str, message: str) -> None:
        """An attempt that errored: no answer, no output tokens, the error on the span."""
        attributes = span.attributes
        for key in ("gen_ai.output.messages", "gen_ai.tool.call.result"):
            attributes.pop(key, None)
        if "gen_ai.usage.output_tokens" in attributes:
            attributes["gen_ai.usage.output_tokens"] = 0
            attributes["gen_ai.usage.cost.output_tokens"] = 0.0
            attributes["gen_ai.response.finish_reasons"] = ["error"]
        self.fail(span, kind, message)

    def _call_tool(self, run: DemoRun, parent: bytes, at: int, name: str) -> int:
        """A tool call; if the run is to recover from a failure, it times out once first."""
        rng = self.rng
        if run.failure == "recovered":
            run.failure = ""
            end = self._tool(run, parent, at, (name, _TOOL[name]))
            kind, message = rng.choice(_TRANSIENT)
            self._failed_attempt(run.ended[-1], kind, message)
            at = end + rng.randint(200, 1500) * 10**6
            end = self._tool(run, parent, at, (name, _TOOL[name]))
            run.ended[-1].attributes["tool.retries"] = 1
            return end
        return self._tool(run, parent, at, (name, _TOOL[name]))

    def _agent(self, run: DemoRun, parent: bytes, at: int, agent: str, steps) -> int:
        """A sub-agent span around ``steps(span_id, start) -> end``."""
        span_id = self._id(8)
        end = steps(span_id, at + 10**6) + self.rng.randint(1, 5) * 10**6
        run.ended.append(
            SpanData(run.trace_id, span_id, parent, f"invoke_agent {agent}", KIND_INTERNAL, at,
                     end, {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent,
                           "gen_ai.agent.id": f"agent-{agent}-v3"})
        )  # fmt: skip
        return end

    def _pause(self, at: int) -> int:
        return at + self.rng.randint(1, 8) * 10**6

    # --- the workflows ---------------------------------------------------------------------

    def _answer_ticket(self, run: DemoRun, start: int) -> int:
        rng, root_id = self.rng, self._id(8)
        run.agent = "support_triage"
        t = self._retriever(run, root_id, self._pause(start))
        for step in range(rng.choice((1, 2, 2, 3))):
            t = self._pause(self._call_llm(run, root_id, t, f"step {step + 1}"))
            tool = rng.choice(("lookup_order", "lookup_order", "refund_order", "send_email"))
            t = self._pause(self._call_tool(run, root_id, t, tool))
        t = self._call_llm(run, root_id, t, "final answer", final=True)
        end = self._pause(t)
        self._root(run, root_id, "invoke_agent support_triage", start, end, {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": run.agent,
        })  # fmt: skip
        return end

    def _research_report(self, run: DemoRun, start: int) -> int:
        rng, root_id = self.rng, self._id(8)
        run.agent = "planner"
        t = self._pause(self._call_llm(run, root_id, self._pause(start), "plan", "gpt-4o"))

        def research(span_id: bytes, at: int) -> int:
            for _ in range(rng.randint(1, 3)):
                at = self._pause(self._call_tool(run, span_id, at, "web_search"))
            return self._call_llm(run, span_id, at, "summarise findings", "gpt-4o-mini")

        for _ in range(rng.randint(2, 4)):
            t = self._pause(self._agent(run, root_id, t, "researcher", research))
        t = self._call_llm(run, root_id, t, "write the report", "claude-sonnet-4", final=True)
        end = self._pause(t)
        self._root(run, root_id, "research_report", start, end, {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
        })  # fmt: skip
        return end

    def _explain_invoice(self, run: DemoRun, start: int) -> int:
        root_id = self._id(8)
        run.agent = "billing_helper"
        t = self._call_llm(run, root_id, self._pause(start), "understand", "gpt-4o-mini")
        t = self._pause(self._call_tool(run, root_id, self._pause(t), "get_invoice"))
        t = self._pause(self._call_tool(run, root_id, t, "run_sql"))
        if self.rng.random() < 0.5:
            t = self._pause(self._call_tool(run, root_id, t, "calculator"))
        t = self._call_llm(run, root_id, t, "explain", "claude-3-5-haiku", final=True)
        end = self._pause(t)
        self._root(run, root_id, "invoke_agent billing_helper", start, end, {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": run.agent,
        })  # fmt: skip
        return end

    def _classify_intent(self, run: DemoRun, start: int) -> int:
        root_id = self._id(8)
        model = self.rng.choice(("gpt-4o-mini", "gemini-2.0-flash"))
        t = self._call_llm(run, root_id, self._pause(start), "classify", model, final=True)
        end = self._pause(t)
        self._root(run, root_id, "classify_intent", start, end, {"module.type": "chain"})
        return end

    def _plan_trip(self, run: DemoRun, start: int) -> int:
        rng, root_id = self.rng, self._id(8)
        run.agent = "itinerary_builder"
        t = self._pause(self._call_llm(run, root_id, self._pause(start), "plan", "gpt-4o"))
        for _ in range(rng.randint(1, 3)):
            t = self._pause(self._call_tool(run, root_id, t, "get_weather"))
        t = self._pause(self._call_tool(run, root_id, t, "search_flights"))
        t = self._pause(self._call_tool(run, root_id, t, "search_hotels"))
        model = rng.choice(("gpt-4o", "mistral-large", "claude-sonnet-4"))
        t = self._call_llm(run, root_id, t, "itinerary", model, final=True)
        end = self._pause(t)
        self._root(run, root_id, "invoke_agent itinerary_builder", start, end, {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": run.agent,
        })  # fmt: skip
        return end

    def _batch_summarize(self, run: DemoRun, start: int) -> int:
        """Hundreds of documents, each embedded and summarised: a very large trace."""
        rng, root_id = self.rng, self._id(8)
        run.agent = "researcher"
        workers = [self._pause(start)] * 8  # when each of 8 workers is free again
        for number in range(rng.randint(150, 600)):
            worker = min(range(len(workers)), key=workers.__getitem__)
            t, span_id = workers[worker], self._id(8)
            end = self._retriever(run, span_id, t + 10**6)
            end = self._call_llm(run, span_id, end, f"summarise doc {number}", "gpt-4o-mini")
            run.ended.append(
                SpanData(run.trace_id, span_id, root_id, f"summarize_document doc-{number:04d}",
                         KIND_INTERNAL, t, end + 10**6, {"module.type": "chain",
                         "document.id": f"doc-{rng.randint(1, 10**6)}"})
            )  # fmt: skip
            workers[worker] = end + 2 * 10**6
        t = max(workers)
        t = self._call_llm(run, root_id, t, "merge summaries", "claude-sonnet-4", final=True)
        end = self._pause(t)
        self._root(run, root_id, "batch_summarize", start, end, {"module.type": "chain"})
        return end


# --- OTLP encodings --------------------------------------------------------------------------


def _any_value(value) -> common_pb2.AnyValue:
    if isinstance(value, str):
        return common_pb2.AnyValue(string_value=value)
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    if isinstance(value, list):
        return common_pb2.AnyValue(
            array_value=common_pb2.ArrayValue(values=[_any_value(v) for v in value])
        )
    raise TypeError(type(value))


def _key_values(attributes: dict) -> list[common_pb2.KeyValue]:
    return [common_pb2.KeyValue(key=k, value=_any_value(v)) for k, v in attributes.items()]


def _json_value(value) -> dict:
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 travels as a string in OTLP/JSON
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_json_value(v) for v in value]}}
    raise TypeError(type(value))


def _json_attributes(attributes: dict) -> list[dict]:
    return [{"key": k, "value": _json_value(v)} for k, v in attributes.items()]


DEMO_SCOPE = ("msgtrace.demo", "1.0")
# On every demo span, so the query resource.msgtrace.demo:true finds (and deletes) them.
DEMO_RESOURCE = {"msgtrace.demo": True}


def resource(service: str) -> dict:
    return {
        "service.name": service,
        "service.version": "2.4.1",
        "deployment.environment.name": "production",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": "1.37.0",
        "host.name": "worker-3",
    }


def encode_protobuf(
    service: str,
    spans: list[SpanData],
    scope: tuple[str, str] = DEMO_SCOPE,
    extra_resource: dict | None = None,
) -> bytes:
    attributes = resource(service) | (extra_resource or {})
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(attributes=_key_values(attributes)),
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        scope=common_pb2.InstrumentationScope(name=scope[0], version=scope[1]),
                        spans=[
                            trace_pb2.Span(
                                trace_id=s.trace_id,
                                span_id=s.span_id,
                                parent_span_id=s.parent_span_id,
                                name=s.name,
                                kind=s.kind,
                                start_time_unix_nano=s.start_ns,
                                end_time_unix_nano=s.end_ns,
                                attributes=_key_values(s.attributes),
                                events=[
                                    trace_pb2.Span.Event(
                                        name=name,
                                        time_unix_nano=at,
                                        attributes=_key_values(attrs),
                                    )
                                    for name, at, attrs in s.events
                                ],
                                status=trace_pb2.Status(
                                    code=s.status_code, message=s.status_message
                                ),
                            )
                            for s in spans
                        ],
                    )
                ],
            )
        ]
    )
    return request.SerializeToString()


def encode_json(service: str, spans: list[SpanData], scope: tuple[str, str] = DEMO_SCOPE) -> bytes:
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": _json_attributes(resource(service))},
                "scopeSpans": [
                    {
                        "scope": {"name": scope[0], "version": scope[1]},
                        "spans": [
                            {
                                "traceId": s.trace_id.hex(),
                                "spanId": s.span_id.hex(),
                                "parentSpanId": s.parent_span_id.hex(),
                                "name": s.name,
                                "kind": s.kind,
                                "startTimeUnixNano": str(s.start_ns),
                                "endTimeUnixNano": str(s.end_ns),
                                "attributes": _json_attributes(s.attributes),
                                "events": [
                                    {
                                        "name": name,
                                        "timeUnixNano": str(at),
                                        "attributes": _json_attributes(attrs),
                                    }
                                    for name, at, attrs in s.events
                                ],
                                "status": {"code": s.status_code, "message": s.status_message},
                            }
                            for s in spans
                        ],
                    }
                ],
            }
        ]
    }
    return json.dumps(body, separators=(",", ":")).encode()


# --- sending ---------------------------------------------------------------------------------


class DemoError(Exception):
    """The demo cannot go on: the server is unreachable or refuses what is sent."""


@dataclass
class Tally:
    traces: int = 0
    spans: int = 0
    failed_traces: int = 0  # with at least one error span
    large_traces: int = 0
    rejected_spans: int = 0
    seconds: float = 0.0  # since the stream started, as of the last run sent


class Sender:
    """Posts OTLP/HTTP protobuf to one server over a keep-alive connection."""

    def __init__(self, url: str, timeout: float = 30.0, api_key: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must look like http://host:port, got {url!r}")
        self.url = url.rstrip("/")
        # Needed when the server has MSGTRACE_AUTH on (docs/security.md).
        self.api_key = os.environ.get("MSGTRACE_API_KEY", "") if api_key is None else api_key
        self._parts = parts
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self.tally = Tally()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            parts = self._parts
            connection = (
                http.client.HTTPSConnection
                if parts.scheme == "https"
                else http.client.HTTPConnection
            )
            self._conn = connection(parts.hostname, parts.port, timeout=self._timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _exchange(self, method: str, path: str, body: bytes | None, headers: dict):
        """One request; a connection the server closed in between is opened again once."""
        for attempt in (1, 2):
            try:
                conn = self._connection()
                conn.request(method, self._parts.path.rstrip("/") + path, body, headers)
                response = conn.getresponse()
                return response, response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2 or isinstance(exc, ConnectionRefusedError | TimeoutError):
                    reason = getattr(exc, "strerror", None) or exc
                    raise DemoError(f"cannot reach msgtrace at {self.url}: {reason}") from None
        raise AssertionError("unreachable")

    def check(self) -> dict:
        """The server's /health, or DemoError saying why it cannot be used."""
        response, data = self._exchange("GET", "/health", None, {"Accept": "application/json"})
        try:
            health = json.loads(data)
        except ValueError:
            health = None
        if not isinstance(health, dict) or "database" not in health:
            raise DemoError(
                f"{self.url} answered /health with HTTP {response.status}, not as msgtrace does: "
                "is that the right address?"
            )
        if response.status != 200:
            raise DemoError(f"msgtrace at {self.url} is unhealthy: its database does not answer")
        return health

    def send(self, service: str, spans: list[SpanData]) -> None:
        """One run, in requests of at most ``BATCH_SIZE`` spans, retried when asked to."""
        headers = {"Content-Type": "application/x-protobuf", "User-Agent": "msgtrace-demo"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for first in range(0, len(spans), BATCH_SIZE):
            batch = spans[first : first + BATCH_SIZE]
            body = encode_protobuf(service, batch, extra_resource=DEMO_RESOURCE)
            for _ in range(5):
                response, data = self._exchange("POST", "/v1/traces", body, headers)
                if response.status not in (429, 503):
                    break
                # The server is catching up: wait as long as it asks (at most 5 s).
                retry_after = response.getheader("Retry-After") or "1"
                time.sleep(min(float(retry_after) if retry_after.isdigit() else 1.0, 5.0))
            if response.status != 200:
                hint = (
                    " (set MSGTRACE_API_KEY)" if response.status == 401 and not self.api_key else ""
                )
                raise DemoError(
                    f"msgtrace at {self.url} refused the spans: HTTP {response.status} "
                    f"{_status_message(data)}".rstrip()
                    + hint
                )
            answer = trace_service_pb2.ExportTraceServiceResponse.FromString(data)
            self.tally.rejected_spans += answer.partial_success.rejected_spans
        self.tally.traces += 1
        self.tally.spans += len(spans)
        self.tally.failed_traces += any(span.status_code == STATUS_ERROR for span in spans)
        self.tally.large_traces += len(spans) > BATCH_SIZE


def _status_message(data: bytes) -> str:
    """The message of an OTLP error body (google.rpc.Status), if there is one."""
    from google.rpc import status_pb2

    try:
        return status_pb2.Status.FromString(data).message
    except Exception:  # not protobuf: show nothing rather than bytes
        return ""


def stream(
    sender: Sender,
    generator: DemoGenerator,
    *,
    rate: float,
    duration: float,
    report: Callable[[Tally], None],
    report_every: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Tally:
    """Send runs at ``rate`` a second for ``duration`` seconds (0: until interrupted).

    Gaps between runs vary around 1/rate, as real traffic does. When sending falls behind
    (a very large run takes a while), at most a second's worth of runs is caught up, so a
    stall never turns into a burst.
    """
    started = clock()
    due = started
    next_report = started + report_every
    while duration <= 0 or clock() - started < duration:
        wait = due - clock()
        if wait > 0:
            sleep(wait)
        if duration > 0 and clock() - started >= duration:
            break
        service, spans = generator.run()
        sender.send(service, spans)
        now = clock()
        sender.tally.seconds = now - started
        due = max(due + generator.rng.expovariate(rate), now - 1.0)
        if now >= next_report:
            report(sender.tally)
            next_report = now + report_every
    sender.tally.seconds = clock() - started
    return sender.tally
