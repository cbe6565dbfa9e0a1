"""OTLP/HTTP trace bodies (protobuf or JSON) into plain span rows.

Both encodings end in the same row dicts (see ``SPAN_FIELDS``), so everything after
decoding is shared. Span data is untrusted: strings are cleaned of NULs, invalid UTF-8 is
replaced, long values are cut (their original length recorded under
``msgtrace.truncated``), and nesting is bounded.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson
from django.conf import settings
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ingest.conventions import derive_columns
from search.terms import documents, terms_by_trace

MAX_DEPTH = 8
MAX_NAME_CHARS = 1024
TRUNCATED_KEY = "msgtrace.truncated"

SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_SPAN_KIND_NAMES = {f"SPAN_KIND_{name.upper()}": i for i, name in enumerate(SPAN_KINDS)}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


class PayloadError(Exception):
    """The body cannot be decoded: the client gets a 400 with this message."""


class PayloadTooLarge(Exception):
    """The body, or what it inflates to, is over MSGTRACE_MAX_BODY_BYTES: 413."""


@dataclass
class Decoded:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.errors) < 5 and reason not in self.errors:
            self.errors.append(reason)


def inflate(body: bytes, limit: int) -> bytes:
    """Gunzip ``body``, refusing (quickly, in bounded memory) to produce more than ``limit``."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise PayloadError(f"body is not valid gzip: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"body inflates to more than {limit} bytes")
    if not inflater.eof:
        raise PayloadError("body is not valid gzip: truncated stream")
    return out


# --- strings --------------------------------------------------------------------------------


class _Cleaner:
    """Cleans the strings of one span, remembering which attributes it had to cut."""

    __slots__ = ("limit", "truncated")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.truncated: dict[str, int] = {}

    def text(self, value: str | bytes, path: str = "") -> str:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if "\x00" in value:
            # PostgreSQL text and jsonb cannot hold NUL.
            value = value.replace("\x00", "\ufffd")
        if len(value) > self.limit:
            if path:
                self.truncated[path] = len(value)
            value = value[: self.limit]
        return value


# --- protobuf ---------------------------------------------------------------------------------


def _lenient_request_class():
    """ExportTraceServiceRequest with every ``string`` field read as ``bytes``.

    upb refuses a whole message over one invalid UTF-8 string; this copy of the schema
    accepts it so we can replace the bad bytes instead of dropping the batch.
    """
    files = (
        "opentelemetry/proto/common/v1/common.proto",
        "opentelemetry/proto/resource/v1/resource.proto",
        "opentelemetry/proto/trace/v1/trace.proto",
        "opentelemetry/proto/collector/trace/v1/trace_service.proto",
    )
    pool = descriptor_pool.DescriptorPool()
    for name in files:
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor_pool.Default().FindFileByName(name).CopyToProto(proto)
        stack = list(proto.message_type)
        while stack:
            message = stack.pop()
            stack.extend(message.nested_type)
            for fld in message.field:
                if fld.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
                    fld.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
        proto.ClearField("service")
        pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(
            "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest"
        )
    )


_LenientRequest = None


def _pb_value(value, clean: _Cleaner, path: str, depth: int) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return clean.text(value.string_value, path)
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bool_value":
        return value.bool_value
    if which is None:
        return None
    if depth >= MAX_DEPTH:
        return "[nesting too deep]"
    if which == "array_value":
        return [_pb_value(item, clean, path, depth + 1) for item in value.array_value.values]
    if which == "kvlist_value":
        return {
            clean.text(kv.key): _pb_value(kv.value, clean, path, depth + 1)
            for kv in value.kvlist_value.values
        }
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None


