"""Limits, saturation, locks and kill -9, each against its own real server."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from google.rpc import status_pb2

from tests import otlp
from tests.server import MsgtraceServer


@pytest.fixture(scope="module")
def small_server(tmp_path_factory, free_port):
    """A server with small limits: 64 KiB bodies, 1,000 pending spans, 3 s lock timeout.

    It decodes in a thread (no worker processes), so both decoding paths are exercised.
    """
    server = MsgtraceServer.start(
        tmp_path_factory.mktemp("small"),
        free_port(),
        MSGTRACE_MAX_BODY_BYTES=65536,
        MSGTRACE_MAX_PENDING_SPANS=1000,
        MSGTRACE_DB_TIMEOUT=3,
        MSGTRACE_CORS_ORIGINS="https://app.example.com",
        MSGTRACE_DECODE_WORKERS=0,
    )
    yield server
    server.stop()


def _spans(trace_id, count, **attributes):
    return [otlp.span(trace_id, otlp.new_span_id(), f"s{i}", **attributes) for i in range(count)]


class WriteLock:
    """Holds the database's write lock from outside the server, as another writer would."""

    def __init__(self, server):
        self.server = server

    def __enter__(self):
        if self.server.database_url:
            import psycopg

            self.conn = psycopg.connect(
                self.server.database_url.replace("postgres://", "postgresql://")
            )
            self.conn.execute("LOCK TABLE traces_span IN EXCLUSIVE MODE")
        else:
            self.conn = sqlite3.connect(self.server.db_path, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc):
        self.conn.rollback() if self.server.database_url else self.conn.execute("ROLLBACK")
        self.conn.close()


def test_cors_preflight_and_response_headers_for_browser_exporters(small_server):
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    status, headers, _ = small_server.request("OPTIONS", "/v1/traces", headers=preflight)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    status, headers, _ = small_server.post(otlp.body(), Origin="https://app.example.com")
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"

    stranger = {**preflight, "Origin": "https://evil.example.net"}
    status, headers, _ = small_server.request("OPTIONS", "/v1/traces", headers=stranger)
    assert status == 405
    assert "Access-Control-Allow-Origin" not in headers
    status, headers, _ = small_server.request("OPTIONS", "/api/v1/stats", headers=preflight)
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"


def test_decoding_in_a_thread_when_workers_are_off(small_server):
    trace_id = otlp.new_trace_id()
    assert small_server.post(otlp.body(*_spans(trace_id, 4)))[0] == 200
    assert small_server.child_pids() == []
    assert small_server.get_json(f"/api/v1/traces/{trace_id}")["span_count"] == 4


def test_an_unknown_host_header_is_refused(small_server):
    status, _, _ = small_server.post(otlp.body(), Host="rebound.example.net")
    assert status == 400


def test_body_over_the_limit_is_413_before_decompression(small_server):
    trace_id = otlp.new_trace_id()
    body = otlp.body(*_spans(trace_id, 20, prompt="p" * 4000))
    assert len(body) > 65536
    status, _, data = small_server.post(body)
    assert status == 413
    assert "limit" in status_pb2.Status.FromString(data).message
    assert small_server.request("GET", f"/api/v1/traces/{trace_id}")[0] == 404


def test_body_that_inflates_over_the_limit_is_413(small_server):
    import gzip

    body = otlp.body(*_spans(otlp.new_trace_id(), 40, prompt="p" * 4000))
    compressed = gzip.compress(body)
    assert len(compressed) < 65536 < len(body)
    status, _, _ = small_server.post(compressed, **{"Content-Encoding": "gzip"})
    assert status == 413


def test_a_saturated_writer_answers_503_with_retry_after_and_loses_nothing(small_server):
    first_trace, second_trace = otlp.new_trace_id(), otlp.new_trace_id()
    results = {}
    with WriteLock(small_server):
        # 900 spans wait for the lock; the next 200 would exceed the 1,000 pending.
        waiting = threading.Thread(
            target=lambda: results.update(
                first=small_server.post(otlp.body(*_spans(first_trace, 900)))
            )
        )
        waiting.start()
        # Long enough for the 900 to reach the writer, well inside the 3 s lock timeout.
        time.sleep(1.0)
        status, headers, body = small_server.post(otlp.body(*_spans(second_trace, 200)))
        assert status == 503
        assert headers["Retry-After"].isdigit()
        assert status_pb2.Status.FromString(body).code == 14  # UNAVAILABLE
    waiting.join(timeout=10)
    assert results["first"][0] == 200
    assert small_server.get_json(f"/api/v1/traces/{first_trace}")["span_count"] == 900
    # The refused batch stored nothing; re-sent (as an exporter does), it lands.
    assert small_server.request("GET", f"/api/v1/traces/{second_trace}")[0] == 404
    assert small_server.post(otlp.body(*_spans(second_trace, 200)))[0] == 200


