"""An inverted index from attribute values to traces, so `attr.k:v` need not read every span.

Without it, a query for a rare value (`attr.user.id:user-4242`) reads the JSON of every
stored span: 2.3 s on 1,000,000 spans with SQLite. With it, the query first asks the
index which traces hold that value and looks only at those.

SQLite only: an FTS5 table with one document per (trace, ingest batch) whose tokens are
the terms of ``search.terms`` plus a token naming the trace. FTS5 appends in sorted
segments, so a batch costs ~6 µs per span where a B-tree of (term, trace) rows cost
~55 µs. PostgreSQL runs the same queries without it, with the same results (the index
only narrows; the exact condition always runs).

The table is written in the ingest transaction (``index_add``), cleared with its traces
(``index_delete``), and filled for existing data by migration ``search.0002``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import orjson
from django.db import connection
from django.db.models import Q

from search.terms import (
    RESOURCE_SCOPE,
    SPAN_SCOPE,
    add_terms,
    documents,
    term,
    token,
    trace_token,
)

TABLE = "search_attribute_index"
CREATE_SQL = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5(trace_id UNINDEXED, terms, detail=none)"  # noqa: E501
)
# Past this many traces holding a value, reading their ids costs more than it saves:
# the value is common, and the list finds a page of it by scanning newest first.
MAX_PREFILTER_TRACES = 5_000
_CHUNK = 400
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def enabled() -> bool:
    return connection.vendor == "sqlite"


def index_add(rows: Sequence[tuple[str, str]]) -> None:
    """Add documents (``search.terms.documents``) of a batch; runs in the ingest transaction.

    A trace sent over several batches gets a document per batch: no read-and-merge on the
    write path, and a query's DISTINCT folds them.
    """
    if rows:
        with connection.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {TABLE} (trace_id, terms) VALUES (%s, %s)", rows)  # noqa: S608


def index_delete(trace_ids: Iterable[str]) -> None:
    # Stored ids are 32 hex digits, which makes them plain FTS tokens; anything else
    # cannot have been indexed, and must not reach the MATCH syntax.
    ids = sorted(trace_id for trace_id in trace_ids if _TRACE_ID.fullmatch(trace_id))
    with connection.cursor() as cursor:
        for start in range(0, len(ids), _CHUNK):
            match = " OR ".join(trace_token(trace_id) for trace_id in ids[start : start + _CHUNK])
            cursor.execute(
                f"DELETE FROM {TABLE} WHERE rowid IN "  # noqa: S608
                f"(SELECT rowid FROM {TABLE} WHERE {TABLE} MATCH %s)",
                [match],
            )


def documents_from_params(
    params: Iterable[tuple], columns: tuple[str, ...]
) -> list[tuple[str, str]]:
    """Documents of span rows already serialised for SQL (imports, tests): parses their JSON."""
    trace_at, attributes_at = columns.index("trace_id"), columns.index("attributes")
    resource_at = columns.index("resource_attributes")
    found: dict[str, set[int]] = {}
    resources: dict[str, set[int]] = {}
    for row in params:
        terms = found.setdefault(row[trace_at], set())
        add_terms(terms, SPAN_SCOPE, orjson.loads(row[attributes_at]))
        resource_text = row[resource_at]
        if resource_text not in resources:
            resources[resource_text] = set()
            add_terms(resources[resource_text], RESOURCE_SCOPE, orjson.loads(resource_text))
        terms |= resources[resource_text]
    return documents(found)


def traces_with(scope: str, key: str, value: str) -> Q | None:
    """A condition narrowing traces to those that may hold ``key = value`` (any case).

    None when the index cannot help: not SQLite, or the value is in so many traces that
    listing them costs more than scanning. The caller keeps its exact condition.
    """
    if not enabled():
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT trace_id FROM {TABLE} WHERE {TABLE} MATCH %s LIMIT %s",  # noqa: S608
            [token(term(scope, key, value)), MAX_PREFILTER_TRACES + 1],
        )
        ids = [row[0] for row in cursor.fetchall()]
    if len(ids) > MAX_PREFILTER_TRACES:
        return None
    return Q(pk__in=ids)


def index_rebuild(batch_traces: int = 500) -> int:
    """Index every stored span again (the migration that creates the index; repairs)."""
    from traces.models import Span, Trace

    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE}")  # noqa: S608
    ids = Trace.objects.order_by("pk").values_list("pk", flat=True)
    last, indexed = "", 0
    while batch := list(ids.filter(pk__gt=last)[:batch_traces]):
        last = batch[-1]
        spans = Span.objects.filter(trace_id__in=batch).values_list(
            "trace_id", "attributes", "resource_attributes"
        )
        terms: dict[str, set[int]] = {}
        for trace_id, attributes, resource in spans.iterator(chunk_size=2000):
            found = terms.setdefault(trace_id, set())
            add_terms(found, SPAN_SCOPE, attributes)
            add_terms(found, RESOURCE_SCOPE, resource)
        index_add(documents(terms))
        indexed += len(batch)
    return indexed
