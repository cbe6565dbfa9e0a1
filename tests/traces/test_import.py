"""``msgtrace import``: every format it reads, the round trip, and every bad file."""

from __future__ import annotations

import gzip
import io
import re

import orjson
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests import otlp
from tests.traces.test_export import exported, rich_traces, simple_trace
from traces import export
from traces.models import Span, Trace
from traces.services import traces_delete

pytestmark = pytest.mark.django_db
IMPORT = "traces.management.commands.import"


def run_import(*files: str, verbosity: int = 1) -> str:
    out = io.StringIO()
    call_command("import", *files, stdout=out, verbosity=verbosity)
    return out.getvalue()


def snapshot() -> tuple[dict, dict]:
    """Every column of every Trace and Span row, but the row id and the arrival times."""
    skip = {"id", "first_seen", "last_updated"}

    def columns(row, model) -> dict:
        return {f.attname: getattr(row, f.attname) for f in model._meta.concrete_fields
                if f.attname not in skip}  # fmt: skip

    traces = {trace.pk: columns(trace, Trace) for trace in Trace.objects.all()}
    spans = {(s.trace_id, s.span_id): columns(s, Span) for s in Span.objects.all()}
    return traces, spans


def purge() -> None:
    traces_delete(trace_ids=list(Trace.objects.values_list("pk", flat=True)))
    assert not Span.objects.exists()


def write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def short_attributes(settings):
    """A low cut-off, so the data has cut attributes and their ``msgtrace.truncated`` note."""
    settings.MSGTRACE_MAX_ATTRIBUTE_CHARS = 100


# --- The round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "otlp-json"])
def test_export_purge_import_gives_back_every_field_of_every_trace_and_span(
    tmp_path, short_attributes, fmt
):
    rich_traces()
    for minutes in (1, 2, 3):
        simple_trace(minutes_ago=minutes, children=minutes)
    before = snapshot()
    assert Span.objects.get(name="chat gpt-4o").attributes["msgtrace.truncated"] == {
        "long_text": 300
    }
    path = tmp_path / f"export.{fmt}"
    call_command("export", "--format", fmt, "--output", str(path), stdout=io.StringIO())
    purge()
    report = run_import(str(path))
    assert report.startswith("Imported 15 spans of 5 traces (5 new) from 1 file in ")
    after = snapshot()
    assert after[0].keys() == before[0].keys()
    assert after[1].keys() == before[1].keys()
    for key, row in before[0].items():
        assert after[0][key] == row, key
    for key, row in before[1].items():
        assert after[1][key] == row, key


def test_importing_twice_stores_each_span_once(tmp_path):
    simple_trace(children=2)
    before = snapshot()
    path = write(tmp_path, "a.jsonl", exported("otlp-json"))
    run_import(path, path)
    assert snapshot() == before


# --- What it reads ----------------------------------------------------------------------------


def test_import_reads_gzip_by_its_magic_bytes_whatever_the_name(tmp_path):
    simple_trace(children=2)
    data = exported("json")
    purge()
    run_import(write(tmp_path, "export.json", gzip.compress(data)))
    assert Span.objects.count() == 3


def test_import_reads_standard_input(monkeypatch):
    trace_id = simple_trace(children=1)
    data = exported("otlp-json")
    purge()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(gzip.compress(data))))
    assert run_import("-").startswith("Imported 2 spans of 1 trace (1 new) from 1 file")
    assert Trace.objects.get().pk == trace_id


def test_import_reads_an_otlp_protobuf_file(tmp_path):
    trace_id, root = otlp.new_trace_id(), otlp.new_span_id()
    body = otlp.body(
        otlp.span(trace_id, root, "root"),
        otlp.span(trace_id, otlp.new_span_id(), "child", parent=root, error="boom"),
        service="from-protobuf",
    )
    compressed = gzip.compress(body)
    run_import(write(tmp_path, "batch.pb", body), write(tmp_path, "batch.pb.gz", compressed))
    trace = Trace.objects.get()
    assert (trace.pk, trace.span_count, trace.error_count) == (trace_id, 2, 1)
    assert trace.service_name == "from-protobuf"


