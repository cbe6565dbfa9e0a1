"""MSGTRACE_RETENTION_DAYS: the server purges old traces at start and then daily."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest.otlp import decode_protobuf, to_params
from ingest.writer import spans_ingest
from tests import otlp
from tests.server import MsgtraceServer
from traces.models import Span, Trace, datetime_to_ns
from traces.purge import Retention, retention_run, retention_start

MSGTRACE = str(Path(sys.executable).parent / "msgtrace")
# The controlled clock: every test's "now".
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_trace(started: datetime, children: int = 1) -> str:
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    base = datetime_to_ns(started)
    spans = [otlp.span(trace_id, root, "run", base_ns=base)]
    spans += [
        otlp.span(trace_id, otlp.new_span_id(), "step", parent=root, base_ns=base, start_ms=1)
        for _ in range(children)
    ]
    spans_ingest(to_params(decode_protobuf(otlp.body(*spans)).rows))
    return trace_id


@pytest.mark.django_db
def test_a_run_removes_traces_started_more_than_the_days_before_now_and_logs_it(caplog):
    old = make_trace(NOW - timedelta(days=8), children=2)
    older = make_trace(NOW - timedelta(days=400))
    at_the_cutoff = make_trace(NOW - timedelta(days=7))
    recent = make_trace(NOW - timedelta(days=6, hours=23))
    with caplog.at_level(logging.INFO, logger="msgtrace.retention"):
        result = retention_run(days=7, now=NOW)
    assert (result.traces, result.spans) == (2, 5)
    assert set(Trace.objects.values_list("pk", flat=True)) == {at_the_cutoff, recent}
    assert not Span.objects.filter(trace_id__in=[old, older]).exists()
    assert "retention: removed 2 traces (5 spans) older than 7 days" in caplog.text


@pytest.mark.django_db
def test_the_same_traces_are_kept_or_removed_as_the_clock_moves_on(caplog):
    trace = make_trace(NOW - timedelta(days=1))
    retention_run(days=3, now=NOW)
    retention_run(days=3, now=NOW + timedelta(days=1, hours=23))
    assert Trace.objects.filter(pk=trace).exists()
    with caplog.at_level(logging.INFO, logger="msgtrace.retention"):
        retention_run(days=3, now=NOW + timedelta(days=2, seconds=1))
    assert not Trace.objects.filter(pk=trace).exists()
    assert "removed 1 traces (2 spans) older than 3 days" in caplog.text


def test_the_schedule_runs_at_start_then_every_interval_with_the_clocks_now():
    ticks = iter(NOW + timedelta(days=day) for day in range(100))
    calls: list[tuple[int, datetime]] = []
    three = threading.Event()

    def run(*, days, now):
        calls.append((days, now))
        if len(calls) == 3:
            three.set()

    retention = Retention(
        30, interval=timedelta(seconds=0.01), clock=lambda: next(ticks), run=run
    ).start()
    try:
        assert three.wait(5)
    finally:
        retention.stop(timeout=5)
    assert calls[:3] == [(30, NOW), (30, NOW + timedelta(days=1)), (30, NOW + timedelta(days=2))]


def test_a_failed_run_is_logged_and_the_next_one_still_happens(caplog):
    attempts: list[datetime] = []
    second = threading.Event()

    def run(*, days, now):
        attempts.append(now)
        if len(attempts) == 1:
            raise RuntimeError("database is locked")
        second.set()

    with caplog.at_level(logging.ERROR, logger="msgtrace.retention"):
        retention = Retention(
            7, interval=timedelta(seconds=0.01), clock=lambda: NOW, run=run
        ).start()
        try:
            assert second.wait(5)
        finally:
            retention.stop(timeout=5)
    assert "retention: purge failed; trying again" in caplog.text


def test_stopping_does_not_wait_for_the_next_day():
    retention = Retention(7, clock=lambda: NOW, run=lambda **_: None).start()
    started = time.monotonic()
    retention.stop(timeout=5)
    assert time.monotonic() - started < 1


def test_zero_keeps_everything_and_starts_nothing():
    assert retention_start(0) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "MSGTRACE_RETENTION_DAYS must be an integer, got 'abc'"),
        ("7d", "MSGTRACE_RETENTION_DAYS must be an integer, got '7d'"),
        ("-1", "MSGTRACE_RETENTION_DAYS must be between 0 and 36500, got -1"),
    ],
)
def test_a_bad_retention_value_is_a_configuration_error(tmp_path, value, message):
    result = subprocess.run(
        [MSGTRACE, "check"],
        env={
            "PATH": "/usr/bin:/bin",
            "MSGTRACE_DB_PATH": str(tmp_path / "x.db"),
            "MSGTRACE_RETENTION_DAYS": value,
        },  # fmt: skip
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"msgtrace: configuration error: {message}" in result.stderr


@pytest.mark.slow
def test_the_server_purges_at_start_and_logs_what_it_removed(tmp_path, free_port):
    server = MsgtraceServer.start(tmp_path, free_port(), MSGTRACE_DECODE_WORKERS="0")
    try:
        now = datetime.now(UTC)
        old, new = otlp.new_trace_id(), otlp.new_trace_id()
        for trace_id, started in ((old, now - timedelta(days=3)), (new, now)):
            span = otlp.span(trace_id, otlp.new_span_id(), "run", base_ns=datetime_to_ns(started))
            assert server.post(otlp.body(span))[0] == 200
        server.process.terminate()
        server.process.wait(timeout=10)
        server.env["MSGTRACE_RETENTION_DAYS"] = "2"
        server.launch()
        deadline = time.monotonic() + 15
        while "retention: removed" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "retention: removed 1 traces (1 spans) older than 2 days" in server.log()
        assert "retention: traces older than 2 days go, now and daily" in server.log()
        server.get_json(f"/api/v1/traces/{old}", expect=404)
        server.get_json(f"/api/v1/traces/{new}")
    finally:
        server.stop()