def _pb_attributes(key_values, clean: _Cleaner, prefix: str = "") -> dict[str, Any]:
    # The hot loop of ingest: plain strings and numbers, the usual attributes, are handled
    # inline; anything that needs cleaning, and nested values, go the long way.
    attributes = {}
    limit = clean.limit
    for kv in key_values:
        key = kv.key
        if type(key) is not str or "\x00" in key or len(key) > limit:
            key = clean.text(key)
        value = kv.value
        which = value.WhichOneof("value")
        if which == "string_value":
            text = value.string_value
            if type(text) is not str or "\x00" in text or len(text) > limit:
                text = clean.text(text, prefix + key)
            attributes[key] = text
        elif which == "int_value":
            attributes[key] = value.int_value
        elif which == "double_value":
            attributes[key] = value.double_value
        else:
            attributes[key] = _pb_value(value, clean, prefix + key, 0)
    return attributes


def _note_truncations(target: dict, clean: _Cleaner) -> dict:
    if clean.truncated:
        target[TRUNCATED_KEY] = clean.truncated
    return target


def decode_protobuf(body: bytes, limit: int | None = None) -> Decoded:
    global _LenientRequest
    try:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    except DecodeError:
        # Perhaps only invalid UTF-8: retry with the lenient schema before giving up.
        if _LenientRequest is None:
            _LenientRequest = _lenient_request_class()
        try:
            request = _LenientRequest.FromString(body)
        except DecodeError:
            raise PayloadError("body is not a valid protobuf ExportTraceServiceRequest") from None

    decoded = Decoded()
    limit = limit or settings.MSGTRACE_MAX_ATTRIBUTE_CHARS
    for resource_spans in request.resource_spans:
        resource_clean = _Cleaner(limit)
        resource = _note_truncations(
            _pb_attributes(resource_spans.resource.attributes, resource_clean), resource_clean
        )
        for scope_spans in resource_spans.scope_spans:
            scope_clean = _Cleaner(limit)
            scope = {
                "name": scope_clean.text(scope_spans.scope.name),
                "version": scope_clean.text(scope_spans.scope.version),
            }
            if scope_spans.scope.attributes:
                scope["attributes"] = _pb_attributes(scope_spans.scope.attributes, scope_clean)
            _note_truncations(scope, scope_clean)
            for span in scope_spans.spans:
                clean = _Cleaner(limit)
                events = []
                for index, event in enumerate(span.events):
                    item = {
                        "name": clean.text(event.name),
                        "time_unix_nano": event.time_unix_nano,
                        "attributes": _pb_attributes(event.attributes, clean, f"events.{index}."),
                    }
                    if event.dropped_attributes_count:
                        item["dropped_attributes_count"] = event.dropped_attributes_count
                    events.append(item)
                links = [
                    {
                        "trace_id": link.trace_id.hex(),
                        "span_id": link.span_id.hex(),
                        "trace_state": clean.text(link.trace_state),
                        "attributes": _pb_attributes(link.attributes, clean, f"links.{index}."),
                    }
                    for index, link in enumerate(span.links)
                ]
                _add_row(
                    decoded,
                    clean,
                    trace_id=span.trace_id,
                    span_id=span.span_id,
                    parent_span_id=span.parent_span_id,
                    name=span.name,
                    kind=span.kind,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    status_code=span.status.code,
                    status_message=span.status.message,
                    attributes=_pb_attributes(span.attributes, clean),
                    events=events,
                    links=links,
                    resource=resource,
                    scope=scope,
                )
    return decoded


# --- JSON -------------------------------------------------------------------------------------


def _get(obj: dict, camel: str, snake: str, default: Any = None) -> Any:
    value = obj.get(camel)
    if value is None:
        value = obj.get(snake, default)
    return default if value is None else value


def _json_id(value: Any, size: int, what: str) -> bytes:
    """OTLP/JSON ids are hex; base64 (the generic protobuf JSON mapping) is accepted too."""
    if value in (None, ""):
        return b""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    if len(value) == size * 2:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == size:
        return raw
    raise ValueError(f"{what} {value[:40]!r} is not {size * 2} hex digits")


