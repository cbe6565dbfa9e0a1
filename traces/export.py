"""Export formats, written as streams of bytes, and read back by ``msgtrace import``.

Every format takes one way through the database: traces in keyset-paginated pages (never
OFFSET, never the whole result at once) and the spans of a few hundred traces at a time,
so an export of any size runs in constant memory whoever reads it, a download or a file.

- ``json``: one pretty-printed document, ``{"format": "msgtrace-export", "version": 1,
  "exported_at": ..., "traces": [...]}``; each trace is the API's trace summary with the
  API's span objects under ``"spans"`` (docs/export-import.md shows it). It holds every
  stored span column, so ``msgtrace import`` gives back the same rows.
- ``csv``: one row per trace; ``csv-spans``: one row per span. Text cells that a
  spreadsheet would run as a formula are neutralised (see ``neutralise``).
- ``otlp-json``: OTLP/JSON, one ExportTraceServiceRequest per line, spans grouped by
  resource and scope as OTLP does, for any OTLP/HTTP receiver (msgtrace's too).

Reading back is here too, since it is the same formats: ``sniff`` tells protobuf from
JSON, and ``json_requests`` turns JSON lines, our document or one big OTLP/JSON request
into OTLP/JSON request bodies. ``msgtrace import`` decodes those with the collector's own
decoder: this module never imports ``ingest`` (the dependency goes the other way).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, TextIO

import orjson
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast

from traces.models import Span, ns_to_datetime

FORMAT_NAME = "msgtrace-export"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Format:
    name: str
    content_type: str
    extension: str
    what: str  # the <what> in the file name of a list export
    unit: str  # what progress counts: "traces" or "spans"


FORMATS = {
    "json": Format("json", "application/json", "json", "traces", "spans"),
    "csv": Format("csv", "text/csv; charset=utf-8", "csv", "traces", "traces"),
    "csv-spans": Format("csv-spans", "text/csv; charset=utf-8", "csv", "spans", "spans"),
    "otlp-json": Format("otlp-json", "application/x-ndjson", "jsonl", "otlp", "spans"),
}


def export_filename(what: str, extension: str, now: datetime | None = None) -> str:
    """``msgtrace-<what>-<UTC timestamp>.<ext>``. Callers pass our own words (or a checked
    trace id) as ``what``: span data never becomes part of a file name."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"msgtrace-{what}-{moment:%Y%m%dT%H%M%SZ}.{extension}"


# --- Reading the database ---------------------------------------------------------------------

# Sort columns an export may follow (the list's sorts); each with trace_id as tie-breaker.
ORDER_COLUMNS = frozenset(
    {"start_ns", "duration_ns", "span_count", "error_count", "total_tokens", "cost"}
)
_TRACE_FIELDS = (
    "trace_id", "service_name", "root_span_name", "workflow_name", "start_ns", "end_ns",
    "duration_ns", "span_count", "error_count", "input_tokens", "output_tokens",
    "total_tokens", "cost", "unpriced_count", "model_names", "session_id", "user_id",
)  # fmt: skip
_SPAN_FIELDS = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "span_type", "start_ns",
    "end_ns", "duration_ns", "status_code", "status_message", "is_error", "service_name",
    "model", "operation", "provider", "workflow_name", "module_name", "session_id", "user_id",
    "input_tokens", "output_tokens", "total_tokens", "cache_read_tokens",
    "cache_write_tokens", "reasoning_tokens", "cost", "currency", "cost_source",
)  # fmt: skip
_SPAN_JSON_FIELDS = ("attributes", "events", "links", "resource_attributes", "scope")
# The JSON columns as text, parsed here with orjson: Django's JSONField parses with the
# standard library, several times slower on a million spans.
_SPAN_TEXTS = {f"{name}_text": Cast(name, TextField()) for name in _SPAN_JSON_FIELDS}
_SHARED_JSON = ("resource_attributes", "scope")