def test_import_reads_otlp_json_lines_written_by_others(tmp_path):
    trace_id = otlp.new_trace_id()
    lines = [
        {"resourceSpans": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "hand-made"}}]},
            "scopeSpans": [{"scope": {"name": "x"}, "spans": [
                {"traceId": trace_id, "spanId": "0102030405060708", "name": "a",
                 "startTimeUnixNano": "1700000000000000000",
                 "endTimeUnixNano": "1700000000500000000", "kind": "SPAN_KIND_SERVER"}]}]}]},
        {},
        {"resource_spans": [{"scope_spans": [{"spans": [
            {"trace_id": trace_id, "span_id": "0102030405060709", "parent_span_id":
             "0102030405060708", "name": "b", "start_time_unix_nano": 1700000000100000000,
             "end_time_unix_nano": 1700000000200000000}]}]}]},
    ]  # fmt: skip
    text = b"\r\n".join(orjson.dumps(line) for line in lines) + b"\n\n"
    run_import(write(tmp_path, "spans.jsonl", b"\xef\xbb\xbf" + text))
    trace = Trace.objects.get()
    assert (trace.span_count, trace.root_span_name, trace.service_name) == (2, "a", "hand-made")
    assert Span.objects.get(name="a").kind == "server"


def test_import_reads_one_pretty_printed_otlp_request_entry_by_entry(tmp_path, monkeypatch):
    simple_trace(children=3)
    simple_trace(children=2)
    expected = snapshot()[1].keys()
    request = orjson.loads(exported("otlp-json"))
    purge()
    monkeypatch.setattr(export._JSONText, "CHUNK", 64)  # values cut across many reads
    run_import(write(tmp_path, "request.json", orjson.dumps(request, option=orjson.OPT_INDENT_2)))
    assert snapshot()[1].keys() == expected


@pytest.mark.parametrize("chunk", [1, 7, 1024 * 1024])
def test_import_reads_our_document_pretty_or_compact_however_cut(tmp_path, monkeypatch, chunk):
    rich_traces()
    before = snapshot()
    document = exported("json")
    compact = orjson.dumps(orjson.loads(document))
    purge()
    monkeypatch.setattr(export._JSONText, "CHUNK", chunk)
    run_import(write(tmp_path, "pretty.json", document))
    assert snapshot()[1] == before[1]
    purge()
    run_import(write(tmp_path, "compact.json", compact))
    assert snapshot()[1] == before[1]


def test_an_empty_file_or_export_imports_nothing(tmp_path):
    empty = orjson.dumps({"format": "msgtrace-export", "version": 1, "traces": []})
    report = run_import(write(tmp_path, "empty", b""), write(tmp_path, "blank", b" \n"),
                        write(tmp_path, "none.json", empty))  # fmt: skip
    assert report.startswith("Imported 0 spans of 0 traces (0 new) from 3 files")


def test_import_reports_each_file_when_asked(tmp_path):
    simple_trace()
    path = write(tmp_path, "a.jsonl", exported("otlp-json"))
    assert f"{path}: 2 spans" in run_import(path, verbosity=2)
    assert run_import(path, verbosity=0) == ""


# --- Bad files --------------------------------------------------------------------------------


def _good_line() -> bytes:
    return exported("otlp-json").rstrip(b"\n")


