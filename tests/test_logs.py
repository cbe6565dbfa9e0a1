"""Span data stays out of the server's log: accepted, refused and broken requests alike.

A marker string goes into every field a span can carry, into requests the collector takes,
requests it refuses in part (bad ids, unknown kinds) and requests it refuses whole (bad
protobuf, bad JSON, a gzip bomb, the wrong content type). The pages and the API then show
those spans. The marker must never appear in what the server wrote to its log.
"""

from __future__ import annotations

import gzip
import json
from concurrent.futures import Future
from urllib.parse import quote

import pytest
from django.db import DataError

from ingest import writer
from ingest.otlp import decode_protobuf, to_params
from tests import otlp
from tests.server import MsgtraceServer

MARKER = "zq-span-secret-7f3a"


def _marked_span(trace_id: str, span_id: str, parent: str = "", **extra) -> object:
    span = otlp.span(
        trace_id,
        span_id,
        f"chat {MARKER}",
        parent=parent,
        error=f"failed {MARKER}",
        gen_ai__request__model=f"gpt-{MARKER}",
        gen_ai__usage__input_tokens=12,
        gen_ai__input__messages=json.dumps([{"role": "user", "content": f"hi {MARKER}"}]),
        **{f"key.{MARKER}": f"value {MARKER}"},
        **extra,
    )
    return span


@pytest.fixture(scope="module")
def logged_server(tmp_path_factory, free_port):
    server = MsgtraceServer.start(
        tmp_path_factory.mktemp("logs"), free_port(), MSGTRACE_MAX_BODY_BYTES=65536
    )
    yield server
    server.stop()


def test_the_marker_never_reaches_the_server_log(logged_server):
    server = logged_server
    trace_id, root, child = otlp.new_trace_id(), otlp.new_span_id(), otlp.new_span_id()
    good = otlp.request(
        _marked_span(trace_id, root),
        _marked_span(trace_id, child, parent=root),
        service=f"svc-{MARKER}",
    )
    good.resource_spans[0].scope_spans[0].scope.name = f"scope-{MARKER}"
    # Refused in part: a span whose ids are wrong, beside one that is fine.
    partial = otlp.request(
        _marked_span(trace_id, otlp.new_span_id()),
        otlp.span(trace_id, otlp.new_span_id(), MARKER),
        service=f"svc-{MARKER}",
    )
    partial.resource_spans[0].scope_spans[0].spans[1].trace_id = MARKER.encode()
    json_partial = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {"traceId": MARKER, "spanId": MARKER, "name": MARKER},
                            {
                                "traceId": trace_id,
                                "spanId": otlp.new_span_id(),
                                "name": MARKER,
                                "kind": MARKER,
                            },
                            {
                                "traceId": trace_id,
                                "spanId": otlp.new_span_id(),
                                "startTimeUnixNano": MARKER,
                            },
                        ]
                    }
                ]
            }
        ]
    }
    protobuf, as_json = "application/x-protobuf", "application/json"
    sent = [
        (good.SerializeToString(), protobuf, {}, 200),
        (partial.SerializeToString(), protobuf, {}, 200),
        (json.dumps(json_partial).encode(), as_json, {}, 200),
        # Refused whole:
        (b"\x0a\xff" + MARKER.encode() * 3, protobuf, {}, 400),
        (f'{{"resourceSpans": [{{"{MARKER}": '.encode(), as_json, {}, 400),
        (f'["{MARKER}"]'.encode(), as_json, {}, 400),
        (gzip.compress(MARKER.encode() * 10_000), protobuf, {"Content-Encoding": "gzip"}, 413),
        (MARKER.encode() * 10_000, as_json, {}, 413),
        (MARKER.encode(), "text/plain", {}, 415),
        (MARKER.encode(), protobuf, {"Content-Encoding": MARKER}, 415),
    ]
    for body, content_type, headers, expected in sent:
        status, _, answer = server.post(body, content_type, **headers)
        assert status == expected, (status, answer[:200])

    server.wait_for_trace(trace_id, 3)
    pages = [
        "/",
        "/traces",
        f"/traces?q={quote(MARKER)}",
        f"/traces?q={quote('name:' + MARKER)}",
        f"/traces?service={quote('svc-' + MARKER)}",
        f"/traces/{trace_id}",
        f"/traces/{trace_id}?filter={quote(MARKER)}",
        f"/traces/{trace_id}/spans/{root}",
        f"/traces/{trace_id}/spans/{child}",
        f"/traces/compare?a={trace_id}&b={trace_id}",
        f"/traces/{trace_id}/export.json",
        "/analytics",
        f"/api/v1/traces?q={quote(MARKER)}",
        f"/api/v1/traces/{trace_id}",
        f"/api/v1/traces/{trace_id}/tree",
        "/api/v1/stats",
        "/api/v1/analytics/breakdown?by=model",
    ]
    for page in pages:
        status, _, body = server.request("GET", page)
        assert status == 200, (page, status, body[:300])
    status, _, body = server.request("GET", f"/traces/{trace_id}")
    assert MARKER.encode() in body  # the data is there to be logged, were anything to log it
    # Refused queries are logged (Django logs 4xx answers), without the query.
    status, _, _ = server.request("GET", f"/api/v1/traces?q={quote('(' + MARKER)}")
    assert status == 400

    log = server.log()
    assert "listening on" in log and "Bad Request: /api/v1/traces" in log
    assert MARKER not in log, [line for line in log.splitlines() if MARKER in line]


