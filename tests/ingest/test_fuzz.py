"""Bad input, tried for real: fuzzed OTLP bodies against the decoder and the live collector.

Three kinds of body: arbitrary bytes (the first parse fails); valid protobuf envelopes
with odd values in every field (wrong-length ids, out-of-range enums and times, NaN, deep
nesting; now and then a damaged encoding); and valid JSON envelopes with a few fields
replaced by junk of any type. Most structured bodies decode, so their odd values go on to
the semantic conventions, the attribute index and, over HTTP, pricing and the database.
Each kind goes through ``prepare`` (what a decode worker runs) and then to a real
``msgtrace start``: only 200, 400, 413 or 415 may come back (the one the decoder predicts),
each within a second, and a refused request leaves the store as it was.

Examples are derandomized, so CI runs the same bounded set every time.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import random
import sqlite3
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ingest.otlp import PayloadError, PayloadTooLarge, prepare
from tests import otlp
from tests.server import MsgtraceServer

MAX_BODY = 16384  # the fuzzed server's MSGTRACE_MAX_BODY_BYTES, so 413 is reachable
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ALLOWED = {200, 400, 413, 415}

fuzz = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def mostly(valid, other):
    """``valid`` eight times in ten, else ``other`` (``one_of`` would pick each half the time)."""
    return st.integers(0, 9).flatmap(lambda n: valid if n < 8 else other)


# Keys the decoder, the conventions table, pricing and the conversation view look at, so
# fuzzed values land where they are interpreted rather than only stored.
KNOWN_KEYS = [
    "service.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.system",
    "gen_ai.operation.name",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.total_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cost.input_tokens",
    "gen_ai.usage.cost.output_tokens",
    "gen_ai.usage.cost.currency",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "llm.token_count.prompt",
    "llm.cost.total",
    "workflow.name",
    "session.id",
    "user.id",
    "openinference.span.kind",
    "msgtrace.truncated",
    "exception.message",
]
key_text = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=12))
odd_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "\x00", "\ud7ff\ufffd", "null", "NaN", "1e999", "-1", "9" * 30]),
)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
uint64 = st.integers(min_value=0, max_value=2**64 - 1)
# What a JSON sender may write where a 64-bit integer belongs.
wide_int = st.integers(min_value=2**63 - 2, max_value=10**30) | st.integers(
    min_value=-(10**30), max_value=-(2**63) + 2
)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
# Mostly 16- and 8-byte ids, so most spans decode; sometimes all zero or the wrong length.
trace_id_bytes = mostly(
    st.binary(min_size=16, max_size=16), st.sampled_from([b"", bytes(16)]) | st.binary()
)
span_id_bytes = mostly(
    st.binary(min_size=8, max_size=8), st.sampled_from([b"", bytes(8)]) | st.binary()
)


# --- protobuf envelopes -----------------------------------------------------------------------


def _any_value(draw, depth: int) -> AnyValue:
    kind = draw(st.sampled_from(["s", "i", "d", "b", "y", "a", "k", "none"]))
    value = AnyValue()
    if kind == "s":
        value.string_value = draw(odd_text)
    elif kind == "i":
        value.int_value = draw(int64)
    elif kind == "d":
        value.double_value = draw(st.floats(allow_nan=True, allow_infinity=True))
    elif kind == "b":
        value.bool_value = draw(st.booleans())
    elif kind == "y":
        value.bytes_value = draw(st.binary(max_size=12))
    elif kind in "ak" and depth < 11:  # past the decoder's MAX_DEPTH of 8
        items = draw(st.integers(0, 2))
        for _ in range(items):
            child = _any_value(draw, depth + 1)
            if kind == "a":
                value.array_value.values.append(child)
            else:
                value.kvlist_value.values.append(KeyValue(key=draw(key_text), value=child))
    return value


@st.composite
def pb_attributes(draw, max_size: int = 4) -> list[KeyValue]:
    return [
        KeyValue(key=draw(key_text), value=_any_value(draw, 0))
        for _ in range(draw(st.integers(0, max_size)))
    ]


@st.composite
def pb_request(draw) -> bytes:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(draw(pb_attributes()))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = draw(odd_text)
        scope_spans.scope.attributes.extend(draw(pb_attributes(max_size=2)))
        for _ in range(draw(st.integers(0, 3))):
            span = scope_spans.spans.add()
            span.trace_id = draw(trace_id_bytes)
            span.span_id = draw(span_id_bytes)
            span.parent_span_id = draw(span_id_bytes)
            span.name = draw(odd_text)
            span.kind = draw(int32)
            span.start_time_unix_nano = draw(uint64)
            span.end_time_unix_nano = draw(uint64)
            span.status.code = draw(int32)
            span.status.message = draw(odd_text)
            span.attributes.extend(draw(pb_attributes()))
            for _ in range(draw(st.integers(0, 2))):
                event = span.events.add(name=draw(odd_text), time_unix_nano=draw(uint64))
                event.attributes.extend(draw(pb_attributes(max_size=2)))
            for _ in range(draw(st.integers(0, 1))):
                link = span.links.add(trace_id=draw(trace_id_bytes), span_id=draw(span_id_bytes))
                link.attributes.extend(draw(pb_attributes(max_size=2)))
    body = request.SerializeToString()
    # Sometimes damage the encoding itself: cut it short, or flip a byte.
    damage = draw(mostly(st.just("none"), st.sampled_from(["cut", "flip"])))
    if body and damage == "cut":
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif body and damage == "flip":
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :]
    return body


# --- JSON envelopes ---------------------------------------------------------------------------

# Any JSON value, including integers far outside 64 bits and deep nesting.
junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | odd_text
    | st.sampled_from(["99999999999999999999999", "-1", "1e400", "NaN", "0x10"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(odd_text, children, max_size=3)
    ),
    max_leaves=10,
)


def hex_id(size: int):
    return st.binary(min_size=size, max_size=size).map(bytes.hex)


def json_any_value(depth: int = 0):
    """An OTLP/JSON AnyValue, well formed, with odd contents; nested past MAX_DEPTH."""
    leaves = [
        st.builds(lambda v: {"stringValue": v}, odd_text),
        st.builds(lambda v: {"intValue": str(v)}, int64 | wide_int),
        st.builds(lambda v: {"intValue": v}, int64 | wide_int),
        st.builds(lambda v: {"doubleValue": v}, st.floats(allow_nan=False, allow_infinity=False)),
        st.sampled_from([{"doubleValue": "NaN"}, {"doubleValue": "Infinity"}]),
        st.builds(lambda v: {"boolValue": v}, st.booleans()),
        st.just({"bytesValue": "AAEC"}),
        st.just({}),
    ]
    if depth < 10:
        inner = st.deferred(lambda: json_any_value(depth + 1))
        pairs = st.lists(st.fixed_dictionaries({"key": key_text, "value": inner}), max_size=2)
        leaves += [
            st.builds(lambda v: {"arrayValue": {"values": v}}, st.lists(inner, max_size=2)),
            st.builds(lambda v: {"kvlistValue": {"values": v}}, pairs),
        ]
    return st.one_of(leaves)


json_attributes = st.lists(
    st.fixed_dictionaries({"key": key_text, "value": json_any_value()}), max_size=4
)
json_time = st.one_of(uint64.map(str), uint64, wide_int)
json_span = st.fixed_dictionaries(
    {
        "traceId": hex_id(16),
        "spanId": hex_id(8),
        "name": odd_text,
        "kind": st.sampled_from(["SPAN_KIND_CLIENT", "SPAN_KIND_SERVER", 1, 3, "7", 99]),
        "startTimeUnixNano": json_time,
        "endTimeUnixNano": json_time,
        "attributes": json_attributes,
        "status": st.fixed_dictionaries(
            {
                "code": st.sampled_from(["STATUS_CODE_ERROR", "STATUS_CODE_OK", 2, 9]),
                "message": odd_text,
            }
        ),
        "events": st.lists(
            st.fixed_dictionaries(
                {"name": odd_text, "timeUnixNano": json_time, "attributes": json_attributes}
            ),
            max_size=2,
        ),
        "links": st.lists(
            st.fixed_dictionaries(
                {"traceId": hex_id(16), "spanId": hex_id(8), "attributes": json_attributes}
            ),
            max_size=1,
        ),
    },
    optional={"parentSpanId": hex_id(8)},
)
valid_json_request = st.fixed_dictionaries(
    {
        "resourceSpans": st.lists(
            st.fixed_dictionaries(
                {
                    "resource": st.fixed_dictionaries({"attributes": json_attributes}),
                    "scopeSpans": st.lists(
                        st.fixed_dictionaries(
                            {
                                "scope": st.fixed_dictionaries(
                                    {"name": odd_text, "attributes": json_attributes}
                                ),
                                "spans": st.lists(json_span, min_size=1, max_size=3),
                            }
                        ),
                        min_size=1,
                        max_size=2,
                    ),
                }
            ),
            min_size=1,
            max_size=2,
        )
    }
)


def _places(node, found: list) -> list:
    """Every (container, key) in a JSON tree: the places a mutation can hit."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in items:
        found.append((node, key))
        if isinstance(child, dict | list):
            _places(child, found)
    return found