def _json_int(value: Any, what: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer, got {str(value)[:40]!r}") from None
    if number < 0 or number >= 2**64:
        raise ValueError(f"{what} is out of range")
    return number


def _json_enum(value: Any, names: dict[str, int], what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        if value in names:
            return names[value]
        if value.isdigit():
            return int(value)
        raise ValueError(f"{what} {value[:40]!r} is not a known value")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"{what} must be a name or a number")


def _json_value(value: Any, clean: _Cleaner, path: str, depth: int) -> Any:
    if not isinstance(value, dict):
        return None
    for key, item in value.items():
        if key in ("stringValue", "string_value"):
            return clean.text(item, path) if isinstance(item, str) else clean.text(str(item), path)
        if key in ("intValue", "int_value"):
            try:
                number = int(item)
            except (TypeError, ValueError, OverflowError):
                return clean.text(str(item), path)
            # OTLP's int64; a wider number (which JSON can spell) stays the text it came as,
            # where the JSON columns and the database would refuse it.
            return number if _INT64_MIN <= number <= _INT64_MAX else clean.text(str(item), path)
        if key in ("doubleValue", "double_value"):
            try:
                return float(item)
            except (TypeError, ValueError, OverflowError):
                return clean.text(str(item), path)
        if key in ("boolValue", "bool_value"):
            return bool(item)
        if key in ("arrayValue", "array_value", "kvlistValue", "kvlist_value"):
            if depth >= MAX_DEPTH:
                return "[nesting too deep]"
            values = item.get("values") if isinstance(item, dict) else None
            if not isinstance(values, list):
                return [] if key.startswith("array") else {}
            if key.startswith("array"):
                return [_json_value(v, clean, path, depth + 1) for v in values]
            return _json_attributes(values, clean, depth=depth + 1, path=path)
        if key in ("bytesValue", "bytes_value"):
            return item if isinstance(item, str) else None
    return None


def _json_attributes(
    items: Any, clean: _Cleaner, prefix: str = "", depth: int = 0, path: str | None = None
) -> dict[str, Any]:
    """Attributes from a JSON KeyValue list; nested values report cuts under their top key."""
    attributes = {}
    if not isinstance(items, list):
        return attributes
    for kv in items:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            continue
        key = clean.text(kv["key"])
        attributes[key] = _json_value(
            kv.get("value"), clean, prefix + key if path is None else path, depth
        )
    return attributes


def _json_list(obj: dict, camel: str, snake: str) -> list:
    value = _get(obj, camel, snake, [])
    return value if isinstance(value, list) else []


def decode_json(body: bytes, limit: int | None = None) -> Decoded:
    if not body.strip():
        return Decoded()  # as an empty protobuf body is an empty request
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            # orjson refuses invalid UTF-8; replace it rather than reject the batch.
            data = orjson.loads(body.decode("utf-8", "replace"))
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PayloadError("body must be a JSON object (an ExportTraceServiceRequest)")

    decoded = Decoded()
    limit = limit or settings.MSGTRACE_MAX_ATTRIBUTE_CHARS
    for resource_spans in _json_list(data, "resourceSpans", "resource_spans"):
        if not isinstance(resource_spans, dict):
            raise PayloadError("resourceSpans entries must be objects")
        resource_obj = _get(resource_spans, "resource", "resource", {})
        resource_clean = _Cleaner(limit)
        resource = _note_truncations(
            _json_attributes(
                resource_obj.get("attributes") if isinstance(resource_obj, dict) else None,
                resource_clean,
            ),
            resource_clean,
        )
        for scope_spans in _json_list(resource_spans, "scopeSpans", "scope_spans"):
            if not isinstance(scope_spans, dict):
                raise PayloadError("scopeSpans entries must be objects")
            scope_obj = _get(scope_spans, "scope", "scope", {})
            scope_obj = scope_obj if isinstance(scope_obj, dict) else {}
            scope_clean = _Cleaner(limit)
            scope = {
                "name": scope_clean.text(str(scope_obj.get("name") or "")),
                "version": scope_clean.text(str(scope_obj.get("version") or "")),
            }
            if scope_obj.get("attributes"):
                scope["attributes"] = _json_attributes(scope_obj["attributes"], scope_clean)
            _note_truncations(scope, scope_clean)
            for span in _json_list(scope_spans, "spans", "spans"):
                if not isinstance(span, dict):
                    decoded.reject("span is not an object")
                    continue
                try:
                    _add_json_span(decoded, span, resource, scope, limit)
                except ValueError as exc:
                    decoded.reject(str(exc))
    return decoded


def _add_json_span(decoded: Decoded, span: dict, resource: dict, scope: dict, limit: int) -> None:
    clean = _Cleaner(limit)
    status = _get(span, "status", "status", {})
    status = status if isinstance(status, dict) else {}
    events = []
    for index, event in enumerate(_json_list(span, "events", "events")):
        if not isinstance(event, dict):
            continue
        item = {
            "name": clean.text(str(event.get("name") or "")),
            "time_unix_nano": _json_int(
                _get(event, "timeUnixNano", "time_unix_nano"), "event timeUnixNano"
            ),
            "attributes": _json_attributes(event.get("attributes"), clean, f"events.{index}."),
        }
        dropped = _get(event, "droppedAttributesCount", "dropped_attributes_count", 0)
        if dropped:
            item["dropped_attributes_count"] = _json_int(dropped, "droppedAttributesCount")
        events.append(item)
    links = []
    for index, link in enumerate(_json_list(span, "links", "links")):
        if not isinstance(link, dict):
            continue
        links.append(
            {
                "trace_id": _json_id(_get(link, "traceId", "trace_id"), 16, "link traceId").hex(),
                "span_id": _json_id(_get(link, "spanId", "span_id"), 8, "link spanId").hex(),
                "trace_state": clean.text(str(_get(link, "traceState", "trace_state", ""))),
                "attributes": _json_attributes(link.get("attributes"), clean, f"links.{index}."),
            }
        )
    _add_row(
        decoded,
        clean,
        trace_id=_json_id(_get(span, "traceId", "trace_id"), 16, "traceId"),
        span_id=_json_id(_get(span, "spanId", "span_id"), 8, "spanId"),
        parent_span_id=_json_id(_get(span, "parentSpanId", "parent_span_id"), 8, "parentSpanId"),
        name=str(span.get("name") or ""),
        kind=_json_enum(span.get("kind"), _SPAN_KIND_NAMES, "kind"),
        start_ns=_json_int(
            _get(span, "startTimeUnixNano", "start_time_unix_nano"), "startTimeUnixNano"
        ),
        end_ns=_json_int(_get(span, "endTimeUnixNano", "end_time_unix_nano"), "endTimeUnixNano"),
        status_code=_json_enum(status.get("code"), _STATUS_NAMES, "status code"),
        status_message=str(status.get("message") or ""),
        attributes=_json_attributes(span.get("attributes"), clean),
        events=events,
        links=links,
        resource=resource,
        scope=scope,
    )


# --- rows -------------------------------------------------------------------------------------

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _add_row(
    decoded: Decoded,
    clean: _Cleaner,
    *,
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: bytes,
    name: str | bytes,
    kind: int,
    start_ns: int,
    end_ns: int,
    status_code: int,
    status_message: str | bytes,
    attributes: dict,
    events: list,
    links: list,
    resource: dict,
    scope: dict,
) -> None:
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
        decoded.reject("invalid trace_id (must be 16 bytes, not all zero)")
        return
    if len(span_id) != 8 or span_id == _ZERO_SPAN:
        decoded.reject("invalid span_id (must be 8 bytes, not all zero)")
        return
    if parent_span_id and len(parent_span_id) != 8:
        decoded.reject("invalid parent_span_id (must be empty or 8 bytes)")
        return
    # Our columns are signed 64-bit; nanosecond times fit until the year 2262.
    start_ns = min(start_ns, _INT64_MAX)
    end_ns = min(max(end_ns, start_ns), _INT64_MAX)
    _note_truncations(attributes, clean)
    columns = derive_columns(attributes)
    service = resource.get("service.name")
    decoded.rows.append(
        {
            "trace_id": trace_id.hex(),
            "span_id": span_id.hex(),
            "parent_span_id": "" if parent_span_id in (b"", _ZERO_SPAN) else parent_span_id.hex(),
            "name": clean.text(name)[:MAX_NAME_CHARS],
            "kind": SPAN_KINDS[kind] if 0 <= kind < len(SPAN_KINDS) else "unspecified",
            "start_ns": start_ns,
            "end_ns": end_ns,
            "duration_ns": end_ns - start_ns,
            "status_code": status_code if status_code in (0, 1, 2) else 0,
            "status_message": clean.text(status_message),
            "is_error": status_code == 2,
            "service_name": service[:255] if isinstance(service, str) else "unknown_service",
            "attributes": attributes,
            "events": events,
            "links": links,
            "resource_attributes": resource,
            "scope": scope,
            **columns,
        }
    )


# --- SQL parameters -------------------------------------------------------------------------

# The span columns a row fills, in insert order (traces.models.Span).
SPAN_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "span_type",
    "start_ns", "end_ns", "duration_ns", "status_code", "status_message", "is_error",
    "service_name", "model", "operation", "provider", "workflow_name", "module_name",
    "session_id", "user_id", "input_tokens", "output_tokens", "total_tokens",
    "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "cost", "currency",
    "cost_source", "price_id", "attributes", "events", "links", "resource_attributes", "scope",
)  # fmt: skip
_JSON_POSITIONS = tuple(
    i
    for i, name in enumerate(SPAN_COLUMNS)
    if name in {"attributes", "events", "links", "resource_attributes", "scope"}
)
# Resource and scope dicts are shared by every span of a batch: serialise each once.
_SHARED_JSON_POSITIONS = frozenset(
    {SPAN_COLUMNS.index("resource_attributes"), SPAN_COLUMNS.index("scope")}
)
_row_values = itemgetter(*SPAN_COLUMNS)


