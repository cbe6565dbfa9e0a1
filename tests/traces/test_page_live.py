"""The pages' live updates on ``/ws/pages/...``: which HTML fragments each page receives.

In-process against ``msgtrace_site.asgi.application`` with Channels'
``WebsocketCommunicator`` and the in-memory layer, each test on one event loop started by
``async_to_sync`` (pytest-asyncio is not used), so the consumer's database reads and the
test's writes take turns on one thread, as the test database wants.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import Future

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from ingest.otlp import decode_protobuf, to_params
from ingest.writer import Writer, _Pending
from msgtrace_site.asgi import application
from tests import otlp
from tests.sockets import TIMEOUT, messages_until, on_one_loop, page_socket
from traces import broadcast


def _commit(*spans, service: str = "live-pages") -> None:
    """Write spans as the ingest writer thread does (one group, commit, then broadcast)."""
    rows = to_params(decode_protobuf(otlp.body(*spans, service=service)).rows)
    future: Future = Future()
    Writer(max_pending_spans=len(rows))._write_group([_Pending(rows, future)])
    future.result()


commit = database_sync_to_async(_commit)


def root(trace_id: str, name: str = "triage", *, error: str | None = None, **extra):
    attributes = {"workflow.name": name, **extra}
    return otlp.span(
        trace_id, otlp.new_span_id(), f"invoke_agent {name}", error=error, **attributes
    )


def child(trace_id: str, name: str = "step"):
    return otlp.span(trace_id, otlp.new_span_id(), name, start_ms=1, duration_ms=2)


@pytest.fixture
def live(transactional_db, monkeypatch):
    """Fast flushes and toasts, and nothing pending from another test's writes."""
    broadcast._pending.take()
    monkeypatch.setattr(broadcast, "FLUSH_SECONDS", 0.05)
    monkeypatch.setattr(broadcast, "STATS_SECONDS", 0.2)
    monkeypatch.setattr("traces.consumers.TOAST_SECONDS", 0.3)
    yield
    broadcast._pending.take()


async def drain(communicator, quiet: float = 0.5) -> list[str]:
    seen = []
    while not await communicator.receive_nothing(timeout=quiet):
        seen.append(await communicator.receive_from())
    return seen


def rows_in(messages: list[str]) -> list[str]:
    return [m for m in messages if "<tr " in m]


# --- the trace list ------------------------------------------------------------------------


@on_one_loop
async def test_a_new_matching_trace_arrives_as_a_highlighted_row_at_the_top_and_a_toast(live):
    trace_id = otlp.new_trace_id()
    async with page_socket("/ws/pages/list?service=live-pages") as socket:
        await commit(root(trace_id), child(trace_id))
        seen = await messages_until(socket, "New trace: triage")
    [rows] = rows_in(seen)
    assert rows.startswith('<tbody hx-swap-oob="afterbegin:#trace-rows">')
    assert f'id="trace-{trace_id}"' in rows and "is-new" in rows
    assert re.search(r"<td class=\"num\">2</td>", rows)  # its span count
    [toast] = [m for m in seen if 'id="toasts"' in m]
    assert 'hx-swap-oob="beforeend"' in toast and "toast-info" in toast
    assert f'href="/traces/{trace_id}"' in toast


@on_one_loop
async def test_more_spans_update_the_row_in_place(live):
    trace_id = otlp.new_trace_id()
    await commit(root(trace_id))
    async with page_socket("/ws/pages/list") as socket:
        await drain(socket, quiet=0.3)  # the first write's flush, if it came late
        await commit(child(trace_id, "late step"), child(trace_id, "later step"))
        seen = await messages_until(socket, f'id="trace-{trace_id}"')
    row = seen[-1]
    assert row.startswith(f'<tr id="trace-{trace_id}"') and 'hx-swap-oob="true"' in row
    assert "afterbegin" not in row and "is-new" not in row
    assert re.search(r"<td class=\"num\">3</td>", row)


@on_one_loop
async def test_a_trace_outside_the_filters_gets_a_toast_but_no_row(live):
    async with page_socket("/ws/pages/list?service=someone-else&q=duration:>1s") as socket:
        await commit(root(otlp.new_trace_id(), "ignored"))
        seen = await messages_until(socket, "New trace: ignored")
        seen += await drain(socket)
    assert rows_in(seen) == []


@on_one_loop
async def test_bad_filters_give_no_live_rows_and_no_crash(live):
    path = "/ws/pages/list?min_duration=abc&q=duration:>>&sort=nope&page=0"
    async with page_socket(path) as socket:
        await commit(root(otlp.new_trace_id(), "unfiltered"))
        seen = await messages_until(socket, "New trace: unfiltered")
        seen += await drain(socket)
    assert rows_in(seen) == [] and not any("live-notice" in m for m in seen)


@on_one_loop
async def test_on_page_two_or_another_sort_the_list_only_counts_new_traces(live):
    for query in ("page=2", "sort=-duration"):
        async with page_socket(f"/ws/pages/list?service=live-pages&{query}") as socket:
            await commit(root(otlp.new_trace_id(), "one"), root(otlp.new_trace_id(), "two"))
            seen = await messages_until(socket, "live-notice")
            await commit(root(otlp.new_trace_id(), "three"))
            seen += await messages_until(socket, "3 new traces — refresh")
            seen += await drain(socket)
        assert rows_in(seen) == []
        assert 'id="live-notice"' in seen[-1] or any("2 new traces — refresh" in m for m in seen)


