"""The write path: span rows into the database, committed before the client hears 200.

The database has one writer. Rather than each request taking it in turn, one thread owns
the write connection and commits whatever has queued up since its last commit in a single
transaction (group commit); each request awaits the commit of the batch it is part of.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from ingest.otlp import SPAN_COLUMNS
from search import attribute_index
from traces import broadcast
from traces.models import Span
from traces.pricing import price_rows
from traces.rollups import hour_of, hours_invalidate
from traces.services import traces_claim, traces_refresh
from traces.sql import upsert_rows

logger = logging.getLogger("msgtrace.ingest")


class StoreUnavailable(Exception):
    """The database is locked, saturated or unreachable: a transient condition (503)."""


class BatchRefused(Exception):
    """The database refused this batch's data itself; sending it again would not help (400)."""


@dataclass
class WriteResult:
    spans: int = 0
    new_trace_ids: set[str] = field(default_factory=set)
    trace_ids: set[str] = field(default_factory=set)


def spans_ingest(
    params: Sequence[tuple], index_documents: Sequence[tuple[str, str]] | None = None
) -> WriteResult:
    """Upsert spans (``SPAN_COLUMNS`` tuples) and refresh their traces' summaries.

    ``index_documents`` are the spans' attribute-index documents when the decoder made
    them; other callers (imports, tests) leave them to be worked out here. Runs in the
    caller's transaction (the writer thread wraps each group in one), or its own.
    """
    if not connection.in_atomic_block:
        # One transaction for the batch, always: on PostgreSQL the rows travel through a
        # temporary table emptied at every commit (traces/sql.py), so in autocommit the
        # spans would vanish between the COPY and the upsert.
        with transaction.atomic():
            return spans_ingest(params, index_documents)
    # The same span twice: keep the last, as a re-sent batch would.
    unique = {(row[0], row[1]): row for row in params}
    result = WriteResult(spans=len(unique))
    if not unique:
        return result
    trace_ids = {trace_id for trace_id, _ in unique}
    result.trace_ids = trace_ids
    now = timezone.now()
    result.new_trace_ids = traces_claim(trace_ids=trace_ids, now=now)
    rows = price_rows(list(unique.values()), SPAN_COLUMNS)
    upsert_rows(Span, SPAN_COLUMNS, ("trace_id", "span_id"), rows)
    # The analytics rollups of the hours these spans start in are out of date now.
    hours_invalidate({hour_of(row[_START]) for row in rows})
    if attribute_index.enabled():
        if index_documents is None:
            index_documents = attribute_index.documents_from_params(rows, SPAN_COLUMNS)
        attribute_index.index_add(index_documents)
    traces_refresh(trace_ids=trace_ids, now=now)
    return result


_START = SPAN_COLUMNS.index("start_ns")


@dataclass
class _Pending:
    rows: list[tuple]
    future: Future
    index_documents: list[tuple[str, str]] | None = None


class Writer:
    """The one thread that writes spans; requests hand it rows and await a Future."""

    # A group stops growing at this many spans, keeping each transaction short.
    GROUP_SPANS = 20_000

    def __init__(self, max_pending_spans: int) -> None:
        self.max_pending_spans = max_pending_spans
        self._pending: list[_Pending] = []
        self._pending_spans = 0
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(
        self, rows: list[tuple], index_documents: list[tuple[str, str]] | None = None
    ) -> Future:
        future: Future = Future()
        with self._condition:
            # Waiting or being written both count; an idle writer always takes a batch.
            if self._pending_spans and self._pending_spans + len(rows) > self.max_pending_spans:
                raise StoreUnavailable(
                    f"{self._pending_spans} spans are already waiting to be written"
                )
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="msgtrace-writer", daemon=True
                )
                self._thread.start()
            self._pending.append(_Pending(rows, future, index_documents))
            self._pending_spans += len(rows)
            self._condition.notify()
        return future

    def _take_group(self) -> list[_Pending]:
        with self._condition:
            while not self._pending:
                self._condition.wait()
            group, spans = [], 0
            while self._pending and (
                not group or spans + len(self._pending[0].rows) <= self.GROUP_SPANS
            ):
                item = self._pending.pop(0)
                group.append(item)
                spans += len(item.rows)
            return group

    def _run(self) -> None:
        while True:
            group = self._take_group()
            try:
                self._write_group(group)
            finally:
                with self._condition:
                    self._pending_spans -= sum(len(item.rows) for item in group)

    def _write_group(self, group: list[_Pending]) -> None:
        try:
            with transaction.atomic():
                # One statement set for the whole group; a span sent by two requests of
                # the group keeps the later one, as if they had been written in turn.
                result = spans_ingest(
                    [row for item in group for row in item.rows], _index_documents(group)
                )
        except (OperationalError, InterfaceError) as exc:
            # Locked, disk full, connection lost: transient. Reconnect next time.
            logger.warning("ingest: write failed, answering 503: %s", exc)
            connection.close()
            for item in group:
                item.future.set_exception(StoreUnavailable(str(exc)))
            return
        except Exception as exc:
            if len(group) > 1:
                # One batch the database refuses must not sink the others: write alone.
                for item in group:
                    self._write_group([item])
                return
            logger.error(
                "ingest: a batch of %d spans was refused: %s",
                len(group[0].rows),
                describe_failure(exc),
            )
            who = "the database" if isinstance(exc, DatabaseError) else "msgtrace"
            group[0].future.set_exception(
                BatchRefused(f"{who} refused this batch ({type(exc).__name__})")
            )
            return
        # Committed: tell live clients (this only records ids; it never waits on them).
        broadcast.traces_written(
            created=result.new_trace_ids, updated=result.trace_ids - result.new_trace_ids
        )
        for item in group:
            item.future.set_result(result)


def _index_documents(group: list[_Pending]) -> list[tuple[str, str]] | None:
    if any(item.index_documents is None for item in group):
        return None  # some batch came without them: spans_ingest makes them all
    return [document for item in group for document in item.index_documents]


def describe_failure(exc: BaseException) -> str:
    """``DataError at traces/sql.py:41 < ingest/writer.py:140``: the type and where, no message.

    For logs: an exception's message may quote the span data that caused it (a database
    error names the value it refused), and span data stays out of logs.
    """
    frames = traceback.extract_tb(exc.__traceback__)[::-1][:6]
    where = " < ".join(f"{'/'.join(f.filename.split('/')[-2:])}:{f.lineno}" for f in frames)
    return f"{type(exc).__name__} at {where or 'an unknown place'}"


_writer: Writer | None = None
_writer_lock = threading.Lock()


def get_writer() -> Writer:
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = Writer(settings.MSGTRACE_MAX_PENDING_SPANS)
        return _writer
