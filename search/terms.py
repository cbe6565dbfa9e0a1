"""The terms the attribute index keeps for a trace: one per short string attribute value.

Pure Python, no Django: decode workers compute them next to the rest of a request's
decoding, from the attribute dicts, before the values are serialised to JSON.

A term is a 32-bit hash (CRC-32) of scope, key and lower-cased value. Two different values can
share a term; the index only narrows the traces a query must look at, and the exact
condition still runs on each, so a shared term costs a little time, never a wrong result.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

# Longer values (prompts, outputs) are not indexed: nobody types them into a search box,
# and a query for one still works, without the index's help.
MAX_INDEXED_CHARS = 256
SPAN_SCOPE = "a"  # attr.<key>
RESOURCE_SCOPE = "r"  # resource.<key>


def term(scope: str, key: str, value: str) -> int:
    return zlib.crc32(_utf8(value.lower()), _key_crc(scope, key))


def token(term_value: int) -> str:
    """A term as the index spells it: letters and digits, one FTS token."""
    return f"t{term_value:08x}"


def trace_token(trace_id: str) -> str:
    """The token that names a trace's documents, so they can be found and deleted."""
    return f"id{trace_id}"


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return text.encode("utf-8", "replace")


# CRC-32 runs on: the CRC of scope and key, continued over the value, equals the CRC of
# the whole. Keys repeat from span to span, so their part is computed once. add_terms
# runs for every attribute ingested: written as below it costs ~2 µs a span, where
# hashing one formatted string per value cost ~18 µs.
_KEY_CRCS: dict[str, dict[str, int]] = {SPAN_SCOPE: {}, RESOURCE_SCOPE: {}}


def _key_crc(scope: str, key: str) -> int:
    crcs = _KEY_CRCS[scope]
    found = crcs.get(key)
    if found is None:
        if len(crcs) > 50_000:  # keys are sender-chosen: keep the memory bounded
            crcs.clear()
        found = crcs[key] = zlib.crc32(_utf8(f"{scope}\x00{key}\x00"))
    return found


def add_terms(into: set[int], scope: str, attributes: Mapping) -> None:
    crcs = _KEY_CRCS[scope]
    crc32 = zlib.crc32
    for key, value in attributes.items():
        if value.__class__ is str and len(value) <= MAX_INDEXED_CHARS:
            base = crcs.get(key)
            if base is None:
                base = _key_crc(scope, key)
            try:
                into.add(crc32(value.lower().encode(), base))
            except UnicodeEncodeError:
                into.add(crc32(_utf8(value.lower()), base))


def terms_by_trace(rows: Iterable[Mapping]) -> dict[str, set[int]]:
    """Decoded span rows (dicts with trace_id, attributes, resource_attributes) → terms."""
    found: dict[str, set[int]] = {}
    resources: dict[int, set[int]] = {}  # one resource dict serves a whole batch
    for row in rows:
        terms = found.setdefault(row["trace_id"], set())
        add_terms(terms, SPAN_SCOPE, row["attributes"])
        resource = row["resource_attributes"]
        resource_terms = resources.get(id(resource))
        if resource_terms is None:
            resource_terms = resources[id(resource)] = set()
            add_terms(resource_terms, RESOURCE_SCOPE, resource)
        terms |= resource_terms
    return found


def documents(terms: Mapping[str, set[int]]) -> list[tuple[str, str]]:
    """(trace id, document text) rows for the index: built where the terms are found (a
    decode worker), so the process that writes only hands strings to the database."""
    return [
        (trace_id, f"{trace_token(trace_id)} {' '.join(map(token, found))}")
        for trace_id, found in terms.items()
        if found
    ]
