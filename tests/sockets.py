"""Channels WebSocket tests without pytest-asyncio: run async bodies, talk to page sockets."""

from __future__ import annotations

import contextlib
import functools
import time

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from msgtrace_site.asgi import application

TIMEOUT = 3.0  # seconds; the tests' flushes come every 0.05 s


def on_one_loop(test):
    """Run an async test body on a fresh event loop (pytest-asyncio is not used here)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        async_to_sync(test)(*args, **kwargs)

    return run


@contextlib.asynccontextmanager
async def page_socket(path: str):
    """A connected page socket (``/ws/pages/...``), disconnected afterwards."""
    communicator = WebsocketCommunicator(application, path)
    accepted, _ = await communicator.connect(timeout=TIMEOUT)
    assert accepted
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def messages_until(communicator, needle: str) -> list[str]:
    """Every message up to and including the first that contains ``needle``."""
    seen: list[str] = []
    deadline = time.monotonic() + TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or await communicator.receive_nothing(timeout=remaining):
            pytest.fail(f"no message with {needle!r} within {TIMEOUT} s; got {seen}")
        seen.append(await communicator.receive_from())
        if needle in seen[-1]:
            return seen
