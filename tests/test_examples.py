"""Every script in examples/, run as its README says, against a real ``msgtrace start``.

The sending examples run at once (each takes one to four seconds, mostly waiting on its
simulated model), each with a service name of its own; the tests then check through the
API that their traces arrived with the expected shape.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from traces.client import Client

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    service: str

    @property
    def trace_id(self) -> str:
        match = re.search(r"^sent trace ([0-9a-f]{32}): ", self.stdout, re.M)
        assert match, (self.stdout, self.stderr)
        return match[1]


def _env(**extra: str) -> dict[str, str]:
    """The test's environment without msgtrace's or OpenTelemetry's settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSGTRACE_", "OTEL_"))}
    return {**env, **extra}


# msgflux 0.5.1 without our traceparent: a plain call, then a call inside a current span.
_MSGFLUX_AS_IS = textwrap.dedent(
    """
    import sys, threading
    from http.server import ThreadingHTTPServer

    sys.path.insert(0, sys.argv[1])
    import msgflux_tracing as example  # its stand-in model and tool
    from msgtrace.sdk.tracer import tracer_manager

    stand_in = ThreadingHTTPServer(("127.0.0.1", 0), example.StandInModel)
    threading.Thread(target=stand_in.serve_forever, daemon=True).start()
    model = example.mf.Model.chat_completion(
        "openai/gpt-4o-mini", base_url=f"http://127.0.0.1:{stand_in.server_port}/v1"
    )
    agent = example.nn.Agent("weather_agent", model, tools=[example.get_weather])
    print(agent(example.QUESTION))
    try:
        with tracer_manager.tracer.start_as_current_span("my_root"):
            agent(example.QUESTION)
    except TypeError as exc:
        print(f"TypeError: {exc}")
    stand_in.shutdown()
    tracer_manager.shutdown()
    """
)


@pytest.fixture(scope="module")
def ran(live_server_process) -> dict[str, Ran]:
    url = live_server_process.url
    sdk_endpoint = f"{url}/api/v1/traces/export"
    jobs = {
        "basic": (["examples/basic_tracing.py"], "OTEL"),
        "agent": (["examples/agent_tracing.py"], "MSGTRACE"),
        "openinference": (["examples/openinference_tracing.py"], "OTEL"),
        "msgflux": (["examples/msgflux_tracing.py"], "MSGTRACE"),
        "msgflux_as_is": (["-c", _MSGFLUX_AS_IS, str(EXAMPLES)], "MSGTRACE"),
    }
    processes = {}
    for name, (args, convention) in jobs.items():
        service = f"example-{name}-{uuid.uuid4().hex[:6]}"
        if convention == "OTEL":
            env = _env(OTEL_EXPORTER_OTLP_ENDPOINT=url, OTEL_SERVICE_NAME=service)
        else:
            env = _env(
                MSGTRACE_TELEMETRY_ENABLED="true",
                MSGTRACE_OTLP_ENDPOINT=sdk_endpoint,
                MSGTRACE_SERVICE_NAME=service,
            )
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=EXAMPLES.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes[name] = (process, service)
    results = {}
    for name, (process, service) in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        results[name] = Ran(process.returncode, stdout, stderr, service)
    return results


@pytest.fixture
def client(server) -> Client:
    return Client(server.url)


def _only_trace(client: Client, ran: Ran, spans: int):
    """The one trace of the example's service, once all ``spans`` are in."""
    assert ran.returncode == 0, ran.stderr
    (summary,) = client.traces(service=ran.service)
    assert summary.trace_id == ran.trace_id
    assert summary.span_count == spans
    return client.trace(ran.trace_id), client.tree(ran.trace_id)


def _shape(tree) -> list[tuple[int, str, str]]:
    return [(depth, node.span.name, node.span.span_type) for depth, node in tree.walk()]


def test_basic_tracing_sends_one_trace_with_the_plain_sdk(ran, client):
    trace, tree = _only_trace(client, ran["basic"], spans=4)

    assert trace.service_name == ran["basic"].service  # from OTEL_SERVICE_NAME
    assert trace.name == "answer_question"
    assert _shape(tree) == [
        (0, "answer_question", ""),
        (1, "embeddings text-embedding-3-small", "embedding"),
        (1, "search docs", ""),
        (1, "chat gpt-4o-mini", "llm"),
    ]
    chat = trace.spans[-1]
    assert (chat.model, chat.input_tokens, chat.output_tokens) == (
        "gpt-4o-mini-2024-07-18",
        96,
        41,
    )
    assert 600 <= chat.duration_ms < 5000  # a simulated, not an instant, model call
    assert "rotate" in chat.attributes["gen_ai.input.messages"]
    assert trace.user_id == "user-481"
    assert ran["basic"].stdout.endswith(f"{client.url}/traces/{trace.trace_id}\n")


AGENT_SHAPE = [
    (0, "answer_ticket"),
    (1, "triage"),
    (2, "chat gpt-4o-mini"),
    (1, "lookup_order"),
    (1, "lookup_order"),
    (1, "reply_writer"),
    (2, "chat gpt-4o"),
]


