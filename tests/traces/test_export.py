"""Exports: the four formats, the downloads on the pages, and ``msgtrace export``."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import time

import orjson
import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import AsyncRequestFactory
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from ingest.otlp import SPAN_KINDS as INGEST_SPAN_KINDS
from ingest.otlp import decode_protobuf, to_params
from ingest.writer import spans_ingest
from tests import otlp
from traces import export
from traces.export import FORMATS, SPAN_CSV_HEADER, TRACE_CSV_HEADER, Export, neutralise
from traces.export_views import trace_list_export
from traces.models import Span, Trace

pytestmark = pytest.mark.django_db
MS = 1_000_000
NOW_NS = time.time_ns()
USER_TURN = '[{"role": "user", "parts": [{"type": "text", "content": "Hi ☃"}]}]'
FILENAME = r'attachment; filename="msgtrace-{what}-\d{{8}}T\d{{6}}Z\.{ext}"'


def store(request: ExportTraceServiceRequest) -> None:
    spans_ingest(to_params(decode_protobuf(request.SerializeToString()).rows))


def simple_trace(*, service="svc", minutes_ago=1.0, duration_ms=100, children=1, **attributes):
    """A root span and ``children`` chat spans; returns the trace id."""
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    base = NOW_NS - int(minutes_ago * 60_000 * MS)
    spans = [otlp.span(trace_id, root, "root", base_ns=base, duration_ms=duration_ms, **attributes)]
    for i in range(children):
        spans.append(
            otlp.span(
                trace_id, otlp.new_span_id(), f"chat {i}", parent=root, base_ns=base,
                start_ms=1 + i, duration_ms=1, gen_ai__request__model="gpt-4o",
                gen_ai__usage__input_tokens=10,
            )
        )  # fmt: skip
    store(otlp.request(*spans, service=service))
    return trace_id


def rich_traces() -> list[str]:
    """Traces with everything a span can carry: every kind and status, events, links,
    nested and typed attributes, two resources, three scopes, an orphan, long text."""
    shop, billing = otlp.new_trace_id(), otlp.new_trace_id()
    root, llm, tool, orphan = (otlp.new_span_id() for _ in range(4))
    base = NOW_NS - 5 * 60_000 * MS
    spans = {
        "root": otlp.span(
            shop, root, "invoke_agent shop", base_ns=base, duration_ms=900,
            workflow__name="checkout", gen_ai__operation__name="invoke_agent",
            session__id="sess-1", user__id="user-7",
        ),
        "llm": otlp.span(
            shop, llm, "chat gpt-4o", parent=root, base_ns=base, start_ms=10, duration_ms=300,
            gen_ai__operation__name="chat", gen_ai__request__model="gpt-4o",
            gen_ai__response__model="gpt-4o-2024-08-06", gen_ai__provider__name="openai",
            gen_ai__usage__input_tokens=1200, gen_ai__usage__output_tokens=300,
            gen_ai__usage__cache_read__input_tokens=100, gen_ai__usage__cost=0.0123,
            gen_ai__input__messages=USER_TURN,
            nested={"list": [1, 2.5, True, "x", {"deep": [None, -3]}], "empty": []},
            ratio=0.25, big=2**62, huge=1e300, negative=-7, flag=False, long_text="x" * 300,
        ),
        "tool": otlp.span(
            shop, tool, "=HYPERLINK(\"http://evil\")", parent=root, base_ns=base, start_ms=400,
            duration_ms=50, error="tool failed: +1", gen_ai__operation__name="execute_tool",
        ),
        "orphan": otlp.span(
            shop, orphan, "late child", parent=otlp.new_span_id(), base_ns=base, start_ms=500,
        ),
    }  # fmt: skip
    spans["root"].kind = PbSpan.SPAN_KIND_SERVER
    spans["llm"].kind = PbSpan.SPAN_KIND_CLIENT
    spans["tool"].kind = PbSpan.SPAN_KIND_PRODUCER
    spans["orphan"].kind = PbSpan.SPAN_KIND_UNSPECIFIED
    spans["root"].status.code = 1  # OK, with a message
    spans["root"].status.message = "done"
    link = spans["llm"].links.add(trace_id=bytes.fromhex(billing), trace_state="v=1")
    link.span_id = bytes.fromhex(otlp.new_span_id())
    link.attributes.append(KeyValue(key="link.kind", value=otlp.any_value("follows")))
    blob = spans["llm"].attributes.add(key="blob")
    blob.value.bytes_value = b"\x00\x01binary"
    event = spans["llm"].events.add(name="retry", time_unix_nano=base + 20 * MS)
    event.dropped_attributes_count = 2
    event.attributes.append(KeyValue(key="attempt", value=otlp.any_value(2)))

    request = ExportTraceServiceRequest()
    for service, scopes in (
        ("shop", [("openai.instrumentation", "1.2", ["root", "llm"]), ("tools", "", ["tool"])]),
        ("shop-worker", [("tools", "", ["orphan"])]),
    ):
        resource_spans = request.resource_spans.add()
        for key, value in (("service.name", service), ("host.cpus", 8), ("region", "eu-west")):
            resource_spans.resource.attributes.append(
                KeyValue(key=key, value=otlp.any_value(value))
            )
        for name, version, names in scopes:
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name, scope_spans.scope.version = name, version
            if version:
                scope_spans.scope.attributes.append(
                    KeyValue(key="scope.flag", value=otlp.any_value(True))
                )
            scope_spans.spans.extend(spans[n] for n in names)
    store(request)
    billing_root = otlp.new_span_id()
    store(
        otlp.request(
            otlp.span(billing, billing_root, "charge", base_ns=base + 60_000 * MS, duration_ms=30),
            otlp.span(
                billing, otlp.new_span_id(), "stripe", parent=billing_root,
                base_ns=base + 60_000 * MS, start_ms=1, llm__cost__total=0.5,
            ),
            service="billing",
        )
    )  # fmt: skip
    return [shop, billing]


def exported(fmt: str, queryset=None, **options) -> bytes:
    chunks = Export(queryset if queryset is not None else Trace.objects.all(), **options).chunks(
        fmt
    )
    return b"".join(chunks)


def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode())))


# --- Formats ----------------------------------------------------------------------------------


def test_json_export_is_one_pretty_printed_document_with_every_trace_and_span():
    shop, billing = rich_traces()
    data = exported("json")
    document = orjson.loads(data)
    assert data == orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
    assert document["format"] == "msgtrace-export"
    assert document["version"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", document["exported_at"])
    assert [trace["trace_id"] for trace in document["traces"]] == [shop, billing]  # by start
    assert [len(trace["spans"]) for trace in document["traces"]] == [4, 2]


def test_json_export_traces_and_spans_are_the_apis_objects(client):
    shop, billing = rich_traces()
    document = orjson.loads(exported("json"))
    for trace in document["traces"]:
        # Both read by one parser: PostgreSQL's jsonb prints the double 1e300 as a 301-digit
        # integer, which the API passes on and orjson reads back as the double it was.
        api = orjson.loads(client.get(f"/api/v1/traces/{trace['trace_id']}").content)
        # Keys first: a field added to the API belongs in the export too (traces.export).
        assert trace.keys() == api.keys()
        assert [span.keys() for span in trace["spans"]] == [span.keys() for span in api["spans"]]
        assert trace == api


def test_json_export_of_nothing_is_an_empty_document():
    simple_trace(service="other")
    data = exported("json", Trace.objects.filter(service_name="none"))
    assert orjson.loads(data)["traces"] == []
    assert data.endswith(b'"traces": []\n}\n')


def test_csv_has_one_row_per_trace():
    first = simple_trace(service="a", minutes_ago=2, children=2, workflow__name="wf")
    second = simple_trace(service="b", minutes_ago=1)
    rows = csv_rows(exported("csv"))
    assert rows[0] == list(TRACE_CSV_HEADER)
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert [r["trace_id"] for r in records] == [first, second]
    assert records[0]["service_name"] == "a"
    assert records[0]["workflow_name"] == "wf"
    assert records[0]["span_count"] == "3"
    assert records[0]["input_tokens"] == "20"
    assert records[0]["models"] == "gpt-4o"
    assert records[0]["start_time"].endswith("Z")


def test_csv_spans_has_one_row_per_span_with_its_attributes_as_json():
    shop, billing = rich_traces()
    rows = csv_rows(exported("csv-spans"))
    assert rows[0] == list(SPAN_CSV_HEADER)
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert len(records) == 6
    llm = next(r for r in records if r["name"] == "chat gpt-4o")
    assert llm["trace_id"] == shop
    assert llm["kind"] == "client"
    assert llm["model"] == "gpt-4o-2024-08-06"
    assert llm["input_tokens"] == "1200"
    assert json.loads(llm["attributes"])["ratio"] == 0.25
    assert json.loads(llm["events"])[0]["name"] == "retry"
    assert json.loads(llm["resource_attributes"])["service.name"] == "shop"
    orphan = next(r for r in records if r["name"] == "late child")
    assert orphan["cost"] == ""  # no cost is not a cost of 0
    assert orphan["kind"] == "unspecified"


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("plain", "plain"),
        ("", ""),
        ("a=1", "a=1"),
        (-5, -5),  # a number we format is a number
        (0.5, 0.5),
    ],
)
def test_neutralise_marks_formula_starts_as_text(cell, expected):
    assert neutralise(cell) == expected


def test_csv_cells_that_would_run_as_formulas_are_neutralised():
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    store(
        otlp.request(
            otlp.span(trace_id, root, "=cmd|' /C calc'!A0", workflow__name="+wf",
                      user__id="@admin", session__id="-1+1"),
            otlp.span(trace_id, otlp.new_span_id(), "\tnested", parent=root, error="\r=boom",
                      gen_ai__request__model="=model", openinference__span__kind="=kind"),
            service="=service",
        )
    )  # fmt: skip
    traces = dict(zip(*csv_rows(exported("csv")), strict=True))
    assert traces["root_span_name"] == "'=cmd|' /C calc'!A0"
    assert traces["workflow_name"] == "'+wf"
    assert traces["service_name"] == "'=service"
    assert traces["user_id"] == "'@admin"
    assert traces["session_id"] == "'-1+1"
    assert traces["models"] == "'=model"
    header, *rows = csv_rows(exported("csv-spans"))
    spans = [dict(zip(header, row, strict=True)) for row in rows]
    assert {span["name"] for span in spans} == {"'=cmd|' /C calc'!A0", "'\tnested"}
    assert {span["status_message"] for span in spans} == {"", "'\r=boom"}
    assert {span["model"] for span in spans} == {"", "'=model"}
    assert {span["span_type"] for span in spans} == {"", "'=kind"}
    # No cell of either file starts a formula.
    for data in (exported("csv"), exported("csv-spans")):
        for row in csv_rows(data):
            assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row)


def test_otlp_json_is_a_request_per_line_grouped_by_resource_and_scope():
    shop, billing = rich_traces()
    lines = exported("otlp-json").splitlines()
    assert len(lines) == 1  # six spans: one request
    request = orjson.loads(lines[0])
    groups = [
        (
            {kv["key"]: kv["value"] for kv in rs["resource"]["attributes"]}["service.name"],
            [(ss["scope"]["name"], len(ss["spans"])) for ss in rs["scopeSpans"]],
        )
        for rs in request["resourceSpans"]
    ]
    assert groups == [
        ({"stringValue": "shop"}, [("openai.instrumentation", 2), ("tools", 1)]),
        ({"stringValue": "shop-worker"}, [("tools", 1)]),
        ({"stringValue": "billing"}, [("tests", 2)]),
    ]
    llm = request["resourceSpans"][0]["scopeSpans"][0]["spans"][1]
    assert llm["kind"] == 3  # SPAN_KIND_CLIENT: OTLP/JSON enums are integers
    assert isinstance(llm["startTimeUnixNano"], str)  # 64-bit integers travel as strings
    assert re.fullmatch(r"[0-9a-f]{32}", llm["traceId"])  # ids in hex, not base64
    # The protobuf schema's own JSON parser accepts every field name and type.
    json_format.Parse(lines[0], ExportTraceServiceRequest())


def test_otlp_json_lines_stay_under_the_span_and_byte_limits():
    for _ in range(3):
        simple_trace(children=4)
    rows = list(Export(Trace.objects.all()).span_rows())
    assert [len(orjson.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"])
            for line in export.otlp_requests(rows, max_spans=4)] == [4, 4, 4, 3]  # fmt: skip
    by_bytes = list(export.otlp_requests(rows, max_bytes=1))  # every span alone
    assert len(by_bytes) == 15


def test_an_integer_beyond_64_bits_goes_out_as_the_double_it_was():
    # PostgreSQL's jsonb prints a stored 1e300 with all 301 digits; OTLP has no such int.
    assert export._any_value(10**300) == {"doubleValue": 1e300}
    assert export._any_value(2**63 - 1) == {"intValue": str(2**63 - 1)}


def test_span_kinds_match_what_ingest_stores():
    assert export.SPAN_KINDS == INGEST_SPAN_KINDS


def test_otlp_json_export_is_accepted_by_a_running_msgtrace(server, client):
    shop, billing = rich_traces()
    for line in exported("otlp-json").splitlines():
        status, _, body = server.post(line, content_type="application/json")
        assert status == 200, body
        assert orjson.loads(body) == {}  # no partial success: every span taken
    for trace_id in (shop, billing):
        theirs = server.wait_for_trace(trace_id, spans=4 if trace_id == shop else 2)
        assert theirs == client.get(f"/api/v1/traces/{trace_id}").json()
    # And the running server streams its own export back (ASGI, async iterator).
    status, headers, body = server.request("GET", f"/traces/export?format=json&q=trace:{shop}")
    assert status == 200
    assert headers["Content-Disposition"].startswith('attachment; filename="msgtrace-traces-')
    assert (
        orjson.loads(body)["traces"]
        == orjson.loads(exported("json", Trace.objects.filter(pk=shop)))["traces"]
    )


# --- Paging through the database --------------------------------------------------------------


@pytest.fixture
def small_pages(monkeypatch):
    """Pages of 2 traces and fetches of 3 spans, so a handful of traces crosses every edge."""
    monkeypatch.setattr(Export, "TRACE_PAGE", 2)
    monkeypatch.setattr(Export, "SPAN_BATCH", 3)


@pytest.mark.parametrize("descending", [False, True])
def test_keyset_pages_give_every_trace_once_in_order_even_with_equal_start_times(
    small_pages, descending
):
    ids = [simple_trace(minutes_ago=m, children=c) for m, c in ((5, 0), (4, 1), (3, 5), (2, 1))]
    same_start = [simple_trace(minutes_ago=1, children=0) for _ in range(3)]  # ties
    for trace_id in same_start:
        Trace.objects.filter(pk=trace_id).update(start_ns=NOW_NS)
    expected = [*ids, *sorted(same_start)]
    if descending:
        expected.reverse()
    export_ = Export(Trace.objects.all(), descending=descending)
    got = [(trace["trace_id"], [s["span_id"] for s in spans])
           for trace, spans in export_.traces_with_spans()]  # fmt: skip
    assert [trace_id for trace_id, _ in got] == expected
    stored = {t: sorted(Span.objects.filter(trace_id=t).values_list("span_id", flat=True))
              for t in expected}  # fmt: skip
    assert {trace_id: sorted(spans) for trace_id, spans in got} == stored
    assert (export_.traces, export_.spans) == (7, 1 + 2 + 6 + 2 + 3)


def test_a_trace_bigger_than_a_fetch_is_read_in_pages_in_start_order(small_pages):
    trace_id = otlp.new_trace_id()
    base = NOW_NS - 60_000 * MS
    # Seven spans, three of them starting at the same moment: paging must not skip any.
    starts = [0, 5, 5, 5, 7, 9, 1]
    store(otlp.request(*(otlp.span(trace_id, otlp.new_span_id(), f"s{i}", base_ns=base,
                                   start_ms=start) for i, start in enumerate(starts))))  # fmt: skip
    ((trace, spans),) = Export(Trace.objects.all()).traces_with_spans()
    spans = list(spans)
    assert len(spans) == 7
    assert [(s["start_ns"], s["span_id"]) for s in spans] == sorted(
        Span.objects.filter(trace_id=trace_id).values_list("start_ns", "span_id")
    )


def test_sorted_exports_follow_the_sort_column():
    slow = simple_trace(duration_ms=900, minutes_ago=3)
    fast = simple_trace(duration_ms=5, minutes_ago=2)
    middle = simple_trace(duration_ms=50, minutes_ago=1)
    rows = Export(Trace.objects.all(), order="duration_ns", descending=True).trace_rows()
    assert [row["trace_id"] for row in rows] == [slow, middle, fast]
    with pytest.raises(ValueError):
        Export(Trace.objects.all(), order="name")


# --- Downloads --------------------------------------------------------------------------------


def test_trace_page_offers_json_and_csv_downloads(client):
    trace_id = simple_trace()
    text = client.get(f"/traces/{trace_id}").content.decode()
    assert f'href="/traces/{trace_id}/export.json" download' in text
    assert f'href="/traces/{trace_id}/export.csv" download' in text
    assert "Export JSON" in text and "Export CSV" in text


def test_trace_json_download_is_our_document_for_that_trace(client):
    trace_id = simple_trace(children=2)
    simple_trace()  # not in it
    response = client.get(f"/traces/{trace_id}/export.json")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/json"
    assert re.fullmatch(
        FILENAME.format(what=f"trace-{trace_id}", ext="json"), response["Content-Disposition"]
    )
    document = orjson.loads(b"".join(response.streaming_content))
    assert [t["trace_id"] for t in document["traces"]] == [trace_id]
    assert len(document["traces"][0]["spans"]) == 3


def test_trace_csv_download_is_its_spans(client):
    trace_id = simple_trace(children=2)
    response = client.get(f"/traces/{trace_id.upper()}/export.csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(
        FILENAME.format(what=f"trace-{trace_id}", ext="csv"), response["Content-Disposition"]
    )
    header, *rows = csv_rows(b"".join(response.streaming_content))
    assert header == list(SPAN_CSV_HEADER)
    assert {row[0] for row in rows} == {trace_id} and len(rows) == 3


@pytest.mark.parametrize(
    "path",
    ["/traces/0123456789abcdef0123456789abcdef/export.json", "/traces/{id}/export.xml",
     "/traces/{id}/export.csv-spans", "/traces/not-an-id/export.json"],
)  # fmt: skip
def test_an_unknown_trace_or_file_type_is_a_404(client, path):
    trace_id = simple_trace()
    assert client.get(path.format(id=trace_id)).status_code == 404


def test_trace_download_reads_three_queries(client, django_assert_num_queries):
    trace_id = simple_trace(children=3)
    with django_assert_num_queries(3):  # the trace, its row in a page, its spans
        response = client.get(f"/traces/{trace_id}/export.json")
        b"".join(response.streaming_content)


def test_list_export_takes_every_match_of_the_filters_query_and_sort_not_one_page(client):
    wanted = [simple_trace(service="shop", duration_ms=10 + i, children=0) for i in range(55)]
    simple_trace(service="shop", duration_ms=5000, children=0)  # the query drops it
    simple_trace(service="other", duration_ms=20, children=0)  # the filter drops it
    params = {"service": "shop", "q": "duration:<1s", "sort": "-duration", "page": "2"}
    response = client.get("/traces/export", {**params, "format": "csv"})
    assert response.status_code == 200
    assert re.fullmatch(FILENAME.format(what="traces", ext="csv"), response["Content-Disposition"])
    header, *rows = csv_rows(b"".join(response.streaming_content))
    assert [row[0] for row in rows] == list(reversed(wanted))  # all 55, longest first


@pytest.mark.parametrize(
    ("fmt", "what", "ext", "content_type"),
    [
        ("json", "traces", "json", "application/json"),
        ("csv", "traces", "csv", "text/csv; charset=utf-8"),
        ("csv-spans", "spans", "csv", "text/csv; charset=utf-8"),
        ("otlp-json", "otlp", "jsonl", "application/x-ndjson"),
    ],
)
def test_list_export_formats_name_their_files(client, fmt, what, ext, content_type):
    simple_trace()
    response = client.get("/traces/export", {"format": fmt})
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response["Cache-Control"] == "no-store"
    assert re.fullmatch(FILENAME.format(what=what, ext=ext), response["Content-Disposition"])
    data = b"".join(response.streaming_content)
    if fmt == "json":  # it carries the moment it was made
        assert orjson.loads(data)["traces"] == orjson.loads(exported(fmt))["traces"]
    else:
        assert data == exported(fmt)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "format must be one of json, csv, csv-spans, otlp-json"),
        ({"format": "xml"}, "format must be one of"),
        ({"format": "csv", "q": "duration:abc"}, 'Search: "abc" is not a duration'),
        ({"format": "csv", "since": "last tuesday"}, "since: must be an ISO 8601"),
        ({"format": "csv", "min_duration": "slow"}, "min_duration:"),
        ({"format": "csv", "sort": "name"}, "sort must be one of"),
        ({"format": "csv", "page": "0"}, "page must be a whole number"),
    ],
)
def test_list_export_refuses_bad_parameters_with_a_400_saying_which(client, params, message):
    simple_trace()
    response = client.get("/traces/export", params)
    assert response.status_code == 400
    assert not response.streaming
    assert message in response.content.decode()


def test_list_export_menu_carries_the_current_filters(client):
    simple_trace(service="shop")
    page = client.get("/traces", {"service": "shop", "q": "error:false", "page": "1"})
    text = page.content.decode()
    for fmt in FORMATS:
        assert f'href="/traces/export?service=shop&amp;q=error%3Afalse&amp;format={fmt}"' in text
    # A filter change swaps only the results, and the menu with them (out of band).
    fragment = client.get("/traces", {"service": "other"}, HTTP_HX_REQUEST="true")
    text = fragment.content.decode()
    assert '<div id="export-menu" hx-swap-oob="true">' in text
    assert 'href="/traces/export?service=other&amp;format=csv"' in text
    broken = client.get("/traces", {"q": "duration:"}, HTTP_HX_REQUEST="true").content.decode()
    assert 'aria-disabled="true" title="These filters could not be applied' in broken


def test_list_export_under_asgi_streams_from_an_async_iterator():
    trace_id = simple_trace(children=2)
    request = AsyncRequestFactory().get("/traces/export", {"format": "csv-spans"})
    response = trace_list_export(request)
    assert response.is_async  # a sync iterator would be collected whole before sending

    async def body() -> bytes:
        return b"".join([chunk async for chunk in response])

    header, *rows = csv_rows(async_to_sync(body)())
    assert {row[0] for row in rows} == {trace_id} and len(rows) == 3


# --- msgtrace export --------------------------------------------------------------------------


def run_export(*args: str, stdout: io.StringIO | None = None) -> str:
    out = stdout or io.StringIO()
    call_command("export", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_export_command_writes_each_format_to_a_file(tmp_path, fmt):
    rich_traces()
    path = tmp_path / f"out.{fmt}"
    report = run_export("--format", fmt, "--output", str(path))
    assert report.startswith(f"Exported 2 traces (6 spans) as {fmt} to {path}: ")
    data = path.read_bytes()
    if fmt == "json":
        assert orjson.loads(data)["traces"] == orjson.loads(exported("json"))["traces"]
    else:
        assert data == exported(fmt)


def test_export_command_writes_json_to_standard_output_and_reports_on_stderr(capsys):
    trace_id = simple_trace()
    document = json.loads(run_export())
    assert [t["trace_id"] for t in document["traces"]] == [trace_id]
    assert "Exported 1 trace (2 spans) as json to standard output" in capsys.readouterr().err


def test_export_command_gzips_a_file_named_gz(tmp_path):
    simple_trace()
    path = tmp_path / "traces.jsonl.gz"
    run_export("--format", "otlp-json", "--output", str(path))
    assert gzip.decompress(path.read_bytes()) == exported("otlp-json")


def test_export_command_selects_by_query_since_and_until():
    recent = simple_trace(service="shop", minutes_ago=30)
    yesterday = simple_trace(service="shop", minutes_ago=26 * 60)
    old = simple_trace(service="shop", minutes_ago=10 * 24 * 60)
    other = simple_trace(service="other", minutes_ago=30)

    def ids(*args: str) -> set[str]:
        return {row[0] for row in csv_rows(run_export("--format", "csv", *args).encode())[1:]}

    assert ids() == {recent, yesterday, old, other}
    assert ids("--query", "service:shop") == {recent, yesterday, old}
    assert ids("--since", "2d") == {recent, yesterday, other}
    assert ids("--until", "1d") == {yesterday, old}
    assert ids("--since", "7d", "--until", "24h", "--query", "service:shop") == {yesterday}
    day = time.strftime("%Y-%m-%d", time.gmtime(NOW_NS / 1e9 - 5 * 86400))
    assert ids("--since", day) == {recent, yesterday, other}
    assert ids("--until", f"{day}T00:00:00Z") == {old}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (["--query", "duration:abc"], '--query: "abc" is not a duration'),
        (["--query", "nosuchfield:1"], '--query: unknown field "nosuchfield"'),
        (["--since", "yesterday"], '--since: "yesterday" is not a time'),
        (["--until", "2026-13-45"], '--until: "2026-13-45" is not a time'),
        (["--since", "1h", "--until", "2h"], "is not before --until"),
        (["--output", "/nonexistent/dir/out.json"], "--output: cannot write"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_export_command_refuses_bad_options_clearly(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        run_export(*args)


def test_export_command_refuses_a_directory_as_output(tmp_path):
    with pytest.raises(CommandError, match="--output: cannot write .*: Is a directory"):
        run_export("--output", str(tmp_path))


def test_a_failed_export_leaves_no_partial_file(tmp_path, monkeypatch):
    simple_trace()

    def failing(self, format_name):
        yield b'{"format": '
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Export, "chunks", failing)
    path = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        run_export("--output", str(path))
    assert not path.exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_export_command_shows_progress_on_a_terminal_only(tmp_path, monkeypatch):
    simple_trace(children=3)
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    run_export("--output", str(tmp_path / "a.json"))
    assert re.search(r"\r100% \[#+\] 4/4 spans", terminal.getvalue())
    # Data to the terminal: the bar would mix with it, so none.
    terminal.truncate(0)
    run_export("--format", "csv", stdout=_Terminal())
    assert "%" not in terminal.getvalue()
    # Not a terminal: no bar.
    plain = io.StringIO()
    monkeypatch.setattr("sys.stderr", plain)
    run_export("--output", str(tmp_path / "b.json"))
    assert "\r" not in plain.getvalue()