@on_one_loop
async def test_the_page_tells_the_socket_its_new_filters(live):
    async with page_socket("/ws/pages/list?service=nobody") as socket:
        await socket.send_to(text_data=json.dumps({"params": "service=live-pages"}))
        trace_id = otlp.new_trace_id()
        await commit(root(trace_id, "refiltered"))
        seen = await messages_until(socket, "New trace: refiltered")
        seen += await drain(socket, quiet=0.3)
        assert any(f'id="trace-{trace_id}"' in m for m in rows_in(seen))
        # Junk is ignored; the socket stays open and keeps working.
        for junk in ("not json", "[]", json.dumps({"params": 5}), "x" * 10_000):
            await socket.send_to(text_data=junk)
        await commit(root(otlp.new_trace_id(), "still"))
        await messages_until(socket, "New trace: still")


@on_one_loop
async def test_span_text_is_escaped_in_rows_and_toasts(live):
    evil = '<img src=x onerror="alert(1)">'
    async with page_socket("/ws/pages/list") as socket:
        await commit(root(otlp.new_trace_id(), evil, **{"gen_ai.request.model": evil}))
        seen = await messages_until(socket, "New trace: ")
        seen += await drain(socket, quiet=0.3)
    assert any("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in m for m in seen)
    assert not any("<img" in m for m in seen)


@on_one_loop
async def test_a_burst_of_new_traces_is_one_toast(live):
    async with page_socket("/ws/pages/list?service=nobody") as socket:
        await commit(root(otlp.new_trace_id(), "first"))
        await messages_until(socket, "New trace: first")
        # Within the toast interval: these wait for it and then come as one toast.
        await commit(*(root(otlp.new_trace_id(), f"burst {i}") for i in range(5)))
        await commit(root(otlp.new_trace_id(), "burst 5", error="boom"))
        seen = await messages_until(socket, "6 new traces")
        seen += await drain(socket)
    toasts = [m for m in seen if 'id="toasts"' in m]
    assert len(toasts) == 1 and "1 with errors" in toasts[0] and "toast-error" in toasts[0]


# --- the dashboard and the trace page ------------------------------------------------------


@on_one_loop
async def test_the_dashboard_gets_its_figures_again_after_a_write(live):
    async with page_socket("/ws/pages/dashboard?window=1h") as socket:
        await commit(root(otlp.new_trace_id(), "counted"))
        seen = await messages_until(socket, 'id="dash"')
    dash = seen[-1]
    assert dash.startswith('<div id="dash" hx-swap-oob="innerHTML">')
    assert "Recent traces" in dash and "counted" in dash
    assert 'aria-current="true" title="Last 1h"' in dash


@on_one_loop
async def test_a_dashboard_with_a_bad_window_gets_no_figures(live):
    async with page_socket("/ws/pages/dashboard?window=forever") as socket:
        await commit(root(otlp.new_trace_id(), "nope"))
        seen = await messages_until(socket, "New trace: nope")
        seen += await drain(socket)
    assert not any('id="dash"' in m for m in seen)


@on_one_loop
async def test_the_trace_page_gets_its_header_and_timeline_when_its_trace_grows(live):
    trace_id, other = otlp.new_trace_id(), otlp.new_trace_id()
    await commit(root(trace_id, "growing"), root(other, "other"))
    path = f"/ws/pages/trace/{trace_id}?view=tree&offset=200&filter=" + "x" * 300
    async with page_socket(path) as socket:
        await drain(socket, quiet=0.3)
        await commit(child(other))
        assert not any('id="trace-head"' in m for m in await drain(socket))
        await commit(child(trace_id, "arrived later"))
        seen = await messages_until(socket, 'id="timeline-body"')
    head = next(m for m in seen if 'id="trace-head"' in m)
    assert head.startswith('<section id="trace-head"') and 'hx-swap-oob="true"' in head
    assert "<dd>2</dd>" in head  # span count
    assert 'name="csrfmiddlewaretoken"' not in head  # no cookie here, so no form token
    timeline = seen[-1]
    assert timeline.startswith('<div id="timeline-body" hx-swap-oob="innerHTML">')
    assert "arrived later" in timeline and "view-timeline" in timeline  # bad params: default


@on_one_loop
async def test_a_resync_request_sends_the_trace_page_again(live):
    trace_id = otlp.new_trace_id()
    await commit(root(trace_id, "resynced"))
    async with page_socket(f"/ws/pages/trace/{trace_id}") as socket:
        await drain(socket, quiet=0.3)
        await socket.send_to(text_data=json.dumps({"params": "view=tree", "resync": True}))
        seen = await messages_until(socket, 'id="timeline-body"')
    assert "view-tree" in seen[-1] and any('id="trace-head"' in m for m in seen)


@on_one_loop
async def test_unknown_pages_are_closed_with_a_code_the_browser_does_not_retry(live):
    for path in ("/ws/pages/admin", "/ws/pages/trace/not-an-id", "/ws/pages/list/abc"):
        communicator = WebsocketCommunicator(application, path)
        assert (await communicator.connect(timeout=TIMEOUT))[0]
        assert await communicator.receive_output(timeout=TIMEOUT) == {
            "type": "websocket.close",
            "code": 4404,
        }
        await communicator.wait()


@on_one_loop
async def test_another_sites_page_cannot_open_the_socket(live):
    communicator = WebsocketCommunicator(
        application, "/ws/pages/list", headers=[(b"origin", b"https://evil.example")]
    )
    assert not (await communicator.connect(timeout=TIMEOUT))[0]
