"""Ingest benchmark: realistic agent traces over OTLP/HTTP, spans per second committed.

Generates agent traces (an ``invoke_agent`` root, LLM spans with ``gen_ai.*`` attributes and
JSON prompts of a few hundred bytes, tool and retriever spans, nesting, ~5% error spans
with an exception event) with the real OTLP protobuf classes, all before timing. Then
several client threads, each with one keep-alive HTTP connection (as OTLP exporters keep
theirs), post the batches to ``/v1/traces``. A 200 means committed (the server
group-commits before it answers), so spans/s = spans acknowledged / wall time from the
first post to the last 200. Afterwards ``GET /api/v1/stats`` must show every span stored.

Run from the repository root with the project's virtualenv::

    python bench/ingest.py                          # own server, fresh SQLite file
    python bench/ingest.py --db postgres            # own server, fresh PostgreSQL database
    python bench/ingest.py --url http://127.0.0.1:4321   # a server already running
    python bench/ingest.py --spans 100000 --batch 500 --clients 4 --repeat 3 --json

Without ``--url`` the script starts ``msgtrace start`` (the console script next to this
Python) on a free port, on a temporary SQLite file or on a PostgreSQL database it creates
(and drops afterwards) through ``--pg-admin-url``, and stops the server at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

REPO_ROOT = Path(__file__).resolve().parent.parent
OTLP_PATH = "/v1/traces"

# --- realistic agent traces -------------------------------------------------------------------

_VOCABULARY = (
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
_WORDS = _VOCABULARY.split()
_SERVICES = ("support-agent", "research-assistant", "billing-copilot", "travel-planner")
_AGENTS = ("planner", "researcher", "support_triage", "billing_helper", "itinerary_builder")
_MODELS = (
    ("openai", "gpt-4o", "gpt-4o-2024-08-06", 2.5e-6, 10e-6),
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.15e-6, 0.6e-6),
    ("anthropic", "claude-sonnet-4", "claude-sonnet-4-20250514", 3e-6, 15e-6),
    ("anthropic", "claude-3-5-haiku", "claude-3-5-haiku-20241022", 0.8e-6, 4e-6),
)
_TOOLS = (
    ("web_search", "Search the web and return the top results"),
    ("lookup_order", "Fetch an order by id from the order service"),
    ("get_weather", "Current weather for a city"),
    ("run_sql", "Run a read-only SQL query on the analytics warehouse"),
    ("send_email", "Send an email on behalf of the user"),
    ("calculator", "Evaluate an arithmetic expression"),
)
_EXCEPTIONS = (
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


class TraceGenerator:
    """Agent traces of ~10 spans, ~1 KB and ~12 attributes per span on the wire."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.clock_ns = time.time_ns() - 3600 * 10**9

    def text(self, low: int, high: int) -> str:
        words = self.rng.choices(_WORDS, k=self.rng.randint(low, high))
        return " ".join(words).capitalize() + "."

    def _id(self, size: int) -> bytes:
        return self.rng.randbytes(size)

    def trace(self, service: str) -> list[SpanData]:
        """One agent run; spans in the order they end, as a BatchSpanProcessor sends them."""
        rng = self.rng
        trace_id = self._id(16)
        self.clock_ns += rng.randint(1, 50) * 10**6
        conversation = uuid.UUID(bytes=rng.randbytes(16)).hex
        user = f"user-{rng.randint(1, 5000)}"
        agent = rng.choice(_AGENTS)
        provider, model, response_model, in_price, out_price = rng.choice(_MODELS)
        ended: list[SpanData] = []
        root_id = self._id(8)
        start = self.clock_ns
        question = self.text(12, 30)
        t = start + rng.randint(1, 5) * 10**6

        def finish(span: SpanData) -> SpanData:
            if rng.random() < ERROR_RATE:
                kind, message = rng.choice(_EXCEPTIONS)
                span.status_code, span.status_message = STATUS_ERROR, message
                frames = "".join(
                    f'  File "/app/agent/{rng.choice(_WORDS)}.py", line {rng.randint(10, 900)},'
                    f" in {rng.choice(_WORDS)}_{rng.choice(_WORDS)}\n"
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
            ended.append(span)
            return span

        def llm(parent: bytes, at: int, purpose: str) -> int:
            duration = rng.randint(300, 4000) * 10**6
            input_tokens = rng.randint(200, 6000)
            output_tokens = rng.randint(20, 800)
            messages = [
                {"role": "system", "content": f"You are the {agent} agent. {self.text(8, 16)}"},
                {"role": "user", "content": question},
                {"role": "assistant", "content": f"{purpose}: {self.text(10, 25)}"},
            ]
            output = [{"role": "assistant", "content": self.text(15, 35)}]
            finish(
                SpanData(
                    trace_id,
                    self._id(8),
                    parent,
                    f"chat {model}",
                    KIND_CLIENT,
                    at,
                    at + duration,
                    {
                        "gen_ai.operation.name": "chat",
                        "gen_ai.provider.name": provider,
                        "gen_ai.request.model": model,
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
                )
            )
            return at + duration

        def tool(parent: bytes, at: int) -> int:
            name, description = rng.choice(_TOOLS)
            span_id = self._id(8)
            end = at + rng.randint(20, 1500) * 10**6
            if rng.random() < 0.4:  # a tool that asks a model itself (nesting)
                end = max(end, llm(span_id, at + 2 * 10**6, f"{name} helper") + 10**6)
            arguments = {"query": self.text(4, 10), "limit": rng.randint(1, 20)}
            result = {"items": [self.text(6, 14) for _ in range(rng.randint(2, 4))]}
            finish(
                SpanData(
                    trace_id,
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
                        "gen_ai.conversation.id": conversation,
                        "gen_ai.agent.name": agent,
                        "code.function": f"tools.{name}",
                        "tool.retries": 0,
                        "tool.cached": rng.random() < 0.2,
                    },
                )
            )
            return end

        def retriever(parent: bytes, at: int) -> int:
            span_id = self._id(8)
            embed_end = at + rng.randint(30, 200) * 10**6
            finish(
                SpanData(
                    trace_id,
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
                        "input.value": question,
                        "server.address": "api.openai.com",
                        "server.port": 443,
                        "gen_ai.conversation.id": conversation,
                    },
                )
            )
            end = embed_end + rng.randint(5, 80) * 10**6
            documents = [
                {"id": f"doc-{rng.randint(1, 10**6)}", "score": round(rng.random(), 3)}
                for _ in range(5)
            ]
            finish(
                SpanData(
                    trace_id,
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
                        "retrieval.query": question,
                        "retrieval.top_k": 5,
                        "retrieval.documents": json.dumps(documents),
                        "retrieval.context": self.text(25, 45),
                        "gen_ai.conversation.id": conversation,
                        "code.function": "rag.retrieve",
                        "retrieval.latency_ms": round((end - at) / 1e6, 1),
                    },
                )
            )
            return end

        t = retriever(root_id, t)
        for step in range(rng.choice((2, 2, 3, 3))):
            t = llm(root_id, t, f"step {step + 1}") + rng.randint(1, 5) * 10**6
            t = tool(root_id, t) + rng.randint(1, 5) * 10**6
        t = llm(root_id, t, "final answer")
        end = t + rng.randint(1, 5) * 10**6
        finish(
            SpanData(
                trace_id,
                root_id,
                b"",
                f"invoke_agent {agent}",
                KIND_INTERNAL,
                start,
                end,
                {
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": agent,
                    "gen_ai.agent.id": f"agent-{agent}-v3",
                    "gen_ai.provider.name": provider,
                    "gen_ai.request.model": model,
                    "gen_ai.conversation.id": conversation,
                    "session.id": conversation,
                    "user.id": user,
                    "workflow.name": f"{service}.answer",
                    "input.value": question,
                    "output.value": self.text(20, 40),
                    "agent.max_steps": 8,
                },
            )
        )
        self.clock_ns = end
        return ended


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


