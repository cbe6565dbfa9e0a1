"""``msgtrace demo``: its options, its errors, and a short stream into a real server."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from traces import demo
from traces.client import Client
from traces.demo import BATCH_SIZE, STATUS_ERROR, DemoGenerator, Sender, Tally, stream

MSGTRACE = str(Path(sys.executable).parent / "msgtrace")


def run(*args) -> str:
    out = StringIO()
    call_command("demo", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "fast"], "--rate must look like 5/s or 30/m, got 'fast'"),
        (["--rate", "5"], "--rate must look like 5/s or 30/m, got '5'"),
        (["--rate", "5/h"], "--rate must look like 5/s or 30/m, got '5/h'"),
        (["--rate", "0/s"], "--rate must be above 0 and at most 1000/s, got '0/s'"),
        (["--rate", "2000/s"], "--rate must be above 0 and at most 1000/s, got '2000/s'"),
        (["--duration", "10"], "--duration must look like 60s, 10m or 1h (or 0: until Ctrl-C)"),
        (["--duration=-5s"], "--duration must look like 60s, 10m or 1h"),
        (["--duration", "2d"], "--duration must look like 60s, 10m or 1h"),
        (["--url", "localhost:4321"], "--url must look like http://host:port"),
    ],
)
def test_bad_options_are_refused_before_anything_is_sent(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        run(*args)


def test_a_bad_seed_is_refused():
    with pytest.raises(CommandError, match="argument --seed: invalid int value"):
        run("--seed", "abc")


def test_an_unreachable_server_is_a_clear_error(free_port):
    port = free_port()
    with pytest.raises(CommandError) as raised:
        run("--url", f"http://127.0.0.1:{port}", "--duration", "1s")
    assert str(raised.value) == (
        f"cannot reach msgtrace at http://127.0.0.1:{port}: Connection refused "
        "(is `msgtrace start` running there?)"
    )


class _NotMsgtrace(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<html>hello</html>"
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_another_server_on_that_port_is_a_clear_error():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NotMsgtrace)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(CommandError, match="not as msgtrace does: is that the right address"):
            run("--url", f"http://127.0.0.1:{httpd.server_port}")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_demo_streams_varied_traces_into_a_live_server(server):
    client = Client(server.url)
    before = client.count("resource.msgtrace.demo:true")

    result = subprocess.run(
        [MSGTRACE, "demo", "--url", server.url, "--rate", "25/s", "--duration", "2s",
         "--seed", "9"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Sending demo traces to {server.url} at 25/s for 2s."
    assert lines[1] == f"Watch them arrive: {server.url}/ (dashboard) and {server.url}/traces"
    summary = re.fullmatch(
        r"Sent (\d+) traces, ([\d,]+) spans \((\d+) with errors\) "
        r"in 2\.\d s\.",
        lines[-1],
    )
    assert summary, lines[-1]
    sent, spans = int(summary[1]), int(summary[2].replace(",", ""))
    # About 25/s for 2 s, with random gaps. Seed 9's first very large run is its 104th: the
    # next test sends one of those on its own.
    assert 10 <= sent <= 80
    traces = list(client.traces("resource.msgtrace.demo:true", since="1h", limit=sent + 10))
    assert len(traces) == client.count("resource.msgtrace.demo:true") - before == sent
    assert sum(trace.span_count for trace in traces) == spans
    workflows = Counter(trace.workflow_name for trace in traces)
    assert len(workflows) >= 3, workflows
    assert {trace.service_name for trace in traces} <= {
        "support-agent", "research-assistant", "billing-copilot", "travel-planner",
    }  # fmt: skip
    assert len({model for trace in traces for model in trace.models}) >= 3
    assert all(trace.total_tokens > 0 and trace.cost > 0 for trace in traces)
    # Each run ends as it is sent: none started more than a batch run's length ago.
    newest = max(traces, key=lambda trace: trace.end_time)
    full = client.trace(newest.trace_id)
    assert full.span_count == len(full.spans) >= 2
    assert {span.span_type for span in full.spans} & {"llm", "agent", "tool"}


def test_a_very_large_run_is_sent_in_batches_and_arrives_whole(server, monkeypatch):
    monkeypatch.setattr(demo, "LARGE_SHARE", 1.0)
    service, spans = DemoGenerator(random.Random(5)).run()
    sender = Sender(server.url)

    sender.send(service, spans)

    assert len(spans) > 2 * BATCH_SIZE  # three requests at least
    assert sender.tally == Tally(
        traces=1, spans=len(spans), failed_traces=sender.tally.failed_traces, large_traces=1
    )
    trace = Client(server.url).trace(spans[0].trace_id.hex())
    assert trace.span_count == len(spans)
    assert trace.workflow_name == "batch_summarize"
    assert trace.error_count == sum(span.status_code == STATUS_ERROR for span in spans)


def test_runs_are_varied_and_about_one_in_twenty_fails():
    generator = DemoGenerator(random.Random(1))
    runs = [generator.run() for _ in range(800)]

    workflows = Counter(
        next(s for s in spans if not s.parent_span_id).attributes["workflow.name"]
        for _, spans in runs
    )
    failed = sum(any(s.status_code == STATUS_ERROR for s in spans) for _, spans in runs)
    retried = sum(any(s.attributes.get("tool.retries") == 1 for s in spans) for _, spans in runs)
    large = sum(len(spans) > BATCH_SIZE for _, spans in runs)

    assert set(workflows) == {
        "answer_ticket", "research_report", "explain_invoice", "classify_intent", "plan_trip",
        "batch_summarize",
    }  # fmt: skip
    assert 0.03 < failed / len(runs) < 0.08
    assert retried > 5  # tools that failed and succeeded when tried again
    assert 3 <= large <= 30
    for _, spans in runs[:200]:
        ids = {span.span_id for span in spans}
        assert all(not s.parent_span_id or s.parent_span_id in ids for s in spans)
        assert len({span.trace_id for span in spans}) == 1


def test_the_same_seed_gives_the_same_runs_with_new_trace_ids():
    def names(seed):
        generator = DemoGenerator(random.Random(seed))
        runs = [generator.run() for _ in range(30)]
        return [[s.name for s in spans] for _, spans in runs], {
            spans[0].trace_id for _, spans in runs
        }

    first_names, first_ids = names(11)
    second_names, second_ids = names(11)
    assert first_names == second_names
    assert not first_ids & second_ids


def test_the_stream_keeps_its_rate_and_reports_progress():
    """With a fake clock: 4 runs a second for 12 s, progress every 5 s."""
    now = [0.0]
    sent: list[int] = []
    reports: list[int] = []

    class FakeSender:
        tally = Tally()

        def send(self, service, spans):
            sent.append(len(spans))
            self.tally.traces += 1

    def sleep(seconds):
        now[0] += seconds

    tally = stream(
        FakeSender(), DemoGenerator(random.Random(3)), rate=4, duration=12,
        report=lambda t: reports.append(t.traces), clock=lambda: now[0], sleep=sleep,
    )  # fmt: skip

    assert 30 <= tally.traces <= 66  # ~48, exponential gaps
    assert len(reports) == 2 and reports[0] < reports[1]
    assert tally.seconds == pytest.approx(12, abs=1)


def test_sender_refuses_what_is_not_http():
    with pytest.raises(ValueError, match="must look like http://host:port"):
        Sender("ftp://example.com")
