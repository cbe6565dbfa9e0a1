"""The attribute index: what ingest puts in it, what deletes take out, and that queries
give the same traces with its help as without (on PostgreSQL, which has no index, the
same tests check the plain path)."""

from __future__ import annotations

import pytest
from django.db import connection

from ingest.otlp import decode_protobuf, prepare, to_params
from ingest.writer import spans_ingest
from search import attribute_index
from search.compiler import compile_query
from search.terms import RESOURCE_SCOPE, SPAN_SCOPE, term, token
from tests import otlp
from traces.models import Trace
from traces.services import traces_delete

pytestmark = pytest.mark.django_db
sqlite_only = pytest.mark.skipif(
    "not __import__('search.attribute_index').attribute_index.enabled()",
    reason="the index exists on SQLite only; PostgreSQL runs the exact queries alone",
)


def store(*spans, service="svc"):
    spans_ingest(to_params(decode_protobuf(otlp.body(*spans, service=service)).rows))


def one_span_trace(service="svc", **attributes) -> str:
    trace_id = otlp.new_trace_id()
    store(otlp.span(trace_id, otlp.new_span_id(), "work", **attributes), service=service)
    return trace_id


def found(query: str) -> set[str]:
    return set(Trace.objects.filter(compile_query(query)).values_list("pk", flat=True))


def indexed(scope, key, value) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT trace_id FROM {attribute_index.TABLE} WHERE {attribute_index.TABLE} MATCH %s",
            [token(term(scope, key, value))],
        )
        return {row[0] for row in cursor.fetchall()}


def test_rare_and_common_values_find_exactly_their_traces():
    rare = one_span_trace(**{"user.id": "user-4242", "tier": "gold"})
    others = [one_span_trace(**{"user.id": f"user-{n}", "tier": "gold"}) for n in range(5)]
    assert found("attr.user.id:user-4242") == {rare}
    assert found('attr.user.id:"USER-4242"') == {rare}  # any case
    assert found("attr.tier:gold") == {rare, *others}
    assert found("-attr.user.id:user-4242") == set(others)
    assert found("attr.user.id:user-4242 OR attr.user.id:user-1") == {rare, others[1]}
    assert found("attr.user.id:nobody") == set()


def test_values_the_index_skips_are_still_found_exactly():
    long_value = "x" * 300  # longer than the index keeps
    long_id = one_span_trace(**{"note": long_value})
    number_id = one_span_trace(**{"retries": 3, "flag": True})
    assert found(f'attr.note:"{long_value}"') == {long_id}
    assert found("attr.retries:3") == {number_id}
    assert found("attr.flag:true") == {number_id}
    assert found("attr.note:x*") == {long_id}


def test_resource_attributes_are_indexed_apart_from_span_attributes():
    in_resource = one_span_trace(service="billing")
    in_span = one_span_trace(**{"service.name": "billing"})
    assert found("resource.service.name:billing") == {in_resource}
    assert found("attr.service.name:billing") == {in_span}


def test_a_trace_sent_in_two_batches_is_found_by_the_values_of_both():
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    store(otlp.span(trace_id, root, "root", **{"step": "first"}))
    store(otlp.span(trace_id, otlp.new_span_id(), "child", parent=root, **{"step": "second"}))
    assert found("attr.step:first") == found("attr.step:second") == {trace_id}


@sqlite_only
def test_ingest_writes_terms_computed_by_the_decoder():
    trace_id = otlp.new_trace_id()
    body = otlp.body(otlp.span(trace_id, otlp.new_span_id(), "s", **{"user.id": "U-9"}))
    prepared = prepare(body, gzipped=False, json=False, max_bytes=10**6, limit=10**5,
                       index_terms=True)  # fmt: skip
    ((indexed_trace, document),) = prepared.index_documents
    assert indexed_trace == trace_id
    assert token(term(SPAN_SCOPE, "user.id", "u-9")) in document.split()
    assert token(term(RESOURCE_SCOPE, "service.name", "test-service")) in document.split()
    spans_ingest(prepared.params, prepared.index_documents)
    assert indexed(SPAN_SCOPE, "user.id", "U-9") == {trace_id}


@sqlite_only
def test_the_index_narrows_the_sql_to_the_traces_that_hold_the_value():
    rare = one_span_trace(**{"user.id": "user-4242"})
    sql = str(Trace.objects.filter(compile_query("attr.user.id:user-4242")).query)
    assert f"IN ({rare})" in sql or f"IN ('{rare}')" in sql


@sqlite_only
def test_a_value_in_too_many_traces_is_not_listed_and_still_matches(monkeypatch):
    monkeypatch.setattr(attribute_index, "MAX_PREFILTER_TRACES", 2)
    ids = {one_span_trace(**{"tier": "gold"}) for _ in range(3)}
    assert attribute_index.traces_with(SPAN_SCOPE, "tier", "gold") is None
    assert found("attr.tier:gold") == ids


@sqlite_only
def test_deleting_traces_removes_their_index_documents():
    kept = one_span_trace(**{"user.id": "u-1"})
    gone = one_span_trace(**{"user.id": "u-1"})
    traces_delete(trace_ids=[gone, "not-a-trace-id"])
    assert indexed(SPAN_SCOPE, "user.id", "u-1") == {kept}


@sqlite_only
def test_rebuild_indexes_spans_stored_without_the_index():
    trace_id = one_span_trace(**{"user.id": "u-7"})
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {attribute_index.TABLE}")  # noqa: S608
    assert found("attr.user.id:u-7") == set()  # an incomplete index would lose traces...
    assert attribute_index.index_rebuild() == 1
    assert found("attr.user.id:u-7") == {trace_id}  # ...which is why the migration fills it
