"""Live events on ``/api/v1/ws``: in-process against the ASGI app, then over real sockets.

In-process tests drive ``msgtrace_site.asgi.application`` with Channels'
``WebsocketCommunicator`` and the in-memory layer. Each runs on one event loop started by
``async_to_sync`` from the test's thread, so the flush's ``database_sync_to_async`` reads
and our writes both run on that one thread, one at a time, as the test database wants.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from concurrent.futures import Future

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from ingest.otlp import decode_protobuf, to_params
from ingest.writer import Writer, _Pending
from msgtrace_site.asgi import application
from tests import otlp
from tests.server import MsgtraceServer
from tests.sockets import on_one_loop
from traces import broadcast
from traces.services import traces_delete

WS_PATH = "/api/v1/ws"
EVENT_TIMEOUT = 3.0  # seconds; a flush is due every FLUSH_SECONDS (0.25 s at most)


# --- in-process helpers ------------------------------------------------------------------


def commit(*spans) -> None:
    """Write spans exactly as the ingest writer thread does: one group, commit, broadcast.

    On this thread rather than through ``get_writer()``: its thread would keep a database
    connection open past the test database's teardown, and on SQLite's shared in-memory
    test database its writes would lock the flush's reads out. ``_write_group`` is what
    that thread runs for each group, including the call to ``broadcast.traces_written``.
    """
    rows = to_params(decode_protobuf(otlp.body(*spans)).rows)
    future: Future = Future()
    Writer(max_pending_spans=len(rows))._write_group([_Pending(rows, future)])
    future.result()  # what the request would have been answered


commit_async = database_sync_to_async(commit)


def spans_of(trace_id: str, count: int) -> list:
    return [otlp.span(trace_id, otlp.new_span_id(), f"step {i}") for i in range(count)]


@contextlib.asynccontextmanager
async def client(*headers: tuple[bytes, bytes]):
    """A connected client that has read its ``connected`` greeting."""
    communicator = WebsocketCommunicator(application, WS_PATH, headers=list(headers))
    accepted, _ = await communicator.connect(timeout=EVENT_TIMEOUT)
    assert accepted
    greeting = await communicator.receive_json_from(timeout=EVENT_TIMEOUT)
    assert greeting["type"] == "connected"
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def events_until(communicator, kind: str, trace_id: str | None = None) -> list[dict]:
    """Every event up to and including the first ``kind`` (about ``trace_id``, if given)."""
    seen: list[dict] = []
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or await communicator.receive_nothing(timeout=remaining):
            pytest.fail(f"no {kind} for {trace_id} within {EVENT_TIMEOUT} s; got {seen}")
        event = await communicator.receive_json_from()
        seen.append(event)
        if event["type"] == kind and (
            trace_id is None or event["data"].get("trace_id") == trace_id
        ):
            return seen


async def drain(communicator, quiet: float) -> list[dict]:
    """Events until none has come for ``quiet`` seconds (proving that nothing else comes)."""
    seen = []
    while not await communicator.receive_nothing(timeout=quiet):
        seen.append(await communicator.receive_json_from())
    return seen


def about(events: list[dict], trace_id: str) -> list[str]:
    return [e["type"] for e in events if (e.get("data") or {}).get("trace_id") == trace_id]


@pytest.fixture
def live(transactional_db, monkeypatch):
    """Fast flushes, and nothing pending from another test's writes."""
    broadcast._pending.take()
    monkeypatch.setattr(broadcast, "FLUSH_SECONDS", 0.05)
    monkeypatch.setattr(broadcast, "STATS_SECONDS", 0.5)
    yield
    broadcast._pending.take()


@pytest.fixture
def live_real_timing(transactional_db):
    """The module's own FLUSH_SECONDS and STATS_SECONDS."""
    broadcast._pending.take()
    yield
    broadcast._pending.take()


# --- events ------------------------------------------------------------------------------


@on_one_loop
async def test_connecting_says_connected_and_lists_the_event_types(live):
    communicator = WebsocketCommunicator(application, WS_PATH)
    assert (await communicator.connect())[0]
    greeting = await communicator.receive_json_from()
    assert greeting["type"] == "connected"
    assert set(greeting["data"]["events"]) == {
        "trace_created", "trace_updated", "trace_deleted", "stats_updated", "resync"
    }  # fmt: skip
    await communicator.disconnect()