@st.composite
def json_request(draw) -> dict:
    """A valid request with up to three fields replaced by junk, dropped, or snake_cased."""
    request = copy.deepcopy(draw(valid_json_request))  # drawn values may be reused
    for _ in range(draw(st.integers(0, 3))):
        places = _places(request, [])
        if not places:
            break
        container, key = draw(st.sampled_from(places))
        how = draw(st.sampled_from(["junk", "junk", "drop", "snake"]))
        if how == "junk":
            container[key] = draw(junk)
        elif how == "drop" or not isinstance(key, str):
            del container[key]
        else:  # OTLP/JSON also accepts the protobuf field names
            snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
            container[snake] = container.pop(key)
    return request


def json_body(request: dict) -> bytes:
    # Python's json writes NaN and huge integers as OTLP senders in other languages might.
    return json.dumps(request).encode()


# --- what a body may be -----------------------------------------------------------------------

raw_bytes = st.one_of(
    st.binary(max_size=600),
    # Around the size limit (bigger than Hypothesis draws bytes itself).
    st.builds(
        lambda size, seed: random.Random(seed).randbytes(size),
        st.integers(MAX_BODY - 8, MAX_BODY + 64),
        st.integers(0, 2**32),
    ),
)
any_body = st.one_of(
    raw_bytes.map(lambda b: (b, PROTOBUF)),
    raw_bytes.map(lambda b: (b, JSON)),
    pb_request().map(lambda b: (b, PROTOBUF)),
    json_request().map(lambda r: (json_body(r), JSON)),
)