def test_agent_tracing_sends_a_flow_with_modules_llm_calls_and_a_retried_tool(ran, client):
    trace, tree = _only_trace(client, ran["agent"], spans=7)

    assert [(depth, name) for depth, name, _ in _shape(tree)] == AGENT_SHAPE
    assert [kind for _, _, kind in _shape(tree)] == [
        "flow", "agent", "llm", "tool", "tool", "agent", "llm",
    ]  # fmt: skip
    assert (trace.workflow_name, trace.user_id, trace.session_id) == (
        "answer_ticket",
        "customer-2207",
        "ticket-5531",
    )
    assert (trace.input_tokens, trace.output_tokens) == (1792, 298)
    assert trace.cost == pytest.approx(0.0056646)
    assert trace.models == ["gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18"]
    first, retry = (node.span for _, node in tree.walk() if node.span.name == "lookup_order")
    assert first.is_error and first.status_message.startswith("order service did not answer")
    assert [event["name"] for event in first.events] == ["exception"]  # recorded once
    assert first.events[0]["attributes"]["exception.type"] == "TimeoutError"
    assert not retry.is_error and retry.attributes["retry.count"] == 1
    assert retry.start_time_unix_nano > first.end_time_unix_nano  # after a back-off
    chat = next(span for span in trace.spans if span.name == "chat gpt-4o")
    assert chat.cost == pytest.approx(0.00555)
    assert "refunded the duplicate" in chat.attributes["gen_ai.completion"]
    assert "Sorry about the double charge" in ran["agent"].stdout


def test_openinference_names_land_in_the_same_views_as_msgtrace_sdk(ran, client):
    oi, oi_tree = _only_trace(client, ran["openinference"], spans=7)
    sdk, sdk_tree = _only_trace(client, ran["agent"], spans=7)

    assert [(depth, name) for depth, name, _ in _shape(oi_tree)] == AGENT_SHAPE
    # The same types, except the root: OpenInference's CHAIN, msgtrace-sdk's flow.
    assert [kind for _, _, kind in _shape(oi_tree)][1:] == [
        kind for _, _, kind in _shape(sdk_tree)
    ][1:]
    assert _shape(oi_tree)[0][2] == "chain"
    for field in ("workflow_name", "span_count", "error_count", "input_tokens",
                  "output_tokens", "total_tokens", "models", "user_id", "session_id"):  # fmt: skip
        assert getattr(oi, field) == getattr(sdk, field), field
    assert oi.cost == pytest.approx(sdk.cost)
    for span in (s for s in oi.spans if s.span_type == "llm"):
        twin = next(s for s in sdk.spans if s.name == span.name)
        assert (span.model, span.input_tokens, span.output_tokens) == (
            twin.model,
            twin.input_tokens,
            twin.output_tokens,
        )
        assert span.cost == pytest.approx(twin.cost)
    assert [s.name for s in oi.spans if s.is_error] == ["lookup_order"]


def test_msgflux_agent_arrives_as_one_trace_through_a_traceparent(ran, client):
    trace, tree = _only_trace(client, ran["msgflux"], spans=9)

    assert trace.name == "weather_assistant"
    assert trace.user_id == "user-1093"
    root = tree.span
    assert root.name == "weather_assistant" and root.parent_span_id is None
    # msgflux makes none of its spans current, so all of them hang directly under the root.
    assert Counter(node.span.name for node in tree.children) == Counter(
        {
            "Weather Agent": 1, "Generator": 2, "openai.chat": 2,
            "Weather Agent Tool Library": 1, "scatter_gather": 1, "Get Weather": 1,
        }
    )  # fmt: skip
    assert all(not node.children for node in tree.children)
    calls = [span for span in trace.spans if span.name == "openai.chat"]
    assert {span.model for span in calls} == {"gpt-4o-mini-2024-07-18"}
    assert all(span.span_type == "llm" and span.input_tokens > 50 for span in calls)
    assert trace.total_tokens == sum(span.total_tokens for span in calls)
    assert 0.9 < trace.duration_ms / 1000 < 30  # the stand-in's delays: about 1.1 s
    assert "umbrella" in root.attributes["input.value"]
    assert "Lisbon has light rain" in ran["msgflux"].stdout


def test_msgflux_as_is_sends_one_trace_per_span_and_refuses_a_current_parent(ran, client):
    """What the README's msgflux section says, measured: the reason for the traceparent."""
    as_is = ran["msgflux_as_is"]
    assert as_is.returncode == 0, as_is.stderr
    assert "Lisbon has light rain" in as_is.stdout
    assert (
        "TypeError: Spans.init_module() takes 1 positional argument but 2 were given"
        in as_is.stdout
    )
    traces = list(client.traces(service=as_is.service))
    assert all(trace.span_count == 1 for trace in traces)
    names = Counter(trace.root_span_name for trace in traces)
    assert names == Counter(
        {
            "Weather Agent": 1, "Generator": 2, "openai.chat": 2,
            "Weather Agent Tool Library": 1, "scatter_gather": 1, "Get Weather": 1,
            "my_root": 1,
        }
    )  # fmt: skip
    (mine,) = (trace for trace in traces if trace.root_span_name == "my_root")
    assert mine.error_count == 1


def test_query_traces_lists_the_slowest_of_the_last_hour_and_one_tree(ran, server, client):
    assert ran["basic"].returncode == 0  # so the last hour has traces

    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "query_traces.py"), server.url],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    expected = list(client.traces(since="1h", sort="-duration", limit=5))
    lines = result.stdout.splitlines()
    assert lines[0] == "Slowest traces of the last hour:"
    assert [line.split()[0] for line in lines[1 : 1 + len(expected)]] == [
        trace.trace_id for trace in expected
    ]
    slowest = client.trace(expected[0].trace_id)
    assert lines[len(expected) + 2].startswith(f"{slowest.name} ({slowest.service_name})")
    # The tree starts at the root, which need not be the first span by start time: other
    # tests' traces on this server may start a child at the root's very nanosecond.
    root = next(span for span in slowest.spans if not span.parent_span_id)
    assert lines[len(expected) + 3].startswith(f"  {root.name}  [")
    assert f"Cost ${slowest.cost:.6f} for {slowest.total_tokens:,} tokens" in result.stdout


def test_query_traces_says_so_when_the_server_is_unreachable(free_port):
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "query_traces.py"), url],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == f"msgtrace: cannot reach msgtrace at {url}: Connection refused\n"
