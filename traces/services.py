"""Writes that touch several models."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime

import orjson
from django.db import connection, transaction

from search import attribute_index
from traces import broadcast, rollups
from traces.models import Span, Trace
from traces.sql import upsert_sql

# SQLite allows 32766 parameters per statement; stay far below it.
_CHUNK = 500

_TRACE_COLUMNS = (
    "trace_id", "service_name", "root_span_name", "workflow_name", "start_ns", "end_ns",
    "duration_ns", "span_count", "error_count", "input_tokens", "output_tokens",
    "total_tokens", "cost", "unpriced_count", "model_names", "session_id", "user_id", "first_seen",
    "last_updated",
)  # fmt: skip


def _chunks(items: list[str]):
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


# Raw SQL: this runs inside every ingest transaction, where compiling three ORM queries
# cost more than running them. Names come from the models, never from request data.
_SPAN_TABLE = Span._meta.db_table
_SUMMARY_SQL = f"""
    SELECT trace_id, MIN(start_ns), MAX(end_ns), COUNT(*),
           SUM(CASE WHEN is_error THEN 1 ELSE 0 END),
           SUM(input_tokens), SUM(output_tokens), SUM(total_tokens), SUM(cost),
           SUM(CASE WHEN cost_source = 'unpriced' THEN 1 ELSE 0 END),
           MIN(CASE WHEN workflow_name <> '' THEN workflow_name END),
           MIN(CASE WHEN session_id <> '' THEN session_id END),
           MIN(CASE WHEN user_id <> '' THEN user_id END),
           MIN(service_name)
    FROM {_SPAN_TABLE} WHERE trace_id IN ({{marks}}) GROUP BY trace_id
"""  # noqa: S608
_ROOTS_SQL = f"""
    SELECT trace_id, name, service_name, workflow_name, module_name
    FROM {_SPAN_TABLE} WHERE trace_id IN ({{marks}}) AND parent_span_id = ''
    ORDER BY start_ns, span_id
"""  # noqa: S608
_MODELS_SQL = f"""
    SELECT DISTINCT trace_id, model
    FROM {_SPAN_TABLE} WHERE trace_id IN ({{marks}}) AND model <> ''
"""  # noqa: S608
_SUMMARY_KEYS = (
    "start", "end", "spans", "errors", "input", "output", "total", "cost_sum", "unpriced",
    "workflow", "session", "user", "any_service",
)  # fmt: skip
_ROOT_KEYS = ("name", "service_name", "workflow_name", "module_name")


def _summaries(trace_ids: list[str]) -> dict[str, dict]:
    """Each trace's summary, computed from all of its stored spans."""
    marks = ", ".join(["%s"] * len(trace_ids))
    with connection.cursor() as cursor:
        cursor.execute(_SUMMARY_SQL.format(marks=marks), trace_ids)
        summaries = {row[0]: dict(zip(_SUMMARY_KEYS, row[1:], strict=True)) for row in cursor}
        cursor.execute(_ROOTS_SQL.format(marks=marks), trace_ids)
        roots: dict[str, dict] = {}
        for row in cursor:
            roots.setdefault(row[0], dict(zip(_ROOT_KEYS, row[1:], strict=True)))
        cursor.execute(_MODELS_SQL.format(marks=marks), trace_ids)
        models: dict[str, set[str]] = defaultdict(set)
        for trace_id, model in cursor:
            models[trace_id].add(model)
    for trace_id, summary in summaries.items():
        summary["root"] = roots.get(trace_id)
        summary["models"] = sorted(models.get(trace_id, ()))
    return summaries


def _workflow(summary: dict) -> str:
    """msgflux.workflow.name -> workflow.name (any span, root first) -> root module -> root name."""
    root = summary["root"]
    if root and root["workflow_name"]:
        return root["workflow_name"]
    if summary["workflow"]:
        return summary["workflow"]
    if root:
        return root["module_name"] or root["name"][:255]
    return ""


def traces_claim(*, trace_ids: Collection[str], now: datetime) -> set[str]:
    """Create any missing summary rows and lock them all until commit; return the new ids.

    Several processes may write spans of one trace at once (PostgreSQL behind a load
    balancer). Each takes its traces' row locks before inserting spans, so the last writer
    recomputes the summary after the others committed and sees all of their spans.
    """
    ids = sorted(trace_ids)  # one lock order everywhere: no deadlocks
    existing: set[str] = set()
    for chunk in _chunks(ids):
        existing.update(Trace.objects.filter(trace_id__in=chunk).values_list("pk", flat=True))
    stamp = connection.ops.adapt_datetimefield_value(now)
    placeholder = (0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0, "[]", "", "", stamp, stamp)
    rows = [(trace_id, "", "", "", *placeholder) for trace_id in ids]
    # ON CONFLICT DO UPDATE (not DO NOTHING) so that an existing row is locked too.
    sql = upsert_sql(
        Trace,
        _TRACE_COLUMNS,
        conflict=("trace_id",),
        keep=[name for name in _TRACE_COLUMNS if name != "last_updated"],
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
    return set(ids) - existing


def traces_refresh(*, trace_ids: Collection[str], now: datetime) -> None:
    """Recompute the summary rows of these traces from their spans.

    Recomputing from the span table (rather than adding deltas) keeps the summaries exact
    when spans arrive over many requests, out of order, children first, or twice.
    """
    rows = []
    stamp = connection.ops.adapt_datetimefield_value(now)
    for chunk in _chunks(sorted(trace_ids)):
        for trace_id, summary in _summaries(chunk).items():
            root = summary["root"]
            rows.append(
                (
                    trace_id,
                    (root["service_name"] if root else summary["any_service"]) or "",
                    root["name"] if root else "",
                    _workflow(summary),
                    summary["start"],
                    summary["end"],
                    summary["end"] - summary["start"],
                    summary["spans"],
                    summary["errors"],
                    summary["input"] or 0,
                    summary["output"] or 0,
                    summary["total"] or 0,
                    summary["cost_sum"] or 0.0,
                    summary["unpriced"] or 0,
                    orjson.dumps(summary["models"]).decode(),
                    summary["session"] or "",
                    summary["user"] or "",
                    stamp,
                    stamp,
                )
            )
    sql = upsert_sql(Trace, _TRACE_COLUMNS, conflict=("trace_id",), keep=("first_seen",))
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def traces_delete(*, trace_ids: Collection[str]) -> int:
    """Delete traces and all of their spans; return how many traces went."""
    ids = list(trace_ids)
    deleted = 0
    with transaction.atomic():
        for chunk in _chunks(ids):
            rollups.hours_forget(rollups.trace_hours(chunk))
            Span.objects.filter(trace_id__in=chunk).delete()
            deleted += Trace.objects.filter(trace_id__in=chunk).delete()[0]
            if attribute_index.enabled():
                attribute_index.index_delete(chunk)
        transaction.on_commit(lambda: broadcast.traces_deleted(trace_ids=ids))
    return deleted