def _decode(body: bytes, *, gzipped: bool, json_body: bool) -> int:
    """What a decode worker does: it may refuse the body, and must not fail any other way.

    Returns the number of span rows, which must be ready for the database.
    """
    try:
        prepared = prepare(
            body, gzipped=gzipped, json=json_body, max_bytes=MAX_BODY, limit=256, index_terms=True
        )
    except (PayloadError, PayloadTooLarge):
        return 0
    for row in prepared.params:
        for value in row:
            if isinstance(value, str):
                assert "\x00" not in value
            elif isinstance(value, int):
                assert -(2**63) <= value < 2**63
            elif isinstance(value, float):
                assert math.isfinite(value)
    return len(prepared.params)


@settings(fuzz, max_examples=300)
@given(body=st.binary(max_size=2000), gzipped=st.booleans(), as_json=st.booleans())
def test_the_decoder_refuses_or_decodes_arbitrary_bytes(body, gzipped, as_json):
    _decode(gzip.compress(body) if gzipped else body, gzipped=gzipped, json_body=as_json)
    _decode(body, gzipped=True, json_body=as_json)  # claimed gzip, not gzip


@settings(fuzz, max_examples=200)
@given(body=pb_request(), gzipped=st.booleans())
def test_the_decoder_survives_mutated_protobuf_envelopes(body, gzipped):
    _decode(gzip.compress(body) if gzipped else body, gzipped=gzipped, json_body=False)


@settings(fuzz, max_examples=200)
@given(request=json_request(), gzipped=st.booleans())
def test_the_decoder_survives_mutated_json_envelopes(request, gzipped):
    body = json_body(request)
    _decode(gzip.compress(body) if gzipped else body, gzipped=gzipped, json_body=True)


