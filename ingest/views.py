"""The OTLP/HTTP trace collector: ``POST /v1/traces`` and ``POST /api/v1/traces/export``.

Status codes follow the OTLP/HTTP spec, because exporters act on them: 200 means the spans
are committed; 400 and 413 are final (the exporter drops the batch); 503 with Retry-After
is retried. A transient condition is never a 500, since exporters drop data on 500.

This endpoint is a plain ASGI application mounted in front of Django (``msgtrace_site/
asgi.py``), not a Django view. Measured on the ingest benchmark, Django's request handling
(body spooling, and middleware that hops to a new thread per request) took a fifth of the
server process's CPU; here the body is read straight from the socket, a body over the limit
is refused from its Content-Length before it is read, and nothing else is in the way. The
collector uses no cookies or sessions, so it loses nothing by skipping that middleware; it
still checks the Host header against ``ALLOWED_HOSTS`` and answers CORS like the API does.

With ``MSGTRACE_AUTH`` on, a request needs an active API key (``Authorization: Bearer`` or
``x-api-key``), checked in memory (traces/keys.py): 401 without one, 429 when the key is
over ``MSGTRACE_INGEST_RATE_LIMIT``. With it off, nothing here looks at keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ingest.otlp import PayloadError, PayloadTooLarge, Prepared
from ingest.workers import prepare_off_loop
from ingest.writer import BatchRefused, StoreUnavailable, describe_failure, get_writer
from traces import broadcast
from traces.keys import KeyEntry, key_from_headers, keyring, span_budget

logger = logging.getLogger("msgtrace.ingest")

PATHS = frozenset({"/v1/traces", "/api/v1/traces/export"})
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_CONTENT_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
_ENCODINGS = {"", "identity", "gzip", "x-gzip"}

# google.rpc.Code values for the Status body of an error.
_RPC_CODES = {400: 3, 401: 16, 405: 12, 413: 8, 415: 3, 429: 8, 503: 14}
RETRY_AFTER_SECONDS = "2"


class Response:
    __slots__ = ("status", "content_type", "body", "headers")

    def __init__(self, status: int, content_type: str, body: bytes, **headers: str) -> None:
        self.status, self.content_type, self.body = status, content_type, body
        self.headers = {name.replace("_", "-"): value for name, value in headers.items()}


def _status(http_status: int, message: str, content_type: str, **headers: str) -> Response:
    code = _RPC_CODES.get(http_status, 2)
    if content_type == PROTOBUF:
        body = status_pb2.Status(code=code, message=message).SerializeToString()
    else:
        body = orjson.dumps({"code": code, "message": message})
        content_type = JSON
    if http_status == 503:
        headers["Retry_After"] = RETRY_AFTER_SECONDS
    if http_status >= 500:
        logger.warning("ingest: %s %s", http_status, message)
    return Response(http_status, content_type, body, **headers)


def _success(decoded: Prepared, content_type: str) -> Response:
    message = "; ".join(decoded.errors)
    if content_type == PROTOBUF:
        response = trace_service_pb2.ExportTraceServiceResponse()
        if decoded.rejected:
            response.partial_success.rejected_spans = decoded.rejected
            response.partial_success.error_message = message
        return Response(200, PROTOBUF, response.SerializeToString())
    body = {}
    if decoded.rejected:
        # int64 travels as a string in OTLP/JSON.
        body["partialSuccess"] = {"rejectedSpans": str(decoded.rejected), "errorMessage": message}
    return Response(200, JSON, orjson.dumps(body))


Receive = Callable[[], Awaitable[dict]]


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it passes ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _raw_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def admit(headers: dict[str, str]) -> tuple[KeyEntry | None, Response | None]:
    """With auth on: the request's API key, or the 401 or 429 that refuses the request.

    Exporters drop a batch on 401 (it is final) and retry 429 after Retry-After.
    """
    reply_type = _CONTENT_TYPES.get(_raw_type(headers), JSON)
    key = key_from_headers(headers)
    entry = await keyring.acheck(key) if key else None
    if entry is None:
        message = (
            "invalid or revoked API key"
            if key
            else "API key required: send Authorization: Bearer <key> (or x-api-key: <key>)"
        )
        challenge = 'Bearer realm="msgtrace"' + (', error="invalid_token"' if key else "")
        return None, _status(401, message, reply_type, WWW_Authenticate=challenge)
    rate = settings.MSGTRACE_INGEST_RATE_LIMIT
    wait = span_budget.retry_after(entry.id, rate) if rate else 0
    if wait:
        message = f"API key {entry.prefix} is over its limit of {rate} spans/s"
        return None, _status(429, message, reply_type, Retry_After=str(wait))
    return entry, None


async def export_traces(
    method: str, headers: dict[str, str], receive: Receive, key: KeyEntry | None = None
) -> Response:
    raw_type = _raw_type(headers)
    content_type = _CONTENT_TYPES.get(raw_type)
    if method != "POST":
        return _status(405, "use POST", content_type or JSON, Allow="POST")
    if content_type is None:
        return _status(
            415, f"unsupported Content-Type {raw_type!r}: use {PROTOBUF} or {JSON}", JSON
        )
    content_encoding = headers.get("content-encoding", "").strip().lower()
    if content_encoding not in _ENCODINGS:
        return _status(
            415,
            f"unsupported Content-Encoding {content_encoding!r}: use gzip or identity",
            content_type,
        )

    limit = settings.MSGTRACE_MAX_BODY_BYTES
    try:
        declared = int(headers.get("content-length") or 0)
    except ValueError:
        return _status(400, "invalid Content-Length", content_type)
    if declared > limit:
        return _status(413, f"body is {declared} bytes; the limit is {limit}", content_type)
    body = await _read_body(receive, limit)
    if body is None:
        return _status(413, f"body is over the limit of {limit} bytes", content_type)

    try:
        # Decoding is CPU work: in a worker process, so the event loop stays responsive
        # and the writer keeps a core of its own.
        decoded = await prepare_off_loop(
            body, gzipped=content_encoding in ("gzip", "x-gzip"), json=content_type == JSON
        )
    except PayloadTooLarge as exc:
        return _status(413, str(exc), content_type)
    except PayloadError as exc:
        return _status(400, str(exc), content_type)
    except StoreUnavailable as exc:
        return _status(503, str(exc), content_type)
    except Exception as exc:
        # A body the decoder trips over is our bug, but the answer is the same as for any
        # undecodable body; and the server's own report of an unhandled exception would
        # print its message, which may quote span data.
        logger.error("ingest: decoding failed: %s", describe_failure(exc))
        return _status(400, f"the body could not be decoded ({type(exc).__name__})", content_type)
    rate = settings.MSGTRACE_INGEST_RATE_LIMIT
    if key is not None and rate:
        span_budget.spend(key.id, rate, len(decoded.params) + decoded.rejected)

    if decoded.params:
        try:
            await asyncio.wrap_future(get_writer().submit(decoded.params, decoded.index_documents))
        except StoreUnavailable as exc:
            return _status(503, f"the store is busy, retry later ({exc})", content_type)
        except BatchRefused as exc:
            return _status(400, str(exc), content_type)
    return _success(decoded, content_type)


def _cors_origin(headers: dict[str, str]) -> str | None:
    origin = headers.get("origin")
    if origin and (settings.CORS_ALLOW_ALL_ORIGINS or origin in settings.CORS_ALLOWED_ORIGINS):
        return origin
    return None


class CollectorApp:
    """ASGI: the collector's paths here, everything else to ``inner`` (Django)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in PATHS:
            await self.inner(scope, receive, send)
            return
        # Whichever process ingests must publish, even with no WebSocket client of its own.
        broadcast.ensure_started()
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        domain, _ = split_domain_port(headers.get("host", ""))
        origin = _cors_origin(headers)
        if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
            response = _status(400, "Host header not allowed", JSON)
        elif scope["method"] == "OPTIONS" and origin:
            # A browser exporter's CORS preflight.
            response = Response(
                200,
                "text/plain",
                b"",
                Access_Control_Allow_Methods="POST, OPTIONS",
                Access_Control_Allow_Headers=headers.get(
                    "access-control-request-headers", "content-type"
                ),
                Access_Control_Max_Age="86400",
            )
        else:
            key, response = (await admit(headers)) if settings.MSGTRACE_AUTH else (None, None)
            if response is None:
                try:
                    response = await export_traces(scope["method"], headers, receive, key)
                except ConnectionError:
                    return  # nobody to answer
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type.encode()),
                    (b"content-length", str(len(response.body)).encode()),
                    # As Django's pages do: an error body quoting a bad id stays JSON.
                    (b"x-content-type-options", b"nosniff"),
                    *((k.encode(), v.encode("latin-1")) for k, v in response.headers.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})