@pytest.mark.django_db(transaction=True)
def test_a_batch_the_database_refuses_is_logged_without_its_data(monkeypatch, caplog):
    rows = to_params(
        decode_protobuf(otlp.body(_marked_span(otlp.new_trace_id(), otlp.new_span_id()))).rows
    )

    def refuse(*args, **kwargs):
        # As PostgreSQL does: the message quotes the value it refused.
        raise DataError(f'invalid input syntax for type json\nDETAIL: Token "{MARKER}" is invalid')

    monkeypatch.setattr(writer, "spans_ingest", refuse)
    future: Future = Future()
    with caplog.at_level("INFO", logger="msgtrace"):
        writer.Writer(max_pending_spans=10)._write_group([writer._Pending(rows, future)])

    refusal = future.exception()
    assert isinstance(refusal, writer.BatchRefused)
    assert str(refusal) == "the database refused this batch (DataError)"
    assert "a batch of 1 spans was refused: DataError at " in caplog.text
    assert "test_logs.py" in caplog.text  # where it was raised, for whoever reads the log
    assert MARKER not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_bug_in_the_write_path_answers_400_without_quoting_the_data(monkeypatch, caplog):
    rows = to_params(decode_protobuf(otlp.body(otlp.span(otlp.new_trace_id(), "ab" * 8, "x"))).rows)

    def fail(*args, **kwargs):
        raise KeyError(MARKER)

    monkeypatch.setattr(writer, "spans_ingest", fail)
    future: Future = Future()
    writer.Writer(max_pending_spans=10)._write_group([writer._Pending(rows, future)])
    assert str(future.exception()) == "msgtrace refused this batch (KeyError)"
    assert MARKER not in caplog.text


def test_a_decoder_crash_answers_400_and_logs_no_span_data(monkeypatch, caplog):
    from asgiref.sync import async_to_sync

    from ingest import views

    async def crash(body, **options):
        raise KeyError(f"attribute {MARKER}")

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    monkeypatch.setattr(views, "prepare_off_loop", crash)
    headers = {"content-type": "application/json", "content-length": "2"}
    response = async_to_sync(views.export_traces)("POST", headers, receive)
    assert response.status == 400
    assert json.loads(response.body)["message"] == "the body could not be decoded (KeyError)"
    assert "ingest: decoding failed: KeyError at " in caplog.text
    assert MARKER not in caplog.text