@on_one_loop
async def test_a_new_trace_is_trace_created_with_its_summary_at_the_real_pace(live_real_timing):
    trace_id = otlp.new_trace_id()
    async with client() as ws:
        started = time.monotonic()
        await commit_async(*spans_of(trace_id, 3))
        events = await events_until(ws, "trace_created", trace_id)
        waited = time.monotonic() - started
        rest = await drain(ws, quiet=broadcast.FLUSH_SECONDS * 2)
    summary = events[-1]["data"]
    assert summary["span_count"] == 3
    assert summary["service_name"] == "test-service"
    assert summary["root_span_name"] == "step 0"
    assert waited < broadcast.FLUSH_SECONDS + 1.0
    # The first flush with a write also carries the totals (none were sent before).
    stats = [e for e in events + rest if e["type"] == "stats_updated"]
    assert len(stats) == 1
    assert stats[0]["data"]["total_spans"] == 3
    assert about(events + rest, trace_id) == ["trace_created"]


@on_one_loop
async def test_more_spans_of_a_trace_are_trace_updated_with_the_new_count(live):
    trace_id = otlp.new_trace_id()
    async with client() as ws:
        await commit_async(*spans_of(trace_id, 2))
        await events_until(ws, "trace_created", trace_id)
        await commit_async(*spans_of(trace_id, 3))
        events = await events_until(ws, "trace_updated", trace_id)
    assert events[-1]["data"]["span_count"] == 5
    assert about(events, trace_id) == ["trace_updated"]


def test_many_writes_of_one_trace_within_one_flush_are_one_trace_updated(live):
    trace_id = otlp.new_trace_id()

    @on_one_loop
    async def first_write_is_seen():
        async with client() as ws:
            await commit_async(*spans_of(trace_id, 1))
            await events_until(ws, "trace_created", trace_id)

    first_write_is_seen()
    # No event loop runs now, so no flush: these 30 commits all land in the next one.
    for _ in range(30):
        commit(*spans_of(trace_id, 2))

    @on_one_loop
    async def one_update_follows():
        async with client() as ws:
            events = await events_until(ws, "trace_updated", trace_id)
            events += await drain(ws, quiet=0.3)
        assert about(events, trace_id) == ["trace_updated"]
        assert events[0]["data"]["span_count"] == 61

    one_update_follows()


@on_one_loop
async def test_a_trace_written_all_the_time_is_updated_once_per_update_interval(live, monkeypatch):
    monkeypatch.setattr(broadcast, "UPDATE_SECONDS", 0.5)
    trace_id = otlp.new_trace_id()
    async with client() as ws:
        await commit_async(*spans_of(trace_id, 1))
        await events_until(ws, "trace_created", trace_id)
        started = time.monotonic()
        writes = 0
        while time.monotonic() - started < 1.2:  # ~24 commits, one every 50 ms
            await commit_async(*spans_of(trace_id, 1))
            writes += 1
            await asyncio.sleep(0.05)
        events = await drain(ws, quiet=0.8)  # the last held update arrives too
    updates = [e for e in events if e["type"] == "trace_updated"]
    # 1.2 s of writes at one update per 0.5 s: three at most, not one per commit.
    assert 2 <= len(updates) <= 4 < writes
    assert updates[-1]["data"]["span_count"] == 1 + writes


@on_one_loop
async def test_deleted_traces_are_trace_deleted(live):
    kept, gone = otlp.new_trace_id(), otlp.new_trace_id()
    async with client() as ws:
        await commit_async(*spans_of(kept, 1), *spans_of(gone, 2))
        await events_until(ws, "stats_updated")  # the flush with both trace_created
        assert await database_sync_to_async(traces_delete)(trace_ids=[gone]) == 1
        events = await events_until(ws, "trace_deleted", gone)
        events += await events_until(ws, "stats_updated")
    assert events[0] == {"type": "trace_deleted", "data": {"trace_id": gone}}
    assert about(events, kept) == []
    assert events[-1]["data"]["total_traces"] == 1


def test_a_trace_deleted_then_written_again_before_a_flush_is_told_in_that_order(live):
    trace_id = otlp.new_trace_id()
    # No event loop runs yet, so no flush: all three land in the first one.
    commit(*spans_of(trace_id, 2))
    traces_delete(trace_ids=[trace_id])
    commit(*spans_of(trace_id, 1))  # an exporter sending more of it, say

    @on_one_loop
    async def client_ends_with_the_trace_present():
        async with client() as ws:
            events = await events_until(ws, "trace_created", trace_id)
            events += await drain(ws, quiet=0.2)
        # A client applying events in order must end with the trace in its list.
        assert about(events, trace_id) == ["trace_deleted", "trace_created"]
        created = next(e for e in events if e["type"] == "trace_created")
        assert created["data"]["span_count"] == 1

    client_ends_with_the_trace_present()


