"""Live events: which traces changed, told to every WebSocket client, coalesced.

The write path only records trace ids here (a set under a lock: it never waits on a
socket). A task on the server's event loop wakes every ``FLUSH_SECONDS``, takes what
accumulated, reads those traces' summaries once and sends one group message that every
consumer turns into its own messages. A trace updated 500 times in a second is one
update; the pending set is bounded, and past the bound clients are told to re-sync
instead. With ``MSGTRACE_REDIS_URL`` the group spans processes, so an event reaches every
browser whichever process ingested the spans.

Event types (the seed's protocol, ``{"type", "data"}``): ``trace_created`` (first time a
trace id is seen), ``trace_updated``, ``trace_deleted``, ``stats_updated``; ``resync``
when more changed than one flush carries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Collection

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer

logger = logging.getLogger(__name__)

GROUP = "msgtrace.events"
# New traces reach clients within about this much of their commit...
FLUSH_SECONDS = 0.1
# ...while one trace's updates go out at most this often: a run receiving spans all the
# time is one update a second, whatever the span rate.
UPDATE_SECONDS = 1.0
STATS_SECONDS = 2.0  # the totals cost a scan of every trace: not four times a second
MAX_TRACES_PER_FLUSH = 200  # more than that in 250 ms: clients re-sync instead
MAX_PENDING = 10_000


class _Pending:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.created: set[str] = set()
        self.updated: set[str] = set()
        self.deleted: set[str] = set()
        self.overflow = False
        self.stats_due = False

    def add(self, bucket: set[str], ids: Collection[str]) -> None:
        with self.lock:
            if self.overflow:
                return
            bucket.update(ids)
            self.stats_due = True
            if len(self.created) + len(self.updated) + len(self.deleted) > MAX_PENDING:
                # Memory stays bounded; what was lost is recovered by a re-sync.
                self.overflow = True
                self.created.clear(), self.updated.clear(), self.deleted.clear()

    def defer(self, updated: Collection[str]) -> None:
        """Updates held back for a later flush (sent too recently)."""
        with self.lock:
            if not self.overflow:
                self.updated.update(updated)

    def owe_stats(self) -> None:
        with self.lock:
            self.stats_due = True

    def owe_resync(self) -> None:
        with self.lock:
            self.overflow = self.stats_due = True

    def take(self) -> tuple[set[str], set[str], set[str], bool, bool]:
        with self.lock:
            taken = (self.created, self.updated - self.created, self.deleted, self.overflow)
            stats = self.stats_due
            self.created, self.updated, self.deleted = set(), set(), set()
            self.overflow = self.stats_due = False
            return (*taken, stats)


_pending = _Pending()
_task: asyncio.Task | None = None

# Alert transitions (traces/alerting.py) for the pages' toasts and badge: their own group,
# which only page sockets join.
ALERTS_GROUP = "msgtrace.alerts"
MAX_PENDING_ALERTS = 100
_alerts_lock = threading.Lock()
_alerts: list[dict] = []


def alerts_changed(*, alerts: list[dict]) -> None:
    """Tell open pages about alert events (plain dicts). Called from evaluator threads.

    With the in-memory layer they wait for the next flush on the server's event loop (the
    layer is not thread-safe), bounded; a shared layer (Redis) is sent to at once, which
    also reaches pages from ``msgtrace evaluate_alerts`` running elsewhere.
    """
    if not alerts:
        return
    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):
        with _alerts_lock:
            _alerts.extend(alerts)
            del _alerts[:-MAX_PENDING_ALERTS]
        return
    async_to_sync(layer.group_send)(ALERTS_GROUP, {"type": "alerts.changed", "alerts": alerts})


def _take_alerts() -> list[dict]:
    with _alerts_lock:
        taken = _alerts[:]
        _alerts.clear()
        return taken


def traces_written(*, created: Collection[str], updated: Collection[str]) -> None:
    """Record traces a committed write created or changed. Never blocks on clients."""
    _pending.add(_pending.created, created)
    _pending.add(_pending.updated, updated)


def traces_deleted(*, trace_ids: Collection[str]) -> None:
    _pending.add(_pending.deleted, trace_ids)


def ensure_started() -> None:
    """Start the flush task on the running event loop (ASGI code calls this)."""
    global _task
    loop = asyncio.get_running_loop()
    # A task left on another loop (one that was closed, as between tests) flushes nothing.
    if _task is None or _task.done() or _task.get_loop() is not loop:
        _task = loop.create_task(_flush_forever(), name="msgtrace-broadcast")


async def _flush_forever() -> None:
    layer = get_channel_layer()
    last_stats = 0.0
    sent_at: dict[str, float] = {}  # trace id -> when it was last told; only the last second
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        created, updated, deleted, overflow, stats_due = _pending.take()
        now = time.monotonic()
        sent_at = {i: at for i, at in sent_at.items() if now - at < UPDATE_SECONDS}
        held = {i for i in updated if i in sent_at}
        if held:
            _pending.defer(held)
            updated -= held
        stats_now = stats_due and time.monotonic() - last_stats >= STATS_SECONDS
        if stats_due and not stats_now:
            _pending.owe_stats()  # sent by a later flush
        alerts = _take_alerts()
        if alerts:
            try:
                await layer.group_send(ALERTS_GROUP, {"type": "alerts.changed", "alerts": alerts})
            except Exception:
                logger.exception("live updates: could not send alert events")
        if not (created or updated or deleted or overflow or stats_now):
            continue
        try:
            events = await _events(created, updated, deleted, overflow, stats_now)
            if stats_now:
                last_stats = time.monotonic()
            sent_at.update(dict.fromkeys(created | updated, now))
            # Encoded once here rather than once per connected client.
            texts = [json.dumps(event) for event in events]
            await layer.group_send(GROUP, {"type": "events", "events": events, "texts": texts})
        except Exception:  # a failed flush must not end live updates for good
            logger.exception("live updates: could not send a flush")
            _pending.owe_resync()  # its events are lost: clients must re-read


@database_sync_to_async
def _events(created, updated, deleted, overflow, stats_now) -> list[dict]:
    from traces.api import stats_data, trace_summary
    from traces.models import Trace

    events: list[dict] = []
    changed = [*sorted(created), *sorted(updated)]
    if overflow or len(changed) > MAX_TRACES_PER_FLUSH:
        events.append({"type": "resync", "data": {"reason": "more changed than one update"}})
        changed = []
    # Deletions first: a trace deleted, then written again before this flush, exists.
    events += [{"type": "trace_deleted", "data": {"trace_id": i}} for i in sorted(deleted)]
    summaries = {trace.pk: trace for trace in Trace.objects.filter(pk__in=changed)}
    for trace_id in changed:
        trace = summaries.get(trace_id)
        if trace is None:
            continue  # deleted since
        kind = "trace_created" if trace_id in created else "trace_updated"
        events.append({"type": kind, "data": trace_summary(trace)})
    if stats_now:
        events.append({"type": "stats_updated", "data": stats_data()})
    return events