class Export:
    """The traces of ``queryset`` in keyset order, with their spans; counts what went out.

    ``order`` is one of ``ORDER_COLUMNS``; ``trace_id`` breaks ties, so paging never skips
    or repeats a trace. ``on_progress(traces, spans)`` hears about each page written.
    """

    TRACE_PAGE = 500  # traces per keyset query
    SPAN_BATCH = 2000  # spans fetched at once; a trace with more is read in pages of its own

    def __init__(
        self,
        queryset: QuerySet,
        *,
        order: str = "start_ns",
        descending: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if order not in ORDER_COLUMNS:
            raise ValueError(f"cannot export in {order!r} order")
        self.queryset = queryset
        self.order = order
        self.descending = descending
        self.on_progress = on_progress
        self.traces = 0
        self.spans = 0

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.traces, self.spans)

    def trace_rows(self) -> Iterator[dict]:
        """Trace rows (dicts of ``_TRACE_FIELDS``), one keyset page at a time."""
        column, sign = self.order, "-" if self.descending else ""
        ordered = self.queryset.order_by(f"{sign}{column}", f"{sign}trace_id")
        after: tuple | None = None
        while True:
            page_query = ordered
            if after is not None:
                value, trace_id = after
                # "(column, trace_id) after (value, trace_id)", written so that the first
                # condition alone is an index range.
                if self.descending:
                    page_query = page_query.filter(
                        Q(**{f"{column}__lte": value})
                        & (Q(**{f"{column}__lt": value}) | Q(trace_id__lt=trace_id))
                    )
                else:
                    page_query = page_query.filter(
                        Q(**{f"{column}__gte": value})
                        & (Q(**{f"{column}__gt": value}) | Q(trace_id__gt=trace_id))
                    )
            page = list(page_query.values(*_TRACE_FIELDS)[: self.TRACE_PAGE])
            yield from page
            if len(page) < self.TRACE_PAGE:
                return
            after = (page[-1][column], page[-1]["trace_id"])

    def counted_traces(self) -> Iterator[dict]:
        """``trace_rows``, counted (for formats without spans)."""
        for row in self.trace_rows():
            self.traces += 1
            self.spans += row["span_count"]
            if self.traces % 100 == 0:
                self._progress()
            yield row
        self._progress()

    def traces_with_spans(self, *, parsed: bool = True) -> Iterator[tuple[dict, Iterator[dict]]]:
        """(trace row, its span rows in start order); read each trace's spans before the next.

        ``parsed=False`` leaves the JSON columns as the database's text (for CSV cells).
        """
        for group in self._groups():
            if len(group) == 1 and group[0]["span_count"] > self.SPAN_BATCH:
                trace = group[0]
                yield trace, self._counted(self._big_trace_spans(trace["trace_id"], parsed))
            else:
                spans: dict[str, list[dict]] = {trace["trace_id"]: [] for trace in group}
                query = Span.objects.filter(trace_id__in=list(spans)).order_by(
                    "trace_id", "start_ns", "span_id"
                )
                for row in _span_rows(query, parsed):
                    spans[row["trace_id"]].append(row)
                for trace in group:
                    yield trace, self._counted(spans.pop(trace["trace_id"]))
            self.traces += len(group)
            self._progress()

    def span_rows(self, *, parsed: bool = True) -> Iterator[dict]:
        """Every span of the selected traces, trace by trace."""
        for _trace, spans in self.traces_with_spans(parsed=parsed):
            yield from spans

    def _counted(self, spans: Iterable[dict]) -> Iterator[dict]:
        for span in spans:
            self.spans += 1
            yield span

    def _groups(self) -> Iterator[list[dict]]:
        """Consecutive traces whose spans, together, make one fetch of ``SPAN_BATCH`` or so."""
        group: list[dict] = []
        spans = 0
        for trace in self.trace_rows():
            if group and spans + trace["span_count"] > self.SPAN_BATCH:
                yield group
                group, spans = [], 0
            group.append(trace)
            spans += trace["span_count"]
        if group:
            yield group

    def _big_trace_spans(self, trace_id: str, parsed: bool) -> Iterator[dict]:
        """One trace's spans in keyset pages by (start_ns, span_id).

        Not one ordered query: SQLite would sort every row of a 50,000-span trace in
        memory (temp_store=MEMORY) before the first came out. With LIMIT it keeps a page.
        """
        query = Span.objects.filter(trace_id=trace_id).order_by("start_ns", "span_id")
        page_query = query
        while True:
            page = list(_span_rows(page_query[: self.SPAN_BATCH], parsed))
            yield from page
            if len(page) < self.SPAN_BATCH:
                return
            start, span_id = page[-1]["start_ns"], page[-1]["span_id"]
            page_query = query.filter(
                Q(start_ns__gte=start) & (Q(start_ns__gt=start) | Q(span_id__gt=span_id))
            )

    def chunks(self, format_name: str, *, exported_at: datetime | None = None) -> Iterator[bytes]:
        """The export in ``format_name``, in pieces of a few hundred kilobytes."""
        if format_name == "json":
            pieces = json_pieces(self, exported_at or datetime.now(UTC))
        elif format_name == "csv":
            pieces = csv_trace_pieces(self)
        elif format_name == "csv-spans":
            pieces = csv_span_pieces(self)
        elif format_name == "otlp-json":
            pieces = (line + b"\n" for line in otlp_requests(self.span_rows()))
        else:
            raise ValueError(f"unknown export format {format_name!r}")
        return _coalesce(pieces)