BAD_FILES = {
    "csv": (b"trace_id,span_id\n1,2\n", "not OTLP/JSON, a msgtrace JSON export or OTLP protobuf"),
    "array": (b"[1, 2]", "it starts with '[1, 2]'"),
    "broken line": (b'{"resourceSpans": [\n{"x": }', "line 2: not valid JSON"),
    "not an object": (b"{}\n7\n", "line 2: expected a JSON object, found '7'"),
    "other object": (b'{"hello": 1}\n', "line 1: neither an OTLP/JSON ExportTraceServiceRequest"),
    "wrong format": (b'{"format": "other", "traces": []}', 'not in a document with "format"'),
    "newer version": (
        b'{"format": "msgtrace-export", "version": 9, "traces": []}',
        "export version 9 is newer than this msgtrace reads (1)",
    ),
    "traces not a list": (
        b'{"format": "msgtrace-export", "version": 1, "traces": 5}',
        "traces must be a list",
    ),
    "span without id": (
        b'{"format": "msgtrace-export", "version": 1, "traces": [{"trace_id": '
        b'"0123456789abcdef0123456789abcdef", "spans": [{"name": "x"}]}]}',
        "line 1, trace #1 ('0123456789abcdef0123456789abcdef'): a span without span_id, "
        "start_time_unix_nano, end_time_unix_nano",
    ),
    "bad attributes": (
        b'{"format": "msgtrace-export", "version": 1, "traces": [{"trace_id": "01", '
        b'"spans": [{"span_id": "0102030405060708", "start_time_unix_nano": 1, '
        b'"end_time_unix_nano": 2, "attributes": [1]}]}]}',
        "attributes must be an object, not list",
    ),
    "bad trace id": (
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", '
        b'"spanId": "0102030405060708"}]}]}]}\n',
        "line 1: 1 invalid span(s): traceId 'zz' is not 32 hex digits",
    ),
    "bad resourceSpans": (b'{"resourceSpans": [7]}', "resourceSpans entries must be objects"),
    "protobuf garbage": (b"\x0a\x05\x01\x02", "not a valid protobuf ExportTraceServiceRequest"),
    "broken gzip": (gzip.compress(b'{"resourceSpans": []}')[:-12], "cannot read it"),
    "unfinished document": (
        b'{\n  "format": "msgtrace-export",\n  "version": 1,\n  "traces": [\n',
        "line 5: not valid JSON: Expecting value",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_a_command_error_naming_it_and_the_problem(tmp_path, case):
    data, message = BAD_FILES[case]
    path = write(tmp_path, "bad-file", data)
    with pytest.raises(CommandError) as raised:
        run_import(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)
    assert str(raised.value).endswith("Nothing from it was stored.")
    assert not Span.objects.exists()


def test_errors_name_the_right_line_however_the_file_was_read(tmp_path, monkeypatch):
    monkeypatch.setattr(export._JSONText, "CHUNK", 100)  # many reads, lines cut across them
    lines = [b"{}"] * 2000 + [b"", b'{"resourceSpans": [}']
    with pytest.raises(CommandError, match=r": line 2002: not valid JSON: Expecting value"):
        run_import(write(tmp_path, "many.jsonl", b"\n".join(lines)))


def test_a_bad_trace_deep_in_a_pretty_document_is_named_by_its_place_and_id(tmp_path):
    for _ in range(3):
        simple_trace()
    document = orjson.loads(exported("json"))
    third = document["traces"][2]
    del third["spans"][0]["span_id"]
    path = write(tmp_path, "export.json", orjson.dumps(document, option=orjson.OPT_INDENT_2))
    with pytest.raises(CommandError) as raised:
        run_import(path)
    assert f"trace #3 ('{third['trace_id']}'): a span without span_id" in str(raised.value)


def test_a_bad_line_stores_nothing_of_its_batch_and_says_what_came_before(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{IMPORT}.BATCH_SPANS", 2)
    for _ in range(3):
        simple_trace(children=1)  # two spans each: a batch each
    lines = exported("otlp-json")
    purge()
    bad = b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "00"}]}]}]}\n'
    # Lines of 4 spans (two batches, stored), 1 span and a bad one: that batch is not stored.
    good = orjson.loads(lines)
    spans = good["resourceSpans"][0]["scopeSpans"][0]["spans"]
    first, second = spans[:4], spans[4:5]
    good["resourceSpans"][0]["scopeSpans"][0]["spans"] = first
    data = orjson.dumps(good) + b"\n"
    good["resourceSpans"][0]["scopeSpans"][0]["spans"] = second
    data += orjson.dumps(good) + b"\n" + bad
    path = write(tmp_path, "mixed.jsonl", data)
    with pytest.raises(CommandError) as raised:
        run_import(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: line 3: 1 invalid span(s): traceId '00' is not 32 hex")
    assert "the 4 spans before it were (importing the file again is safe" in message
    assert Span.objects.count() == 4


def test_a_protobuf_file_over_the_body_limit_is_refused(tmp_path, settings):
    settings.MSGTRACE_MAX_BODY_BYTES = 100
    trace_id = otlp.new_trace_id()
    body = otlp.body(*(otlp.span(trace_id, otlp.new_span_id(), f"s{i}") for i in range(5)))
    with pytest.raises(CommandError, match="at most 100 bytes .MSGTRACE_MAX_BODY_BYTES."):
        run_import(write(tmp_path, "big.pb", body))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["/nonexistent/file.jsonl"], "/nonexistent/file.jsonl: no such file"),
        (["{tmp}"], ": is a directory"),
        (["-", "-"], "'-' (standard input) can be given only once"),
        ([], "the following arguments are required: FILE"),
    ],
)
def test_bad_arguments_are_command_errors_before_anything_is_read(tmp_path, files, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        run_import(*(name.format(tmp=tmp_path) for name in files))


def test_every_file_is_checked_before_any_is_imported(tmp_path):
    simple_trace()
    good = write(tmp_path, "good.jsonl", exported("otlp-json"))
    purge()
    with pytest.raises(CommandError, match="missing.jsonl: no such file"):
        run_import(good, str(tmp_path / "missing.jsonl"))
    assert not Span.objects.exists()