@on_one_loop
async def test_stats_follow_writes_at_most_once_per_stats_interval(live):
    first, second = otlp.new_trace_id(), otlp.new_trace_id()
    async with client() as ws:
        await commit_async(*spans_of(first, 2))
        events = await events_until(ws, "stats_updated")
        sent_at = time.monotonic()
        assert events[-1]["data"]["total_traces"] == 1
        assert events[-1]["data"]["total_spans"] == 2
        # A write right after: its trace comes at once, its totals only when they are due.
        await commit_async(*spans_of(second, 3))
        events = await events_until(ws, "trace_created", second)
        assert [e["type"] for e in events] == ["trace_created"]
        events = await events_until(ws, "stats_updated")
    # Timed here, not on the server: allow one flush of slack.
    assert time.monotonic() - sent_at >= broadcast.STATS_SECONDS - broadcast.FLUSH_SECONDS
    assert events[-1]["data"]["total_traces"] == 2
    assert events[-1]["data"]["total_spans"] == 5


@on_one_loop
async def test_more_changed_traces_than_one_flush_carries_is_one_resync(live):
    many = [otlp.new_trace_id() for _ in range(broadcast.MAX_TRACES_PER_FLUSH + 1)]
    async with client() as ws:
        await commit_async(*(otlp.span(t, otlp.new_span_id(), "one") for t in many))
        events = await events_until(ws, "resync")
        events += await drain(ws, quiet=0.2)
    assert [e["type"] for e in events] == ["resync", "stats_updated"]
    assert events[1]["data"]["total_traces"] == len(many)


def test_past_max_pending_the_ids_are_dropped_and_clients_resync(live, monkeypatch):
    monkeypatch.setattr(broadcast, "MAX_PENDING", 5)
    for _ in range(4):
        commit(*spans_of(otlp.new_trace_id(), 1), *spans_of(otlp.new_trace_id(), 1))
    pending = broadcast._pending
    assert pending.overflow
    assert len(pending.created) + len(pending.updated) + len(pending.deleted) == 0

    @on_one_loop
    async def clients_are_told_to_resync():
        async with client() as ws:
            events = await events_until(ws, "resync")
            events += await drain(ws, quiet=0.2)
        assert [e["type"] for e in events] == ["resync", "stats_updated"]

    clients_are_told_to_resync()


@on_one_loop
async def test_a_flush_that_fails_is_followed_by_a_resync(live, monkeypatch):
    import traces.api

    real_summary = traces.api.trace_summary
    calls = []

    def fail_once(trace):
        calls.append(trace.pk)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return real_summary(trace)

    monkeypatch.setattr(traces.api, "trace_summary", fail_once)
    lost, later = otlp.new_trace_id(), otlp.new_trace_id()
    async with client() as ws:
        await commit_async(*spans_of(lost, 1))
        # That flush's events are gone: the client must hear that it missed something.
        events = await events_until(ws, "resync")
        assert about(events, lost) == []
        await commit_async(*spans_of(later, 1))
        events = await events_until(ws, "trace_created", later)
    assert calls[0] == lost


@on_one_loop
async def test_every_connected_client_gets_each_event(live):
    trace_id = otlp.new_trace_id()
    async with client() as one, client() as two:
        await commit_async(*spans_of(trace_id, 1))
        for ws in (one, two):
            assert about(await events_until(ws, "trace_created", trace_id), trace_id)


# --- the client's side of the protocol -----------------------------------------------------


@on_one_loop
async def test_ping_is_answered_with_pong_carrying_its_data(live):
    async with client() as ws:
        await ws.send_json_to({"type": "ping", "data": {"n": 7, "sent": "12:00"}})
        assert await ws.receive_json_from() == {"type": "pong", "data": {"n": 7, "sent": "12:00"}}
        await ws.send_json_to({"type": "ping"})
        assert await ws.receive_json_from() == {"type": "pong", "data": None}


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param({"text_data": "hello"}, id="not-json"),
        pytest.param({"text_data": '{"type": "subscribe"}'}, id="unknown-type"),
        pytest.param({"text_data": '["ping"]'}, id="json-not-an-object"),
        pytest.param({"text_data": json.dumps({"type": "ping", "data": "x" * 5000})}, id="5-kb"),
        pytest.param({"bytes_data": b'{"type": "ping"}'}, id="binary"),
        pytest.param({"text_data": "[" * 2000 + "]" * 2000}, id="deeply-nested-json"),
    ],
)
@on_one_loop
async def test_bad_client_input_is_answered_with_an_error_and_the_connection_stays(live, frame):
    async with client() as ws:
        await ws.send_to(**frame)
        answer = await ws.receive_json_from()
        assert answer["type"] == "error"
        assert answer["data"]["message"]
        await ws.send_json_to({"type": "ping", "data": 1})
        assert await ws.receive_json_from() == {"type": "pong", "data": 1}