def test_a_locked_database_answers_503_after_the_timeout_then_recovers(small_server):
    trace_id = otlp.new_trace_id()
    with WriteLock(small_server):
        started = time.monotonic()
        status, headers, _ = small_server.post(otlp.body(*_spans(trace_id, 5)))
        assert status == 503
        assert "Retry-After" in headers
        assert 2.5 < time.monotonic() - started < 12
    assert small_server.post(otlp.body(*_spans(trace_id, 5)))[0] == 200
    assert small_server.get_json(f"/api/v1/traces/{trace_id}")["span_count"] == 5


def test_kill_9_right_after_200_loses_no_acknowledged_span(tmp_path, free_port):
    server = MsgtraceServer.start(tmp_path, free_port())
    try:
        trace_ids, acknowledged = [], 0
        lock = threading.Lock()

        def client(n):
            nonlocal acknowledged
            for _ in range(10):
                trace_id = otlp.new_trace_id()
                status, _, _ = server.post(otlp.body(*_spans(trace_id, 100, prompt="x" * 300)))
                assert status == 200
                with lock:
                    trace_ids.append(trace_id)
                    acknowledged += 100

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        workers = server.child_pids()
        assert workers  # the decode worker processes
        server.kill()  # SIGKILL: no shutdown, no flush
        assert server.process.returncode == -9
        assert acknowledged == 4000
        assert server.count_spans_in_database(trace_ids) == acknowledged

        # Orphaned decode workers notice and exit.
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in workers):
            assert time.monotonic() < deadline, "decode workers outlived the server"
            time.sleep(0.2)

        server.launch()  # same database, a new process
        stats = server.get_json("/api/v1/stats")
        assert stats["total_spans"] == acknowledged
        assert stats["total_traces"] == len(trace_ids)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MSGTRACE_PORT", "eighty"),
        ("MSGTRACE_PORT", "70000"),
        ("MSGTRACE_DEBUG", "maybe"),
        ("MSGTRACE_MAX_BODY_BYTES", "-1"),
        ("MSGTRACE_DATABASE_URL", "mysql://localhost/x"),
        ("MSGTRACE_CORS_ORIGINS", "example.com"),
    ],
)
def test_a_malformed_setting_stops_start_up_naming_the_variable(tmp_path, variable, value):
    script = Path(sys.executable).parent / "msgtrace"
    result = subprocess.run(
        [str(script), "start"],
        env={"PATH": "/usr/bin:/bin", "MSGTRACE_DB_PATH": str(tmp_path / "x.db"), variable: value},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_two_server_processes_writing_one_trace_keep_its_summary_exact(server, free_port):
    """Scaled out: spans of the same traces land through two processes at once."""
    other = server.sibling(free_port())
    try:
        traces = {otlp.new_trace_id(): otlp.new_span_id() for _ in range(8)}
        batches = []
        for trace_id, root in traces.items():
            spans = [otlp.span(trace_id, root, "root", duration_ms=500)] + [
                otlp.span(trace_id, otlp.new_span_id(), f"c{i}", parent=root, start_ms=i,
                          gen_ai__usage__input_tokens=3)
                for i in range(60)
            ]  # fmt: skip
            batches += [spans[i : i + 5] for i in range(0, len(spans), 5)]
        errors = []

        def send(target, part):
            for batch in part:
                status = target.post(otlp.body(*batch))[0]
                if status != 200:
                    errors.append(status)

        threads = [
            threading.Thread(target=send, args=(target, batches[n::4]))
            for n, target in enumerate([server, other, server, other])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        for trace_id in traces:
            trace = server.get_json(f"/api/v1/traces/{trace_id}")
            assert (trace["span_count"], trace["input_tokens"]) == (61, 180)
            assert trace["root_span_name"] == "root"
    finally:
        other.stop()


def test_a_killed_decode_worker_costs_at_most_a_503_then_ingest_recovers(tmp_path, free_port):
    import os
    import signal

    server = MsgtraceServer.start(tmp_path, free_port())
    try:
        assert server.post(otlp.body(*_spans(otlp.new_trace_id(), 3)))[0] == 200
        for pid in server.child_pids():
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        statuses = []
        trace_id = otlp.new_trace_id()
        for _ in range(5):  # what an exporter does with a 503: retry
            status, headers, _ = server.post(otlp.body(*_spans(trace_id, 3)))
            statuses.append(status)
            if status == 200:
                break
            assert status == 503 and "Retry-After" in headers
        assert statuses[-1] == 200 and len(statuses) <= 2
        assert server.get_json(f"/api/v1/traces/{trace_id}")["span_count"] == 3
    finally:
        server.stop()
