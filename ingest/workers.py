"""Decoding in worker processes, so that ingest uses more than one core.

Decoding and flattening spans is most of ingest's CPU work and holds the GIL; in the
server's own process it would leave every other core idle while the writer and the HTTP
side wait for it. Worker processes decode and hand back SQL-ready tuples; the server
process keeps HTTP, the single writer and (later) the live-update sockets.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial

from django.conf import settings

from ingest.otlp import Prepared, prepare
from ingest.worker_process import exit_with_parent
from ingest.writer import StoreUnavailable
from search import attribute_index

logger = logging.getLogger("msgtrace.ingest")

_executor: ProcessPoolExecutor | None = None
_lock = threading.Lock()


def _get_executor() -> ProcessPoolExecutor | None:
    global _executor
    if settings.MSGTRACE_DECODE_WORKERS == 0:
        return None
    with _lock:
        if _executor is None:
            # spawn, not fork: the server process has threads (writer, reactor).
            _executor = ProcessPoolExecutor(
                max_workers=settings.MSGTRACE_DECODE_WORKERS,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )
        return _executor


def warm_up() -> None:
    """Start the workers now rather than on the first request."""
    executor = _get_executor()
    if executor is not None:
        for _ in range(settings.MSGTRACE_DECODE_WORKERS):
            executor.submit(int)


async def prepare_off_loop(body: bytes, *, gzipped: bool, json: bool) -> Prepared:
    job = partial(
        prepare,
        body,
        gzipped=gzipped,
        json=json,
        max_bytes=settings.MSGTRACE_MAX_BODY_BYTES,
        limit=settings.MSGTRACE_MAX_ATTRIBUTE_CHARS,
        index_terms=attribute_index.enabled(),
    )
    executor = _get_executor()
    if executor is None:
        return await asyncio.to_thread(job)
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, job)
    except BrokenProcessPool:
        global _executor
        with _lock:
            if _executor is executor:
                _executor = None
        logger.error("ingest: a decode worker died; starting new ones")
        raise StoreUnavailable("a decode worker stopped; retry") from None
