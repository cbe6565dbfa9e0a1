"""Deleting many traces without holding up ingest: ``msgtrace purge`` and retention.

SQLite has one writer. One transaction deleting a week of traces would hold the write
lock for seconds, and every OTLP request would wait behind it (and time out into a 503).
So traces go in small batches, each its own short transaction through ``traces_delete``
(spans with them, live pages told), sized to stay near ``TARGET_SECONDS``, with a rest
after each one in which the ingest writer takes its turn. Space comes back the
same way: ``PRAGMA incremental_vacuum`` in bounded steps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q, QuerySet

from traces.models import Span, Trace
from traces.periodic import Periodic
from traces.services import traces_delete

logger = logging.getLogger("msgtrace.retention")

# Each write transaction aims at this; the ingest writer waits at most about this long.
TARGET_SECONDS = 0.05
MAX_BATCH_TRACES = 500
# Spans per batch: the delete's cost follows spans (rows and index entries), not traces.
START_BATCH_SPANS, MIN_BATCH_SPANS, MAX_BATCH_SPANS = 2_000, 100, 20_000
START_VACUUM_PAGES, MIN_VACUUM_PAGES, MAX_VACUUM_PAGES = 256, 16, 8_192
# A writer waiting on SQLite's lock sleeps and polls, up to 100 ms apart once it has waited
# a while; resting as long as the write took (and at least this) lets it in between.
MIN_PAUSE_SECONDS = 0.005
RETENTION_INTERVAL = timedelta(days=1)


class _Pace:
    """A batch size that halves after a slow write and doubles after a quick one."""

    def __init__(self, start: int, low: int, high: int, target: float) -> None:
        self.size, self.low, self.high, self.target = start, low, high, target

    def record(self, seconds: float) -> None:
        if seconds > self.target:
            self.size = max(self.low, self.size // 2)
        elif seconds < self.target / 2:
            self.size = min(self.high, self.size * 2)


def _rest(seconds: float) -> None:
    """Rest as long as the last write took: on SQLite the ingest writer takes the lock
    meanwhile; on PostgreSQL, which locks nothing ingest needs, ingest keeps its share of
    the machine (a purge without rests there doubled ingest's median latency)."""
    time.sleep(max(seconds, MIN_PAUSE_SECONDS))


@dataclass
class PurgeResult:
    traces: int = 0
    spans: int = 0
    seconds: float = 0.0
    # How long each write transaction held the write lock, in seconds.
    held: list[float] = field(default_factory=list)

    def record(self, seconds: float) -> None:
        self.held.append(seconds)

    @property
    def batches(self) -> int:
        return len(self.held)

    @property
    def longest_batch(self) -> float:
        return max(self.held, default=0.0)

    def batch_percentile(self, fraction: float) -> float:
        ordered = sorted(self.held)
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def traces_purge(
    *,
    traces: QuerySet[Trace],
    target_seconds: float = TARGET_SECONDS,
    progress: Callable[[PurgeResult], None] | None = None,
) -> PurgeResult:
    """Delete the selected traces and their spans, oldest first, in short transactions.

    Each batch is picked outside any transaction (a read, which never waits on ingest) and
    deleted by id through ``traces_delete``. Selection resumes after the last trace taken,
    so a query whose matches are sparse is walked once, not once per batch. A trace with
    more spans than a batch holds loses its spans over several transactions first.
    """
    result = PurgeResult()
    started = time.perf_counter()
    pace = _Pace(START_BATCH_SPANS, MIN_BATCH_SPANS, MAX_BATCH_SPANS, target_seconds)
    ordered = traces.order_by("start_ns", "trace_id")
    after: tuple[int, str] | None = None
    while True:
        page = ordered
        if after is not None:
            start, trace_id = after
            page = page.filter(Q(start_ns__gt=start) | Q(start_ns=start, trace_id__gt=trace_id))
        candidates = list(page.values_list("pk", "start_ns", "span_count")[:MAX_BATCH_TRACES])
        if not candidates:
            break
        batch, spans = [], 0
        for trace_id, start, span_count in candidates:
            if batch and spans + span_count > pace.size:
                break
            batch.append(trace_id)
            spans += span_count
            after = (start, trace_id)
        if spans > pace.size:  # one trace bigger than a batch
            _delete_spans_in_steps(batch[0], pace, result)
        with _Held() as held:
            result.traces += traces_delete(trace_ids=batch)
        result.spans += spans
        result.record(held.seconds)
        pace.record(held.seconds)
        if progress is not None:
            progress(result)
        _rest(held.seconds)
    result.seconds = time.perf_counter() - started
    return result


def _delete_spans_in_steps(trace_id: str, pace: _Pace, result: PurgeResult) -> None:
    """Delete a big trace's spans ``pace.size`` at a time, each step its own transaction."""
    while True:
        ids = list(Span.objects.filter(trace_id=trace_id).values_list("pk", flat=True)[: pace.size])
        if not ids:
            return
        with _Held() as held:
            Span.objects.filter(pk__in=ids).delete()
        result.record(held.seconds)
        pace.record(held.seconds)
        _rest(held.seconds)


class _Held:
    """A transaction timed from when it holds the write lock to its commit.

    On SQLite the transaction begins IMMEDIATE (settings.py), so entering it waits for the
    lock, behind the ingest writer; only the time after that holds anyone up, and only
    that time sizes the batches.
    """

    seconds = 0.0

    def __enter__(self) -> _Held:
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self._began = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self._atomic.__exit__(*exc_info)
        finally:
            self.seconds = time.perf_counter() - self._began


# --- space ------------------------------------------------------------------------------------

AUTO_VACUUM_MODES = {0: "none", 1: "full", 2: "incremental"}


@dataclass
class ReclaimResult:
    mode: str  # SQLite's auto_vacuum: none, full or incremental
    page_size: int
    freed_pages: int = 0
    free_pages: int = 0  # still free inside the file afterwards
    steps: int = 0
    longest_step: float = 0.0

    @property
    def freed_bytes(self) -> int:
        return self.freed_pages * self.page_size

    @property
    def free_bytes(self) -> int:
        return self.free_pages * self.page_size


def _pragma(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA {name}")
        return cursor.fetchone()[0]


def sqlite_reclaim(*, target_seconds: float = TARGET_SECONDS) -> ReclaimResult | None:
    """Give the pages that deletes freed back to the file system; None off SQLite.

    Only a database in ``auto_vacuum=INCREMENTAL`` mode can shrink a step at a time, and a
    database only gets that mode when it is created (settings.py) or rebuilt by VACUUM. Any
    other mode is reported as it is: free pages stay in the file and new spans reuse them.
    PostgreSQL needs nothing here: autovacuum makes the space reusable.
    """
    if connection.vendor != "sqlite":
        return None
    connection.ensure_connection()
    result = ReclaimResult(
        mode=AUTO_VACUUM_MODES.get(_pragma("auto_vacuum"), "unknown"),
        page_size=_pragma("page_size"),
        free_pages=_pragma("freelist_count"),
    )
    if result.mode != "incremental":
        return result
    pace = _Pace(START_VACUUM_PAGES, MIN_VACUUM_PAGES, MAX_VACUUM_PAGES, target_seconds)
    while result.free_pages:
        with _Held() as held, connection.cursor() as cursor:
            # Python's sqlite3 steps a statement that returns no rows once, and each step
            # of this pragma frees one page: one execute per page, in one transaction.
            for _ in range(min(pace.size, result.free_pages)):
                cursor.execute("PRAGMA incremental_vacuum(1)")
        left = _pragma("freelist_count")
        if left >= result.free_pages:  # nothing moved (another writer refilled it): stop
            break
        result.freed_pages += result.free_pages - left
        result.free_pages = left
        result.steps += 1
        result.longest_step = max(result.longest_step, held.seconds)
        pace.record(held.seconds)
        _rest(held.seconds)
    return result


# --- retention --------------------------------------------------------------------------------


def retention_run(*, days: int, now: datetime) -> PurgeResult:
    """Purge the traces that started more than ``days`` days before ``now``; log it."""
    cutoff = now - timedelta(days=days)
    result = traces_purge(traces=Trace.objects.started_between(until=cutoff))
    reclaimed = sqlite_reclaim() if result.traces else None
    space = ""
    if reclaimed is not None and reclaimed.freed_pages:
        space = f"; {reclaimed.freed_bytes / 1e6:.1f} MB given back to the file system"
    logger.info(
        "retention: removed %d traces (%d spans) older than %d days%s",
        result.traces,
        result.spans,
        days,
        space,
    )
    return result


class Retention(Periodic):
    """Runs ``retention_run`` at start and then every ``interval`` (traces/periodic.py).

    ``clock`` gives "now"; tests pass their own.
    """

    name = "retention"
    failure = "retention: purge failed"
    logger = logger

    def __init__(
        self,
        days: int,
        *,
        interval: timedelta = RETENTION_INTERVAL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        run: Callable[..., object] = retention_run,
    ) -> None:
        self.days, self.interval, self.clock, self.run = days, interval, clock, run
        super().__init__(interval.total_seconds())

    def tick(self) -> None:
        self.run(days=self.days, now=self.clock())


def retention_start(days: int) -> Retention | None:
    """Start the daily purge for ``MSGTRACE_RETENTION_DAYS`` (0: keep everything)."""
    return Retention(days).start() if days > 0 else None