def to_params(rows: list[dict[str, Any]]) -> list[tuple]:
    """Rows as tuples of SQL parameters in ``SPAN_COLUMNS`` order, JSON columns as text."""
    params = []
    shared: dict[int, str] = {}
    dumps = orjson.dumps
    for row in rows:
        values = list(_row_values(row))
        for position in _JSON_POSITIONS:
            value = values[position]
            if position in _SHARED_JSON_POSITIONS:
                text = shared.get(id(value))
                if text is None:
                    text = shared[id(value)] = dumps(value).decode()
                values[position] = text
            else:
                values[position] = dumps(value).decode()
        params.append(tuple(values))
    return params


@dataclass
class Prepared:
    """A decoded request, ready for the writer: what crosses back from a decode worker."""

    params: list[tuple]
    rejected: int
    errors: list[str]
    # Attribute-index documents (search.terms), when the database keeps the index.
    index_documents: list[tuple[str, str]] | None = None


def prepare(
    body: bytes, *, gzipped: bool, json: bool, max_bytes: int, limit: int, index_terms: bool
) -> Prepared:
    """Body bytes to SQL parameters: the whole CPU-bound part of ingest, in one call.

    Takes its limits as arguments (not from settings) so it can run in a worker process
    that never sets Django up.
    """
    if gzipped:
        body = inflate(body, max_bytes)
    decoded = decode_json(body, limit) if json else decode_protobuf(body, limit)
    # Terms come from the attribute dicts, before to_params turns them into JSON text.
    docs = documents(terms_by_trace(decoded.rows)) if index_terms else None
    return Prepared(to_params(decoded.rows), decoded.rejected, decoded.errors, docs)