SCOPE = ("msgtrace.bench", "1.0")


def encode_protobuf(service: str, spans: list[SpanData]) -> bytes:
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(attributes=_key_values(_resource(service))),
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        scope=common_pb2.InstrumentationScope(name=SCOPE[0], version=SCOPE[1]),
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


def encode_json(service: str, spans: list[SpanData]) -> bytes:
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": _json_attributes(_resource(service))},
                "scopeSpans": [
                    {
                        "scope": {"name": SCOPE[0], "version": SCOPE[1]},
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


def _resource(service: str) -> dict:
    return {
        "service.name": service,
        "service.version": "2.4.1",
        "deployment.environment.name": "production",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": "1.37.0",
        "host.name": "worker-3",
    }


@dataclass
class Batch:
    body: bytes
    spans: int
    errors: int


def generate(total_spans: int, batch_size: int, encoding: str, rng: random.Random) -> list[Batch]:
    """``total_spans`` spans in batches of ``batch_size``, one service per batch.

    A trace may straddle two batches of its service, as with a real BatchSpanProcessor.
    """
    generator = TraceGenerator(rng)
    encode = encode_json if encoding == "json" else encode_protobuf
    carry: dict[str, list[SpanData]] = {service: [] for service in _SERVICES}
    batches = []
    remaining = total_spans
    while remaining > 0:
        size = min(batch_size, remaining)
        service = rng.choice(_SERVICES)
        spans = carry[service]
        while len(spans) < size:
            spans.extend(generator.trace(service))
        batch, carry[service] = spans[:size], spans[size:]
        errors = sum(1 for s in batch if s.status_code == STATUS_ERROR)
        batches.append(Batch(encode(service, batch), size, errors))
        remaining -= size
    return batches


# --- the server -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(host: str, port: int, path: str, timeout: float = 30) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        data = response.read()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, {}
    finally:
        conn.close()


def launch_server(
    env: dict[str, str], port: int, log_path: Path, timeout: float
) -> subprocess.Popen:
    """``msgtrace start`` (the console script beside this Python) on ``port``, once healthy."""
    script = Path(sys.executable).parent / "msgtrace"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(script), "start", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"msgtrace start exited {process.returncode}: see {log_path}")
        with contextlib.suppress(OSError):
            if _get_json("127.0.0.1", port, "/health", timeout=2)[0] == 200:
                return process
        time.sleep(0.1)
    stop_server(process, timeout=15)
    raise RuntimeError(f"msgtrace did not answer /health within {timeout:.0f} s: see {log_path}")


def stop_server(process: subprocess.Popen | None, timeout: float) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class OwnServer:
    """``msgtrace start`` on a free port and a fresh database, stopped and cleaned up after."""

    def __init__(self, db: str, pg_admin_url: str) -> None:
        self.db = db
        self.pg_admin_url = pg_admin_url
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = Path(tempfile.mkdtemp(prefix="msgtrace-bench-"))
        self.log_path = self.directory / "server.log"
        self.pg_database: str | None = None
        self.process: subprocess.Popen | None = None

    def _pg(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.pg_admin_url, autocommit=True) as conn:
            conn.execute(sql)

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MSGTRACE_")}
        if self.db == "postgres":
            self.pg_database = f"msgtrace_bench_{uuid.uuid4().hex[:10]}"
            self._pg(f'CREATE DATABASE "{self.pg_database}"')
            base = self.pg_admin_url.rsplit("/", 1)[0]
            env["MSGTRACE_DATABASE_URL"] = f"{base}/{self.pg_database}"
        else:
            env["MSGTRACE_DB_PATH"] = str(self.directory / "bench.db")
        self.process = launch_server(env, self.port, self.log_path, timeout=90)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        stop_server(self.process, timeout=15)
        if self.pg_database:
            with contextlib.suppress(Exception):
                self._pg(f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')
        shutil.rmtree(self.directory, ignore_errors=True)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / tick, sum(values[:8]) / tick


# --- the clients ------------------------------------------------------------------------------


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)  # seconds, 200s only
    acknowledged: int = 0
    rejected: int = 0
    statuses: dict[str | int, int] = field(default_factory=dict)
    last_ok: float = 0.0


class Client:
    """One keep-alive connection, like one OTLP exporter."""

    def __init__(self, host: str, port: int, path: str, content_type: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.headers = {"Content-Type": content_type, "User-Agent": "msgtrace-bench"}
        self.json = content_type == "application/json"
        self.conn: http.client.HTTPConnection | None = None

    def post(self, batch: Batch, outcome: Outcome, retries: int = 5) -> None:
        for _ in range(retries + 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
            started = time.perf_counter()
            try:
                self.conn.request("POST", self.path, batch.body, self.headers)
                response = self.conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.conn.close()
                self.conn = None
                key = type(exc).__name__
                outcome.statuses[key] = outcome.statuses.get(key, 0) + 1
                time.sleep(0.5)
                continue
            finished = time.perf_counter()
            status = response.status
            outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
            if status == 200:
                rejected = self._rejected(data)
                outcome.latencies.append(finished - started)
                outcome.acknowledged += batch.spans - rejected
                outcome.rejected += rejected
                outcome.last_ok = max(outcome.last_ok, finished)
                return
            if status in (429, 502, 503, 504):  # retryable, as for an OTLP exporter
                retry_after = response.getheader("Retry-After") or "1"
                time.sleep(min(float(retry_after) if retry_after.isdigit() else 1.0, 5.0))
                continue
            return  # final: the exporter would drop the batch

    def _rejected(self, data: bytes) -> int:
        if not data:
            return 0
        if self.json:
            partial = json.loads(data).get("partialSuccess") or {}
            return int(partial.get("rejectedSpans") or 0)
        response = trace_service_pb2.ExportTraceServiceResponse.FromString(data)
        return response.partial_success.rejected_spans

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def run_phase(clients: list[Client], batches: list[Batch]) -> tuple[Outcome, float, float]:
    """Post ``batches`` from all clients at once; return merged outcome, start, last 200."""
    counter = itertools.count()
    outcomes = [Outcome() for _ in clients]
    gate = threading.Barrier(len(clients) + 1)

    def work(client: Client, outcome: Outcome) -> None:
        gate.wait()
        while (i := next(counter)) < len(batches):
            client.post(batches[i], outcome)

    threads = [
        threading.Thread(target=work, args=(client, outcome), daemon=True)
        for client, outcome in zip(clients, outcomes, strict=True)
    ]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    gate.wait()
    for thread in threads:
        thread.join()
    merged = Outcome()
    for outcome in outcomes:
        merged.latencies.extend(outcome.latencies)
        merged.acknowledged += outcome.acknowledged
        merged.rejected += outcome.rejected
        merged.last_ok = max(merged.last_ok, outcome.last_ok)
        for status, count in outcome.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + count
    return merged, started, merged.last_ok or time.perf_counter()


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Result:
    line: str
    spans_per_s: float
    p50_ms: float
    p99_ms: float
    ok: bool


def run_once(args: argparse.Namespace, label: str) -> Result:
    rng = random.Random(args.seed)  # None: fresh ids every run
    encoding = "json" if args.json else "protobuf"
    generation_started = time.perf_counter()
    warmup = generate(args.warmup * args.batch, args.batch, encoding, rng)
    batches = generate(args.spans, args.batch, encoding, rng)
    body_bytes = sum(len(b.body) for b in batches)
    error_spans = sum(b.errors for b in batches)
    print(
        f"generated {len(batches)} {encoding} requests, {args.spans:,} spans, "
        f"{body_bytes / args.spans:,.0f} B/span on the wire, {error_spans / args.spans:.1%} "
        f"error spans, in {time.perf_counter() - generation_started:.1f} s "
        f"(+{len(warmup)} warm-up requests)",
        flush=True,
    )

    server = None if args.url else OwnServer(args.db, args.pg_admin_url)
    try:
        if server is not None:
            server.start()
            url = server.url
        else:
            url = args.url
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        status, before = _get_json(host, port, "/api/v1/stats")
        if status != 200:
            raise RuntimeError(f"GET /api/v1/stats answered {status}")
        content_type = "application/json" if args.json else "application/x-protobuf"
        clients = [
            Client(host, port, parts.path.rstrip("/") + OTLP_PATH, content_type)
            for _ in range(args.clients)
        ]
        warm, _, _ = run_phase(clients, warmup) if warmup else (Outcome(), 0.0, 0.0)

        pid = server.process.pid if server and server.process else None
        server_cpu_before = _cpu_seconds(pid) if pid else None
        machine_before = _machine_busy()
        client_cpu_before = time.process_time()
        outcome, started, last_ok = run_phase(clients, batches)
        client_cpu = time.process_time() - client_cpu_before
        machine_after = _machine_busy()
        server_cpu_after = _cpu_seconds(pid) if pid else None
        wall = last_ok - started
        for client in clients:
            client.close()

        # The writer commits before answering, so the stats are final once all 200s are in.
        status, after = _get_json(host, port, "/api/v1/stats", timeout=120)
        stored = after.get("total_spans", 0) - before.get("total_spans", 0)
        expected = outcome.acknowledged + warm.acknowledged
    finally:
        if server is not None:
            if args.keep_server:
                print(f"server left running at {server.url} (pid {server.process.pid})")
            else:
                log = server.log_tail()
                server.stop()
                if args.verbose and log:
                    print(log)

    rate = outcome.acknowledged / wall if wall > 0 else 0.0
    p50 = percentile(outcome.latencies, 0.50) * 1000
    p99 = percentile(outcome.latencies, 0.99) * 1000
    non_ok = {k: v for k, v in outcome.statuses.items() if k != 200}
    non_ok_warm = {k: v for k, v in warm.statuses.items() if k != 200}
    cpu = [f"client CPU {client_cpu:.2f} s ({client_cpu / wall:.0%} of a core)"]
    server_cpu = 0.0
    if server_cpu_before is not None and server_cpu_after is not None:
        server_cpu = server_cpu_after - server_cpu_before
        cpu.append(f"server CPU {server_cpu:.2f} s ({server_cpu / wall:.0%} of a core)")
    if machine_before and machine_after:
        busy = machine_after[0] - machine_before[0]
        total = machine_after[1] - machine_before[1]
        # Everything else: PostgreSQL's backends, or whatever else shares the machine.
        rest = max(busy - client_cpu - server_cpu, 0.0)
        cpu.append(
            f"machine {busy / total:.0%} busy over {os.cpu_count()} cores "
            f"(rest of machine {rest / wall:.0%} of a core)"
        )
    print(
        f"  {len(outcome.latencies)} requests OK in {wall:.2f} s, "
        f"{body_bytes / wall / 1e6:.1f} MB/s; non-200: {non_ok or 'none'}"
        + (f"; warm-up non-200: {non_ok_warm}" if non_ok_warm else "")
        + (f"; rejected spans: {outcome.rejected}" if outcome.rejected else "")
    )
    print(
        f"  latency ms: min {min(outcome.latencies, default=0) * 1000:.1f}  "
        f"mean {statistics.fmean(outcome.latencies or [0]) * 1000:.1f}  "
        f"max {max(outcome.latencies, default=0) * 1000:.1f};  " + ";  ".join(cpu)
    )
    ok = stored == expected and outcome.acknowledged == args.spans and not non_ok
    # The warm-up's spans are stored too: what the timed run added is the rest.
    timed_stored = stored - warm.acknowledged
    verified = (
        f"verified {timed_stored:,} stored"
        if stored == expected
        else f"MISMATCH: total_spans grew by {stored:,}, expected {expected:,} incl. warm-up"
    )
    line = (
        f"{label}  {encoding}  {args.batch}-span batches  {args.clients} clients: "
        f"{rate:,.0f} spans/s committed  p50 {p50:.1f} ms  p99 {p99:.1f} ms  "
        f"({outcome.acknowledged:,} spans, {verified})"
    )
    print(line, flush=True)
    return Result(line, rate, p50, p99, ok)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--url", help="a running server, e.g. http://127.0.0.1:4321")
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgres"),
        help="database of the server this script starts (default sqlite); a label with --url",
    )
    parser.add_argument(
        "--pg-admin-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="where to create (and drop) the --db postgres database",
    )
    parser.add_argument("--spans", type=int, default=100_000, help="spans in the timed run")
    parser.add_argument("--batch", type=int, default=500, help="spans per request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections")
    parser.add_argument("--warmup", type=int, default=8, help="untimed requests first")
    parser.add_argument("--json", action="store_true", help="post OTLP/JSON, not protobuf")
    parser.add_argument("--repeat", type=int, default=1, help="runs (each on a fresh server)")
    parser.add_argument("--seed", type=int, help="fixed random seed (same trace ids!)")
    parser.add_argument("--keep-server", action="store_true", help="leave own server running")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the server log")
    args = parser.parse_args(argv)
    if args.spans < 1 or args.batch < 1 or args.clients < 1 or args.warmup < 0:
        parser.error("--spans, --batch and --clients must be positive, --warmup not negative")
    if args.seed is not None and args.url and args.repeat > 1:
        parser.error("--seed with --repeat against one --url re-sends the same spans")
    label = args.db or ("server" if args.url else "sqlite")
    args.db = args.db or "sqlite"

    results = [run_once(args, label) for _ in range(args.repeat)]
    if len(results) > 1:
        rates = [r.spans_per_s for r in results]
        print(
            f"{label} over {len(results)} runs: median {statistics.median(rates):,.0f} "
            f"spans/s (min {min(rates):,.0f}, max {max(rates):,.0f}); median p50 "
            f"{statistics.median(r.p50_ms for r in results):.1f} ms, p99 "
            f"{statistics.median(r.p99_ms for r in results):.1f} ms"
        )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