def _span_rows(query: QuerySet, parsed: bool = True) -> Iterator[dict]:
    """Span rows (dicts of every column), JSON columns parsed; resource and scope, which
    repeat across spans, parsed once per distinct text (the dicts are shared: read only)."""
    shared: dict[str, Any] = {}
    count = len(_SPAN_FIELDS)
    loads = orjson.loads
    for values in query.annotate(**_SPAN_TEXTS).values_list(*_SPAN_FIELDS, *_SPAN_TEXTS):
        row = dict(zip(_SPAN_FIELDS, values[:count], strict=True))
        if not parsed:
            row.update(zip(_SPAN_JSON_FIELDS, values[count:], strict=True))
            yield row
            continue
        attributes, events, links, resource, scope = values[count:]
        row["attributes"] = loads(attributes)
        row["events"] = loads(events)
        row["links"] = loads(links)
        for name, text in (("resource_attributes", resource), ("scope", scope)):
            value = shared.get(text)
            if value is None:
                if len(shared) > 1000:
                    shared.clear()
                value = shared[text] = loads(text)
            row[name] = value
        yield row


def _coalesce(pieces: Iterable[bytes], size: int = 256 * 1024) -> Iterator[bytes]:
    """Small pieces joined into chunks of about ``size`` bytes (fewer writes, fewer sends)."""
    buffer: list[bytes] = []
    held = 0
    for piece in pieces:
        buffer.append(piece)
        held += len(piece)
        if held >= size:
            yield b"".join(buffer)
            buffer, held = [], 0
    if buffer:
        yield b"".join(buffer)


# --- JSON -------------------------------------------------------------------------------------

_STATUS_NAMES = ("UNSET", "OK", "ERROR")
_STATUS_NUMBERS = {name: number for number, name in enumerate(_STATUS_NAMES)}


def _iso(ns: int) -> str:
    return ns_to_datetime(ns).isoformat().replace("+00:00", "Z")