@pytest.mark.parametrize("origin", ["http://evil.example", "http://localhost.evil.example:4321"])
@on_one_loop
async def test_a_browser_origin_not_in_allowed_hosts_is_refused(live, origin):
    communicator = WebsocketCommunicator(
        application, WS_PATH, headers=[(b"origin", origin.encode())]
    )
    accepted, _ = await communicator.connect()
    assert not accepted


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="no-origin"),
        pytest.param([(b"origin", b"http://localhost:4321")], id="allowed-host-origin"),
    ],
)
@on_one_loop
async def test_no_origin_or_an_allowed_host_origin_is_accepted(live, headers):
    async with client(*headers) as ws:
        await ws.send_json_to({"type": "ping"})
        assert (await ws.receive_json_from())["type"] == "pong"


# --- over real sockets ---------------------------------------------------------------------


def ws_url(server: MsgtraceServer) -> str:
    return f"ws://127.0.0.1:{server.port}{WS_PATH}"


def wait_for(ws, kind: str, trace_id: str, timeout: float = 10.0) -> dict:
    """The first ``kind`` event about ``trace_id``; others (earlier tests' data) are skipped."""
    seen = []
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            event = json.loads(ws.recv(timeout=remaining))
        except TimeoutError:
            break
        seen.append(event["type"])
        if event["type"] == kind and event["data"].get("trace_id") == trace_id:
            return event
    pytest.fail(f"no {kind} for {trace_id} within {timeout} s; got {seen}")


def test_over_a_real_socket_posted_spans_are_trace_created_then_trace_updated(server):
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    with ws_connect(ws_url(server), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "connected"
        first = [
            otlp.span(trace_id, root, "invoke_agent helper", duration_ms=900),
            otlp.span(trace_id, otlp.new_span_id(), "chat gpt-4o", parent=root,
                      gen_ai__request__model="gpt-4o", gen_ai__usage__input_tokens=100),
        ]  # fmt: skip
        assert server.post(otlp.body(*first, service="live-e2e"))[0] == 200
        created = wait_for(ws, "trace_created", trace_id)["data"]
        assert created["span_count"] == 2
        assert created["service_name"] == "live-e2e"
        assert created["root_span_name"] == "invoke_agent helper"
        assert created["input_tokens"] == 100
        assert created["models"] == ["gpt-4o"]

        more = [otlp.span(trace_id, otlp.new_span_id(), "tool", parent=root) for _ in range(3)]
        assert server.post(otlp.body(*more, service="live-e2e"))[0] == 200
        assert wait_for(ws, "trace_updated", trace_id)["data"]["span_count"] == 5

        ws.send(json.dumps({"type": "ping", "data": "still there"}))
        while (event := json.loads(ws.recv(timeout=5)))["type"] != "pong":
            pass
        assert event["data"] == "still there"


def test_over_a_real_socket_a_foreign_browser_origin_gets_403(server):
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(ws_url(server), origin="http://evil.example", open_timeout=10)
    assert refused.value.response.status_code == 403


def redis_url_for_this_test() -> str:
    """A random Redis database, so that concurrent runs do not hear each other's events."""
    import redis

    url = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        # Not a skip: CI has Redis, and cross-process events are what this test is for.
        pytest.fail(f"Redis is not reachable at {url}: {exc}")
    return url


@pytest.mark.slow
def test_with_redis_an_event_ingested_by_one_process_reaches_a_client_of_the_other(
    tmp_path, free_port
):
    redis_url = redis_url_for_this_test()
    # One process ingests, the other only serves the socket: they share the database
    # (SQLite file or PostgreSQL) and the Redis channel layer.
    ingesting = MsgtraceServer.start(
        tmp_path, free_port(), MSGTRACE_REDIS_URL=redis_url, MSGTRACE_DECODE_WORKERS=0
    )
    try:
        serving = ingesting.sibling(free_port())
        try:
            trace_id = otlp.new_trace_id()
            with ws_connect(ws_url(serving), open_timeout=10) as ws:
                assert json.loads(ws.recv(timeout=5))["type"] == "connected"
                assert ingesting.post(otlp.body(*spans_of(trace_id, 4)))[0] == 200
                assert wait_for(ws, "trace_created", trace_id)["data"]["span_count"] == 4
                assert ingesting.post(otlp.body(*spans_of(trace_id, 1)))[0] == 200
                assert wait_for(ws, "trace_updated", trace_id)["data"]["span_count"] == 5
        finally:
            serving.stop()
    finally:
        ingesting.stop()


def test_a_flush_task_left_on_a_closed_loop_is_replaced_on_the_next_one(live):
    async def started_task():
        broadcast.ensure_started()
        return broadcast._task

    old_loop = asyncio.new_event_loop()
    first = old_loop.run_until_complete(started_task())
    old_loop.close()  # closed with its flush task still pending, never cancelled
    assert not first.done()
    second = asyncio.run(started_task())
    assert second is not first
