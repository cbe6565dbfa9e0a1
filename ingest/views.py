"""The OTLP/HTTP trace collector: ``POST /v1/traces`` and ``POST /api/v1/traces/export``.

Status codes follow the OTLP/HTTP spec, because exporters act on them: 200 means the spans
are committed; 400 and 413 are final (the exporter drops the batch); 503 with Retry-After
is retried. A transient condition is never a 500, since exporters drop data on 500.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ingest.otlp import (
    Decoded,
    PayloadError,
    PayloadTooLarge,
    decode_json,
    decode_protobuf,
    inflate,
)
from ingest.writer import BatchRefused, StoreUnavailable, get_writer

logger = logging.getLogger("msgtrace.ingest")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_CONTENT_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
_ENCODINGS = {"", "identity", "gzip", "x-gzip"}

# google.rpc.Code values for the Status body of an error.
_RPC_CODES = {400: 3, 405: 12, 413: 8, 415: 3, 503: 14}
RETRY_AFTER_SECONDS = "2"


def _status(http_status: int, message: str, content_type: str) -> HttpResponse:
    code = _RPC_CODES.get(http_status, 2)
    if content_type == PROTOBUF:
        body = status_pb2.Status(code=code, message=message).SerializeToString()
    else:
        body = orjson.dumps({"code": code, "message": message})
        content_type = JSON
    response = HttpResponse(body, status=http_status, content_type=content_type)
    if http_status == 503:
        response["Retry-After"] = RETRY_AFTER_SECONDS
    return response


def _success(decoded: Decoded, content_type: str) -> HttpResponse:
    message = "; ".join(decoded.errors)
    if content_type == PROTOBUF:
        response = trace_service_pb2.ExportTraceServiceResponse()
        if decoded.rejected:
            response.partial_success.rejected_spans = decoded.rejected
            response.partial_success.error_message = message
        return HttpResponse(response.SerializeToString(), content_type=PROTOBUF)
    body = {}
    if decoded.rejected:
        # int64 travels as a string in OTLP/JSON.
        body["partialSuccess"] = {"rejectedSpans": str(decoded.rejected), "errorMessage": message}
    return HttpResponse(orjson.dumps(body), content_type=JSON)


def _decode(body: bytes, gzipped: bool, content_type: str) -> Decoded:
    if gzipped:
        body = inflate(body, settings.MSGTRACE_MAX_BODY_BYTES)
    return decode_protobuf(body) if content_type == PROTOBUF else decode_json(body)


@csrf_exempt
async def export_traces(request: HttpRequest) -> HttpResponse:
    raw_type = request.content_type.lower() if request.content_type else ""
    content_type = _CONTENT_TYPES.get(raw_type)
    if request.method != "POST":
        response = _status(405, "use POST", content_type or JSON)
        response["Allow"] = "POST"
        return response
    if content_type is None:
        return _status(
            415, f"unsupported Content-Type {raw_type!r}: use {PROTOBUF} or {JSON}", JSON
        )
    content_encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if content_encoding not in _ENCODINGS:
        return _status(
            415,
            f"unsupported Content-Encoding {content_encoding!r}: use gzip or identity",
            content_type,
        )

    limit = settings.MSGTRACE_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _status(400, "invalid Content-Length", content_type)
    if declared > limit:
        return _status(413, f"body is {declared} bytes; the limit is {limit}", content_type)
    body = request.read(limit + 1)
    if len(body) > limit:
        return _status(413, f"body is over the limit of {limit} bytes", content_type)

    try:
        # Decoding is CPU work; off the event loop, other connections stay served.
        decoded = await asyncio.to_thread(
            _decode, body, content_encoding in ("gzip", "x-gzip"), content_type
        )
    except PayloadTooLarge as exc:
        return _status(413, str(exc), content_type)
    except PayloadError as exc:
        return _status(400, str(exc), content_type)

    if decoded.rows:
        try:
            await asyncio.wrap_future(get_writer().submit(decoded.rows))
        except StoreUnavailable as exc:
            return _status(503, f"the store is busy, retry later ({exc})", content_type)
        except BatchRefused as exc:
            return _status(400, str(exc), content_type)
    return _success(decoded, content_type)