def trace_document(row: dict) -> dict:
    """A trace row as the API's trace summary (``traces.api.trace_summary``), keys and all."""
    return {
        "trace_id": row["trace_id"],
        "start_time": _iso(row["start_ns"]),
        "end_time": _iso(row["end_ns"]),
        "start_time_unix_nano": row["start_ns"],
        "end_time_unix_nano": row["end_ns"],
        "duration_ms": row["duration_ns"] / 1e6,
        "span_count": row["span_count"],
        "error_count": row["error_count"],
        "service_name": row["service_name"],
        "workflow_name": row["workflow_name"],
        "root_span_name": row["root_span_name"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "total_tokens": row["total_tokens"],
        "cost": row["cost"],
        "unpriced_spans": row["unpriced_count"],
        "models": row["model_names"],
        "session_id": row["session_id"],
        "user_id": row["user_id"],
    }


def span_document(row: dict) -> dict:
    """A span row as the API's span object (``traces.api.span_dict``), keys and all."""
    return {
        "span_id": row["span_id"],
        "parent_span_id": row["parent_span_id"] or None,
        "name": row["name"],
        "kind": row["kind"],
        "span_type": row["span_type"],
        "start_time": _iso(row["start_ns"]),
        "end_time": _iso(row["end_ns"]),
        "start_time_unix_nano": row["start_ns"],
        "end_time_unix_nano": row["end_ns"],
        "duration_ms": row["duration_ns"] / 1e6,
        "status": {"code": _STATUS_NAMES[row["status_code"]], "message": row["status_message"]},
        "service_name": row["service_name"],
        "model": row["model"],
        "provider": row["provider"],
        "operation": row["operation"],
        "module_name": row["module_name"],
        "workflow_name": row["workflow_name"],
        "session_id": row["session_id"],
        "user_id": row["user_id"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "total_tokens": row["total_tokens"],
        "cache_read_tokens": row["cache_read_tokens"],
        "cache_write_tokens": row["cache_write_tokens"],
        "reasoning_tokens": row["reasoning_tokens"],
        "cost": row["cost"],
        "currency": row["currency"],
        "cost_source": row["cost_source"],
        "attributes": row["attributes"],
        "events": row["events"],
        "links": row["links"],
        "resource_attributes": row["resource_attributes"],
        "scope": row["scope"],
    }


def _indented(value: Any, depth: int) -> bytes:
    """``value`` pretty-printed as it sits at ``depth`` in the document.

    orjson never writes a raw newline inside a string, so each newline starts a line.
    """
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n" + b"  " * depth)


def _open_list(document: dict, depth: int) -> bytes:
    """``document`` (whose last key holds ``[]``) up to and including that list's ``[``."""
    text = _indented(document, depth)
    assert text.endswith(b"[]\n" + b"  " * depth + b"}")
    return text[: -(len(b"]\n}") + 2 * depth)]


def json_pieces(export: Export, exported_at: datetime) -> Iterator[bytes]:
    """The JSON document, written as it goes; byte for byte what ``orjson.dumps(document,
    option=OPT_INDENT_2)`` would give for the whole (plus a final newline)."""
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "exported_at": exported_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "traces": [],
    }
    yield _open_list(header, 0)
    traces = 0
    for trace, spans in export.traces_with_spans():
        yield (
            (b"," if traces else b"")
            + b"\n    "
            + _open_list({**trace_document(trace), "spans": []}, 2)
        )
        count = 0
        for span in spans:
            yield (b"," if count else b"") + b"\n        " + _indented(span_document(span), 4)
            count += 1
        yield b"\n      ]\n    }" if count else b"]\n    }"
        traces += 1
    yield b"\n  ]\n}\n" if traces else b"]\n}\n"


# --- CSV --------------------------------------------------------------------------------------

# What a spreadsheet reads as the start of a formula (or, tab and CR, strips before one).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, as plain text instead.

    A leading apostrophe is what spreadsheets themselves use to mean "this is text"
    (OWASP's advice for CSV injection). Numbers we format ourselves are left alone.
    """
    if isinstance(cell, str) and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell


# Columns of each CSV. Text that came with the spans goes through neutralise(); ids (hex),
# times, numbers, the span kind and the JSON columns (which start with { or [) are ours.
TRACE_CSV_HEADER = (
    "trace_id", "start_time", "end_time", "start_time_unix_nano", "duration_ms",
    "service_name", "workflow_name", "root_span_name", "span_count", "error_count",
    "input_tokens", "output_tokens", "total_tokens", "cost", "unpriced_spans", "models",
    "session_id", "user_id",
)  # fmt: skip


def _trace_cells(t: dict) -> list:
    n = neutralise
    return [
        t["trace_id"], _iso(t["start_ns"]), _iso(t["end_ns"]), t["start_ns"],
        t["duration_ns"] / 1e6, n(t["service_name"]), n(t["workflow_name"]),
        n(t["root_span_name"]), t["span_count"], t["error_count"], t["input_tokens"],
        t["output_tokens"], t["total_tokens"], t["cost"], t["unpriced_count"],
        n(";".join(t["model_names"])),
        n(t["session_id"]), n(t["user_id"]),
    ]  # fmt: skip


SPAN_CSV_HEADER = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "span_type", "start_time",
    "end_time", "start_time_unix_nano", "duration_ms", "status", "status_message",
    "service_name", "model", "provider", "operation", "workflow_name", "module_name",
    "session_id", "user_id", "input_tokens", "output_tokens", "total_tokens",
    "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "cost", "currency",
    "cost_source", "attributes", "events", "links", "resource_attributes", "scope",
)  # fmt: skip


def _span_cells(s: dict) -> list:
    """A span row read with ``parsed=False``: its JSON columns go out as stored."""
    n = neutralise
    return [
        s["trace_id"], s["span_id"], s["parent_span_id"], n(s["name"]), s["kind"],
        n(s["span_type"]), _iso(s["start_ns"]), _iso(s["end_ns"]), s["start_ns"],
        s["duration_ns"] / 1e6, _STATUS_NAMES[s["status_code"]], n(s["status_message"]),
        n(s["service_name"]), n(s["model"]), n(s["provider"]), n(s["operation"]),
        n(s["workflow_name"]), n(s["module_name"]), n(s["session_id"]), n(s["user_id"]),
        s["input_tokens"], s["output_tokens"], s["total_tokens"], s["cache_read_tokens"],
        s["cache_write_tokens"], s["reasoning_tokens"], "" if s["cost"] is None else s["cost"],
        n(s["currency"]), s["cost_source"], s["attributes"], s["events"], s["links"],
        s["resource_attributes"], s["scope"],
    ]  # fmt: skip


def _csv_pieces(header: tuple, rows: Iterable[list]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # RFC 4180: quoted as needed, CRLF line ends
    writer.writerow(header)
    for row in rows:
        writer.writerow(row)
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def csv_trace_pieces(export: Export) -> Iterator[bytes]:
    return _csv_pieces(TRACE_CSV_HEADER, map(_trace_cells, export.counted_traces()))


def csv_span_pieces(export: Export) -> Iterator[bytes]:
    return _csv_pieces(SPAN_CSV_HEADER, map(_span_cells, export.span_rows(parsed=False)))


# --- OTLP/JSON --------------------------------------------------------------------------------

# OTLP's SpanKind numbers, by the names ingest stores (ingest.otlp.SPAN_KINDS, same order).
SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_KIND_NUMBERS = {name: number for number, name in enumerate(SPAN_KINDS)}
# Deeper than ingest keeps (8 levels): a value cut here is cut there anyway, identically.
_MAX_DEPTH = 16


class ImportFormatError(ValueError):
    """A file, or part of one, that is not in a format ``msgtrace import`` reads."""


def _any_value(value: Any, depth: int = 0) -> dict:
    """A stored attribute value as an OTLP/JSON AnyValue (int64 as a string, as OTLP has it)."""
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return {"intValue": str(value)}
        # Beyond int64 it can only have been a double that the database wrote out in full
        # (PostgreSQL prints 1e300 with all its digits): send it as one.
        return {"doubleValue": float(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if value is None:
        return {}
    if depth >= _MAX_DEPTH:
        return {"stringValue": "[nesting too deep]"}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_any_value(item, depth + 1) for item in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": _key_values(value, depth + 1)}}
    raise ImportFormatError(f"cannot export a {type(value).__name__} value")


def _key_values(mapping: Any, depth: int = 0) -> list[dict]:
    if not isinstance(mapping, dict):
        raise ImportFormatError(f"attributes must be an object, not {type(mapping).__name__}")
    # Most values are strings: made here rather than in a call each (a third faster).
    return [
        {"key": key, "value": {"stringValue": value}}
        if type(value) is str
        else {"key": key, "value": _any_value(value, depth)}
        for key, value in mapping.items()
    ]


def _list(value: Any, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ImportFormatError(f"{what} must be a list, not {type(value).__name__}")
    return value


def _object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise ImportFormatError(f"{what} must be an object, not {type(value).__name__}")
    return value


def otlp_span(row: dict) -> dict:
    """A span row (stored columns) as an OTLP/JSON Span."""
    span = {"traceId": row["trace_id"], "spanId": row["span_id"]}
    if row["parent_span_id"]:
        span["parentSpanId"] = row["parent_span_id"]
    span["name"] = row["name"]
    span["kind"] = _KIND_NUMBERS.get(row["kind"], 0)
    span["startTimeUnixNano"] = str(row["start_ns"])
    span["endTimeUnixNano"] = str(row["end_ns"])
    span["attributes"] = _key_values(row["attributes"])
    events = []
    for event in _list(row["events"], "events"):
        event = _object(event, "an event")
        item = {
            "timeUnixNano": str(event.get("time_unix_nano") or 0),
            "name": event.get("name") or "",
            "attributes": _key_values(event.get("attributes") or {}),
        }
        if event.get("dropped_attributes_count"):
            item["droppedAttributesCount"] = event["dropped_attributes_count"]
        events.append(item)
    if events:
        span["events"] = events
    links = []
    for link in _list(row["links"], "links"):
        link = _object(link, "a link")
        item = {"traceId": link.get("trace_id") or "", "spanId": link.get("span_id") or ""}
        if link.get("trace_state"):
            item["traceState"] = link["trace_state"]
        item["attributes"] = _key_values(link.get("attributes") or {})
        links.append(item)
    if links:
        span["links"] = links
    status = {"code": row["status_code"]}
    if row["status_message"]:
        status["message"] = row["status_message"]
    span["status"] = status
    return span


def _otlp_resource(resource: Any) -> dict:
    return {"attributes": _key_values(resource)}


def _otlp_scope(scope: Any) -> dict:
    # A note of a cut scope name ("msgtrace.truncated") has no place in OTLP: left out.
    scope = _object(scope, "scope")
    otlp = {"name": scope.get("name") or "", "version": scope.get("version") or ""}
    if scope.get("attributes"):
        otlp["attributes"] = _key_values(scope["attributes"])
    return otlp


def otlp_requests(
    rows: Iterable[dict], *, max_spans: int = 1000, max_bytes: int = 4 * 1024 * 1024
) -> Iterator[bytes]:
    """ExportTraceServiceRequest JSON texts (one line each) for span rows.

    Spans are grouped by resource and then by scope, as OTLP does; a request holds at
    most ``max_spans`` spans and, unless one span alone is larger, ``max_bytes`` (well
    under the 32 MiB a collector takes by default).
    """
    groups: dict[tuple[bytes, bytes], list[bytes]] = {}
    forms: dict[bytes, bytes] = {}  # stored resource/scope text -> its OTLP/JSON text
    count = size = 0
    for row in rows:
        keys = []
        for name, convert in (("resource_attributes", _otlp_resource), ("scope", _otlp_scope)):
            key = name.encode() + orjson.dumps(row[name])
            if key not in forms:
                if len(forms) > 1000:
                    forms.clear()
                forms[key] = orjson.dumps(convert(row[name]))
            keys.append(forms[key])
        span = orjson.dumps(otlp_span(row))
        if count and (count >= max_spans or size + len(span) > max_bytes):
            yield _request(groups)
            groups, count, size = {}, 0, 0
        groups.setdefault((keys[0], keys[1]), []).append(span)
        count += 1
        size += len(span) + 1
    if count:
        yield _request(groups)


def _request(groups: dict[tuple[bytes, bytes], list[bytes]]) -> bytes:
    by_resource: dict[bytes, list[bytes]] = {}
    for (resource, scope), spans in groups.items():
        by_resource.setdefault(resource, []).append(
            b'{"scope":' + scope + b',"spans":[' + b",".join(spans) + b"]}"
        )
    return (
        b'{"resourceSpans":['
        + b",".join(
            b'{"resource":' + resource + b',"scopeSpans":[' + b",".join(scopes) + b"]}"
            for resource, scopes in by_resource.items()
        )
        + b"]}"
    )


# --- Reading files back -----------------------------------------------------------------------

GZIP_MAGIC = b"\x1f\x8b"
_SNIFF_BYTES = 64 * 1024
# Bytes no JSON text holds raw, and every non-empty OTLP protobuf message does (field tags).
_BINARY = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_BOM = "\ufeff"


class _Rejoined(io.RawIOBase):
    """``head`` and then the rest of ``stream``: the first bytes are looked at, then read."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head = head
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.head:
            size = min(len(buffer), len(self.head))
            buffer[:size] = self.head[:size]
            self.head = self.head[size:]
            return size
        return self.stream.readinto(buffer)


def sniff(stream: BinaryIO) -> tuple[str, BinaryIO]:
    """(kind, stream to read): kind is ``empty``, ``json`` or ``protobuf``; gzip is undone.

    gzip by its magic bytes; protobuf by bytes no JSON text can hold raw (every OTLP
    message has them: its field tags); JSON by a ``{`` after white space.
    """
    head = stream.read(_SNIFF_BYTES)
    if head[:2] == GZIP_MAGIC:
        import gzip

        return sniff(gzip.GzipFile(fileobj=io.BufferedReader(_Rejoined(head, stream))))
    rejoined = io.BufferedReader(_Rejoined(head, stream), buffer_size=1024 * 1024)
    if not head:
        return "empty", rejoined
    if _BINARY.search(head):
        return "protobuf", rejoined
    text = head.decode("utf-8", "replace").lstrip(_BOM + " \t\r\n")
    if not text:
        return "empty", rejoined
    if text[0] == "{":
        return "json", rejoined
    shown = text[:20].split("\n", 1)[0]
    raise ImportFormatError(
        f"not OTLP/JSON, a msgtrace JSON export or OTLP protobuf (it starts with {shown!r})"
    )


_NOT_SPACE = re.compile(r"[^ \t\r\n\ufeff]")
_DECODER = json.JSONDecoder()


class _JSONText:
    """JSON values read one after another from a byte stream, without reading it all."""

    CHUNK = 1024 * 1024
    MAX_LINE = 64 * 1024 * 1024  # longer lines are read as a stream, not as one value
    MAX_VALUE = 512 * 1024 * 1024  # one trace, or one resourceSpans entry

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.text = ""
        self.pos = 0
        self.eof = False
        # Line numbers for messages, counted as reading goes on: text[counted] is on
        # line ``counted_line`` (counting from the start each time is quadratic).
        self.counted = 0
        self.counted_line = 1

    def _more(self, at_least: int = 0) -> bool:
        """Drop what was read, read more (at least ``at_least`` bytes); False at the end."""
        if self.eof:
            return False
        if self.pos:
            self.line()  # count the newlines about to be dropped
            self.counted -= self.pos
            self.text = self.text[self.pos :]
            self.pos = 0
        data = self.stream.read(max(self.CHUNK, at_least))
        if not data:
            self.eof = True
            self.text += self.decoder.decode(b"", final=True)
            return False
        self.text += self.decoder.decode(data)
        return True

    def line(self, index: int | None = None) -> int:
        """The line that ``text[index]`` (default: the current position) is on."""
        index = self.pos if index is None else index
        if index >= self.counted:
            self.counted_line += self.text.count("\n", self.counted, index)
            self.counted = index
            return self.counted_line
        return self.counted_line - self.text.count("\n", index, self.counted)

    def peek(self) -> str:
        """The next character that is not white space, not consumed; "" at the end."""
        while True:
            match = _NOT_SPACE.search(self.text, self.pos)
            if match:
                self.pos = match.start()
                return self.text[self.pos]
            self.pos = len(self.text)
            if not self._more():
                return ""

    def expect(self, chars: str) -> str:
        char = self.peek()
        if not char or char not in chars:
            wanted = " or ".join(repr(c) for c in chars)
            found = repr(char) if char else "the end of the file"
            raise ImportFormatError(f"line {self.line()}: expected {wanted}, found {found}")
        self.pos += 1
        return char

    def value(self) -> Any:
        """The whole JSON value that starts here, consumed."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                if not self.eof:
                    if len(self.text) - self.pos > self.MAX_VALUE:
                        raise ImportFormatError(
                            f"line {self.line()}: a value larger than {self.MAX_VALUE >> 20} MiB"
                        ) from None
                    # Perhaps only cut off by the end of what was read: read as much again.
                    self._more(len(self.text) - self.pos)
                    continue
                line = self.line(exc.pos)
                raise ImportFormatError(f"line {line}: not valid JSON: {exc.msg}") from None
            except RecursionError:
                raise ImportFormatError(f"line {self.line()}: nested too deeply") from None
            if end == len(self.text) and self._more():
                continue  # a number might go on in the next piece
            self.pos = end
            return value

    def line_value(self) -> tuple[int, Any] | None:
        """If the next line holds exactly one JSON value, (line number, value), consumed."""
        self.peek()
        searched = self.pos  # no newline before here
        while True:
            end = self.text.find("\n", searched)
            if end != -1 or self.eof:
                break
            if len(self.text) - self.pos > self.MAX_LINE:
                return None
            searched = len(self.text) - self.pos
            self._more()  # drops what was consumed: the line now starts at 0
        stop = end if end != -1 else len(self.text)
        try:
            value = orjson.loads(self.text[self.pos : stop])
        except orjson.JSONDecodeError:
            return None
        number = self.line()
        self.pos = stop
        return number, value


def json_requests(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """(where, OTLP/JSON request body) from JSON text, in bounded pieces.

    Reads OTLP/JSON lines (one ExportTraceServiceRequest per line), our JSON export
    (pretty-printed or not) and a single OTLP/JSON request however it is laid out; any
    number of these one after another. A line is parsed whole; a value spread over lines
    is read entry by entry, so a multi-gigabyte export document needs memory for one
    trace at a time. ``where`` says which line or trace a body came from, for messages.
    """
    text = _JSONText(stream)
    while True:
        char = text.peek()
        if not char:
            return
        if char != "{":
            raise ImportFormatError(f"line {text.line()}: expected a JSON object, found {char!r}")
        found = text.line_value()
        if found is not None:
            number, value = found
            yield from _whole_object(f"line {number}", value)
        else:
            yield from _streamed_object(text)


_RESOURCE_SPANS = ("resourceSpans", "resource_spans")


def _whole_object(where: str, value: Any) -> Iterator[tuple[str, bytes]]:
    if not isinstance(value, dict):
        raise ImportFormatError(f"{where}: expected a JSON object")
    if "format" in value or "traces" in value:
        _check_header(where, value)
        for number, trace in enumerate(_list(value.get("traces"), f"{where}: traces"), 1):
            yield from _trace_requests(f"{where}, trace #{number}", trace)
    elif value == {} or any(key in value for key in _RESOURCE_SPANS):
        yield where, orjson.dumps(value)
    else:
        raise ImportFormatError(
            f"{where}: neither an OTLP/JSON ExportTraceServiceRequest (no resourceSpans) "
            "nor a msgtrace export"
        )


def _check_header(where: str, header: dict) -> None:
    if header.get("format") != FORMAT_NAME:
        raise ImportFormatError(
            f'{where}: a "traces" list, but not in a document with "format": "{FORMAT_NAME}"'
        )
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ImportFormatError(f"{where}: the export has no valid version ({version!r})")
    if version > FORMAT_VERSION:
        raise ImportFormatError(
            f"{where}: export version {version} is newer than this msgtrace reads "
            f"({FORMAT_VERSION}); import it with a newer msgtrace"
        )


def _streamed_object(text: _JSONText) -> Iterator[tuple[str, bytes]]:
    """One top-level object too big for one line, read key by key, big lists entry by entry."""
    where = f"line {text.line()}"
    text.expect("{")
    if text.peek() == "}":
        text.pos += 1
        return  # {}: an empty request
    header: dict[str, Any] = {}
    spans_seen = False
    while True:
        key = text.value()
        if not isinstance(key, str):
            raise ImportFormatError(f"line {text.line()}: expected a key")
        text.expect(":")
        if key in _RESOURCE_SPANS:
            spans_seen = True
            yield from _streamed_resource_spans(text, where)
        elif key == "traces":
            _check_header(where, header)
            spans_seen = True
            # Entries are named by their place, not the line the document starts on.
            for number, trace in enumerate(_items(text), 1):
                yield from _trace_requests(f"trace #{number}", trace)
        else:
            header[key] = text.value()
        if text.expect(",}") == "}":
            break
    if not spans_seen:
        # Only other keys: the same checks as for an object read whole.
        yield from _whole_object(where, header)


def _items(text: _JSONText) -> Iterator[Any]:
    """The entries of the list that starts here, one by one."""
    text.expect("[")
    if text.peek() == "]":
        text.pos += 1
        return
    while True:
        yield text.value()
        if text.expect(",]") == "]":
            return


def _streamed_resource_spans(text: _JSONText, where: str) -> Iterator[tuple[str, bytes]]:
    """The entries of a long resourceSpans list, as requests of about 1,000 spans each."""
    batch: list[Any] = []
    spans = 0
    number = 0
    for number, entry in enumerate(_items(text), 1):
        batch.append(entry)
        if isinstance(entry, dict):
            for scope_spans in _list_or_empty(entry.get("scopeSpans", entry.get("scope_spans"))):
                if isinstance(scope_spans, dict):
                    spans += len(_list_or_empty(scope_spans.get("spans")))
        if spans >= 1000:
            entries = f"{where}, resourceSpans #{number - len(batch) + 1}-{number}"
            yield entries, orjson.dumps({"resourceSpans": batch})
            batch, spans = [], 0
    if batch:
        entries = f"{where}, resourceSpans #{number - len(batch) + 1}-{number}"
        yield entries, orjson.dumps({"resourceSpans": batch})


def _list_or_empty(value: Any) -> list:
    return value if isinstance(value, list) else []


def _trace_requests(where: str, trace: Any) -> Iterator[tuple[str, bytes]]:
    """One trace of our export as OTLP/JSON requests: the collector's decoder then rebuilds
    every derived column exactly as it did when the spans first arrived."""
    trace = _object(trace, f"{where}: a trace")
    trace_id = trace.get("trace_id")
    if not isinstance(trace_id, str):
        raise ImportFormatError(f"{where}: a trace without a trace_id")
    where = f"{where} ({trace_id[:40]!r})"
    try:
        rows = [_export_row(trace_id, span) for span in _list(trace.get("spans"), "spans")]
        for body in otlp_requests(rows):
            yield where, body
    except ImportFormatError as exc:
        raise ImportFormatError(f"{where}: {exc}") from None
    except orjson.JSONEncodeError as exc:  # an integer beyond 64 bits, say
        raise ImportFormatError(f"{where}: {exc}") from None


_REQUIRED_SPAN_KEYS = ("span_id", "start_time_unix_nano", "end_time_unix_nano")


def _export_row(trace_id: str, span: Any) -> dict:
    """A span of our JSON export as the stored columns it came from (derived ones aside)."""
    span = _object(span, "a span")
    missing = [key for key in _REQUIRED_SPAN_KEYS if span.get(key) is None]
    if missing:
        raise ImportFormatError(f"a span without {', '.join(missing)}")
    status = _object(span.get("status") or {}, "status")
    code = status.get("code", "UNSET")
    if isinstance(code, str) and code in _STATUS_NUMBERS:
        code = _STATUS_NUMBERS[code]
    elif isinstance(code, bool) or code not in (0, 1, 2):
        raise ImportFormatError(f"unknown status code {str(code)[:20]!r}")
    kind = span.get("kind") or "unspecified"
    if not isinstance(kind, str):
        raise ImportFormatError(f"kind must be a name such as 'client', not {str(kind)[:20]!r}")
    return {
        "trace_id": trace_id,
        "span_id": span.get("span_id"),
        "parent_span_id": span.get("parent_span_id") or "",
        "name": span.get("name") or "",
        "kind": kind,
        "start_ns": span.get("start_time_unix_nano"),
        "end_ns": span.get("end_time_unix_nano"),
        "status_code": code,
        "status_message": status.get("message") or "",
        "attributes": span.get("attributes") or {},
        "events": span.get("events") or [],
        "links": span.get("links") or [],
        "resource_attributes": span.get("resource_attributes") or {},
        "scope": span.get("scope") or {},
    }


# --- Progress ---------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on a terminal (stderr), redrawn at most five times a second."""

    WIDTH = 30

    def __init__(self, stream: TextIO, total: int | None, unit: str) -> None:
        self.stream = stream
        self.total = total
        self.unit = unit
        self.started = time.monotonic()
        self.drawn = 0.0
        self.done = 0

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self.drawn >= 0.2:
            self.drawn = now
            self._draw(now)

    def close(self) -> None:
        self._draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-6)
        if self.total:
            share = min(self.done / self.total, 1.0)
            filled = int(share * self.WIDTH)
            bar = f"{share:4.0%} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
            count = f"{self.done:,}/{self.total:,}"
        else:
            bar, count = "", f"{self.done:,}"
        self.stream.write(f"\r{bar}{count} {self.unit}  {rate:,.0f}/s ")
        self.stream.flush()


__all__ = [
    "FORMATS",
    "Export",
    "ImportFormatError",
    "Progress",
    "export_filename",
    "json_requests",
    "neutralise",
    "otlp_requests",
    "sniff",
]