def test_most_structured_bodies_decode_so_the_fuzz_reaches_past_the_parser():
    outcomes: list[int] = []

    @settings(fuzz, max_examples=60)
    @given(
        body=st.one_of(
            pb_request().map(lambda b: (b, False)),
            json_request().map(lambda r: (json_body(r), True)),
        )
    )
    def decode(body):
        body, as_json = body
        outcomes.append(_decode(body, gzipped=False, json_body=as_json))

    decode()
    assert sum(1 for rows in outcomes if rows) > len(outcomes) / 3, outcomes


# --- over HTTP, against a real server ---------------------------------------------------------


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory, free_port):
    server = MsgtraceServer.start(
        tmp_path_factory.mktemp("fuzz"), free_port(), MSGTRACE_MAX_BODY_BYTES=MAX_BODY
    )
    yield server
    server.stop()


def stored_spans(server: MsgtraceServer) -> int:
    """Spans in the server's database, read directly rather than through the server."""
    sql = "SELECT COUNT(*) FROM traces_span"
    if server.database_url:
        import psycopg

        with psycopg.connect(server.database_url.replace("postgres://", "postgresql://")) as conn:
            return conn.execute(sql).fetchone()[0]
    with sqlite3.connect(server.db_path) as conn:
        return conn.execute(sql).fetchone()[0]


def post_and_check(server, body: bytes, headers: dict[str, str]) -> int:
    before = stored_spans(server)
    started = time.monotonic()
    status, _, answer = server.request("POST", "/v1/traces", body, headers, timeout=10)
    elapsed = time.monotonic() - started
    assert status in ALLOWED, (status, answer[:300])
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    if status != 200:
        assert stored_spans(server) == before, f"a {status} stored spans"
    return status


def expected_status(body: bytes, headers: dict[str, str]) -> int:
    """What the collector must answer, worked out in-process with the decoder it runs."""
    kind = headers.get("Content-Type", "").split(";")[0]
    encoding = headers.get("Content-Encoding", "")
    if kind not in (PROTOBUF, JSON) or encoding not in ("", "gzip", "x-gzip"):
        return 415
    if len(body) > MAX_BODY:
        return 413
    try:
        prepare(
            body,
            gzipped=bool(encoding),
            json=kind == JSON,
            max_bytes=MAX_BODY,
            limit=65536,
            index_terms=False,
        )
    except PayloadTooLarge:
        return 413
    except PayloadError:
        return 400
    return 200  # whatever the decoder takes, the database must take too


@settings(fuzz, max_examples=150)
@given(
    body_and_type=any_body,
    encoding=st.sampled_from(["", "gzip", "gzip-claimed", "x-gzip", "br"]),
    content_type=mostly(st.just("as-is"), st.sampled_from(["other", "charset", "missing"])),
)
def test_the_collector_answers_fuzzed_requests_with_a_final_status_quickly(
    fuzzed_server, body_and_type, encoding, content_type
):
    body, kind = body_and_type
    headers = {"Content-Type": kind}
    if content_type == "other":
        headers["Content-Type"] = "text/plain"
    elif content_type == "charset":
        headers["Content-Type"] = f"{kind}; charset=utf-8"
    elif content_type == "missing":
        del headers["Content-Type"]
    if encoding in ("gzip", "x-gzip"):
        body = gzip.compress(body)
    if encoding:
        headers["Content-Encoding"] = encoding.removesuffix("-claimed")
    assert post_and_check(fuzzed_server, body, headers) == expected_status(body, headers)


def test_a_gzip_bomb_and_an_oversized_declared_length_are_413_and_store_nothing(fuzzed_server):
    bomb = gzip.compress(b"\x00" * (MAX_BODY * 50))
    headers = {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"}
    assert post_and_check(fuzzed_server, bomb, headers) == 413
    assert post_and_check(fuzzed_server, b"x" * (MAX_BODY + 1), {"Content-Type": JSON}) == 413


def test_the_fuzzed_server_still_takes_a_good_request(fuzzed_server):
    trace_id = otlp.new_trace_id()
    body = otlp.body(otlp.span(trace_id, otlp.new_span_id(), "after the fuzz"))
    assert post_and_check(fuzzed_server, body, {"Content-Type": PROTOBUF}) == 200
    assert fuzzed_server.get_json(f"/api/v1/traces/{trace_id}")["span_count"] == 1
