"""The Python client (traces.client) against a real ``msgtrace start``."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests import otlp
from traces.client import (
    BadRequestError,
    Client,
    Comparison,
    MsgtraceError,
    NotFoundError,
    SpanNode,
    Stats,
    Trace,
    TraceSummary,
    UnreachableError,
)

MS = 1_000_000


def _service() -> str:
    """A service name of the test's own: the session's server holds every test's traces."""
    return f"client-{uuid.uuid4().hex[:10]}"


def send_run(server, service, *, duration_ms=100.0, minutes_ago=1.0, error=False, tokens=100):
    """A root, an LLM call and a tool call under it; returns the trace id."""
    trace_id = otlp.new_trace_id()
    root, llm, tool = (otlp.new_span_id() for _ in range(3))
    base = time.time_ns() - int(minutes_ago * 60_000 * MS)
    spans = [
        otlp.span(trace_id, root, "agent.run", base_ns=base, duration_ms=duration_ms,
                  workflow__name="refund"),
        otlp.span(trace_id, llm, "chat gpt-4o", parent=root, base_ns=base, start_ms=1,
                  duration_ms=duration_ms / 2, gen_ai__operation__name="chat",
                  gen_ai__request__model="gpt-4o", gen_ai__usage__input_tokens=tokens,
                  gen_ai__usage__output_tokens=tokens // 4, gen_ai__usage__cost=0.002),
        otlp.span(trace_id, tool, "lookup_order", parent=root, base_ns=base,
                  start_ms=duration_ms / 2 + 1, duration_ms=duration_ms / 4,
                  gen_ai__tool__name="lookup_order", error="order 42 not found" if error else None),
    ]  # fmt: skip
    status, _, body = server.post(otlp.body(*spans, service=service))
    assert status == 200, body
    return trace_id


@pytest.fixture
def client(server):
    return Client(server.url)


def test_traces_pages_transparently_newest_first(server, client):
    service = _service()
    sent = [send_run(server, service, minutes_ago=10 - i) for i in range(7)]

    results = client.traces(service=service, page_size=2)

    assert results.total == 7
    traces = list(results)
    assert [t.trace_id for t in traces] == sent[::-1]
    assert all(isinstance(t, TraceSummary) for t in traces)
    first_three = client.traces(service=service, limit=3, page_size=2)
    assert [t.trace_id for t in first_three] == sent[::-1][:3]
    assert client.count(service=service) == 7
    assert list(client.traces(service=service, limit=0)) == []


def test_summary_fields_are_typed(server, client):
    service = _service()
    trace_id = send_run(server, service, duration_ms=250, error=True, tokens=400)

    (summary,) = client.traces(service=service)

    assert summary.trace_id == trace_id
    assert summary.duration_ms == 250.0
    assert (summary.span_count, summary.error_count, summary.has_errors) == (3, 1, True)
    assert (summary.input_tokens, summary.output_tokens, summary.total_tokens) == (400, 100, 500)
    assert summary.cost == pytest.approx(0.002)
    assert summary.models == ["gpt-4o"]
    assert summary.name == summary.workflow_name == "refund"
    assert summary.service_name == service
    assert isinstance(summary.start_time, datetime) and summary.start_time.tzinfo is not None
    assert summary.end_time_unix_nano - summary.start_time_unix_nano == 250 * MS
    # ISO times carry microseconds, each rounded on its own.
    delta = summary.end_time - summary.start_time
    assert abs(delta - timedelta(milliseconds=250)) <= timedelta(microseconds=1)


def test_slowest_traces_of_the_last_hour(server, client):
    service = _service()
    fast = send_run(server, service, duration_ms=50, minutes_ago=5)
    slow = send_run(server, service, duration_ms=900, minutes_ago=20)
    medium = send_run(server, service, duration_ms=300, minutes_ago=40)
    send_run(server, service, duration_ms=5000, minutes_ago=90)  # too old

    for since in ("1h", timedelta(hours=1), datetime.now(UTC) - timedelta(hours=1)):
        slowest = client.traces(service=service, since=since, sort="-duration", limit=5)
        assert [t.trace_id for t in slowest] == [slow, medium, fast], since
    fastest = client.traces(service=service, since="1h", sort="duration")
    assert [t.trace_id for t in fastest] == [fast, medium, slow]


def test_search_query_and_error_filter(server, client):
    service = _service()
    send_run(server, service)
    failed = send_run(server, service, error=True)

    assert [t.trace_id for t in client.traces(f"service:{service} AND error:true")] == [failed]
    assert [t.trace_id for t in client.traces(service=service, has_errors=True)] == [failed]
    assert len(list(client.traces(service=service, has_errors=False))) == 1


def test_trace_has_typed_spans_and_tree_nests_them(server, client):
    service = _service()
    trace_id = send_run(server, service, error=True)

    trace = client.trace(trace_id)
    assert isinstance(trace, Trace)
    assert trace.trace_id == trace_id and trace.span_count == 3
    by_name = {span.name: span for span in trace.spans}
    assert [span.name for span in trace.spans] == ["agent.run", "chat gpt-4o", "lookup_order"]
    llm, tool = by_name["chat gpt-4o"], by_name["lookup_order"]
    assert (llm.span_type, llm.model, llm.input_tokens, llm.cost) == ("llm", "gpt-4o", 100, 0.002)
    assert llm.parent_span_id == by_name["agent.run"].span_id
    assert by_name["agent.run"].parent_span_id is None
    assert by_name["agent.run"].cost is None  # carried none: not the same as 0
    assert (tool.is_error, tool.status_code, tool.status_message) == (
        True,
        "ERROR",
        "order 42 not found",
    )
    assert tool.events[0]["name"] == "exception"
    assert tool.attributes["gen_ai.tool.name"] == "lookup_order"
    assert tool.resource_attributes["service.name"] == service

    tree = client.tree(trace_id.upper())  # ids are matched in any case
    assert isinstance(tree, SpanNode)
    assert [(depth, node.span.name) for depth, node in tree.walk()] == [
        (0, "agent.run"),
        (1, "chat gpt-4o"),
        (1, "lookup_order"),
    ]


def test_tree_of_a_trace_whose_root_never_arrived(server, client):
    trace_id = otlp.new_trace_id()
    missing, child, grandchild = (otlp.new_span_id() for _ in range(3))
    spans = [
        otlp.span(trace_id, child, "step", parent=missing),
        otlp.span(trace_id, grandchild, "sub-step", parent=child, start_ms=1),
    ]
    assert server.post(otlp.body(*spans, service=_service()))[0] == 200

    tree = client.tree(trace_id)

    assert tree.span is None and tree.missing_root
    (orphan,) = tree.children
    assert orphan.orphan and orphan.span.name == "step"
    assert [node.span.name for _, node in orphan.walk()] == ["step", "sub-step"]


def test_stats_are_the_servers_totals(server, client):
    send_run(server, _service())

    stats = client.stats()

    assert isinstance(stats, Stats)
    assert stats == Stats(**server.get_json("/api/v1/stats"))
    assert stats.total_traces >= 1 and stats.p50_duration_ms is not None


def test_delete_removes_the_trace_and_a_second_delete_is_not_found(server, client):
    service = _service()
    trace_id = send_run(server, service)

    assert client.delete(trace_id) is None

    assert client.count(service=service) == 0
    with pytest.raises(NotFoundError):
        client.trace(trace_id)
    with pytest.raises(NotFoundError) as raised:
        client.delete(trace_id)
    assert raised.value.status == 404
    assert "not found" in raised.value.message


def test_compare_two_runs(server, client):
    service = _service()
    a = send_run(server, service, duration_ms=100)
    b = send_run(server, service, duration_ms=400, error=True, tokens=300)

    comparison = client.compare(a, b)

    assert isinstance(comparison, Comparison)
    assert (comparison.a.trace_id, comparison.b.trace_id) == (a, b)
    assert comparison.matched == 3 and comparison.added == comparison.removed == 0
    assert comparison.status_changes == 1
    duration = next(m for m in comparison.summary if m.metric == "Duration")
    assert (duration.a, duration.b, duration.trend) == (100 * MS, 400 * MS, "worse")
    tool_row = next(row for row in comparison.rows if row.path.endswith("lookup_order"))
    assert tool_row.kind == "matched"
    assert tool_row.a.is_error is False and tool_row.b.is_error is True
    assert tool_row.duration_delta_ms == pytest.approx(75.0)
    assert {aggregate.name for aggregate in comparison.aggregates} >= {"agent.run"}


def test_a_bad_query_raises_with_the_servers_message_and_position(client):
    with pytest.raises(BadRequestError) as raised:
        client.traces(q="duration:>1s AND duraton:>2s")  # raised at the call, not later

    error = raised.value
    assert error.status == 400
    assert error.parameter == "q"
    assert error.position == 17
    assert str(error) == 'q: unknown field "duraton" — did you mean "duration"?'
    assert isinstance(error, MsgtraceError)


@pytest.mark.parametrize(
    ("filters", "parameter"),
    [
        ({"sort": "slowest"}, "sort"),
        ({"since": "yesterday"}, "since"),
        ({"min_duration": -5}, "min_duration"),
    ],
)
def test_refused_filters_name_the_parameter(client, filters, parameter):
    with pytest.raises(BadRequestError) as raised:
        client.traces(**filters)
    assert raised.value.parameter == parameter
    assert str(raised.value).startswith(f"{parameter}: ")


def test_unknown_trace_and_bad_compare_ids(client):
    with pytest.raises(NotFoundError) as raised:
        client.trace("0" * 32)
    assert str(raised.value) == f"trace '{'0' * 32}' not found"
    with pytest.raises(NotFoundError):
        client.tree("f" * 32)
    with pytest.raises(BadRequestError) as raised:
        client.compare("not-an-id", "0" * 32)
    assert raised.value.parameter == "a"


def test_an_unreachable_server_is_a_clear_error(free_port):
    client = Client(f"http://127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(UnreachableError) as raised:
        client.stats()
    assert raised.value.status is None
    assert "cannot reach msgtrace at http://127.0.0.1:" in str(raised.value)
    assert "refused" in str(raised.value)


def test_only_http_urls_are_accepted():
    for url in ("file:///etc/passwd", "127.0.0.1:4321", "http://"):
        with pytest.raises(ValueError, match="url must look like"):
            Client(url)


class _Recorder(BaseHTTPRequestHandler):
    """A server that is not msgtrace: records headers, answers what the test set."""

    seen: list[dict] = []
    answer: tuple[int, str, bytes] = (200, "application/json", b"{}")

    def do_GET(self):
        type(self).seen.append(dict(self.headers))
        status, content_type, body = type(self).answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def other_server():
    _Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_api_key_is_sent_as_a_bearer_token(other_server):
    url = f"http://127.0.0.1:{other_server.server_port}"
    stats = {field: 0 for field in Stats.__dataclass_fields__}
    _Recorder.answer = (200, "application/json", json.dumps(stats).encode())

    Client(url, api_key="mt_secret").stats()
    Client(url).stats()

    assert _Recorder.seen[0]["Authorization"] == "Bearer mt_secret"
    assert "Authorization" not in _Recorder.seen[1]


def test_an_answer_that_is_not_msgtraces_json_is_a_clear_error(other_server):
    client = Client(f"http://127.0.0.1:{other_server.server_port}")
    _Recorder.answer = (502, "text/html", b"<html>Bad Gateway</html>")
    with pytest.raises(MsgtraceError) as raised:
        client.stats()
    assert raised.value.status == 502
    assert str(raised.value) == "GET /api/v1/stats: HTTP 502 Bad Gateway"

    _Recorder.answer = (200, "text/html", b"<html>a wiki</html>")
    with pytest.raises(MsgtraceError, match="did not answer JSON: is .* a msgtrace server"):
        client.stats()
