"""One span's stored JSON shaped for the details panel: grouped attributes, events, links.

Values stay plain text; templates escape them. Nothing here marks anything safe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from traces.models import Span, is_span_id, is_trace_id

# Attribute keys that describe the LLM call rather than the plumbing: the GenAI group.
_GENAI_PREFIXES = (
    "gen_ai.", "llm.", "ai.", "input.", "output.", "tool.", "embedding.", "retrieval.",
    "reranker.", "openinference.", "traceloop.", "msgtrace.", "agent.", "prompt.",
)  # fmt: skip
_LONG = 160


@dataclass(slots=True)
class Attribute:
    key: str
    value: str
    long: bool  # shown folded, in a <pre>


def display(value) -> str:
    """An attribute value as text: strings as they are (JSON pretty-printed), others as JSON."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in "[{" and len(stripped) > 1:
            try:
                return json.dumps(json.loads(stripped), indent=2, ensure_ascii=False)
            except ValueError:
                return value
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _attributes(mapping: dict) -> list[Attribute]:
    items = []
    for key in sorted(mapping):
        text = display(mapping[key])
        items.append(Attribute(key, text, len(text) > _LONG or "\n" in text))
    return items


def attribute_groups(span: Span) -> list[tuple[str, list[Attribute]]]:
    genai = {k: v for k, v in span.attributes.items() if k.startswith(_GENAI_PREFIXES)}
    other = {k: v for k, v in span.attributes.items() if k not in genai}
    groups = [
        ("GenAI", _attributes(genai)),
        ("Span", _attributes(other)),
        ("Resource", _attributes(span.resource_attributes)),
    ]
    scope = span.scope if isinstance(span.scope, dict) else {}
    scope_items = {k: v for k, v in scope.items() if k != "attributes" and v not in ("", None)}
    scope_items.update(scope.get("attributes") or {})
    if scope_items:
        groups.append(("Instrumentation scope", _attributes(scope_items)))
    return [(title, items) for title, items in groups if items]


@dataclass(slots=True)
class ExceptionEvent:
    type: str
    message: str
    stacktrace: str
    offset_ns: int | None


@dataclass(slots=True)
class Event:
    name: str
    offset_ns: int | None
    attributes: list[Attribute]


def _offset(event: dict, span_start_ns: int | None) -> int | None:
    moment = event.get("time_unix_nano")
    if isinstance(moment, int) and moment and span_start_ns:
        return moment - span_start_ns
    return None


def exception_events(events: list, span_start_ns: int | None = None) -> list[ExceptionEvent]:
    found = []
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict) or event.get("name") != "exception":
            continue
        attrs = event.get("attributes") if isinstance(event.get("attributes"), dict) else {}
        found.append(
            ExceptionEvent(
                type=str(attrs.get("exception.type", "")),
                message=str(attrs.get("exception.message", "")),
                stacktrace=str(attrs.get("exception.stacktrace", "")),
                offset_ns=_offset(event, span_start_ns),
            )
        )
    return found


def plain_events(events: list, span_start_ns: int | None) -> list[Event]:
    """Events other than exceptions (those get their own section)."""
    found = []
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict) or event.get("name") == "exception":
            continue
        attrs = event.get("attributes") if isinstance(event.get("attributes"), dict) else {}
        found.append(
            Event(str(event.get("name", "")), _offset(event, span_start_ns), _attributes(attrs))
        )
    return found


@dataclass(slots=True)
class Link:
    trace_id: str
    span_id: str
    linkable: bool  # well-formed ids only ever become a URL
    attributes: list[Attribute]


def safe_links(links: list) -> list[Link]:
    found = []
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict):
            continue
        trace_id, span_id = str(link.get("trace_id", "")), str(link.get("span_id", ""))
        attrs = link.get("attributes") if isinstance(link.get("attributes"), dict) else {}
        linkable = is_trace_id(trace_id) and is_span_id(span_id)
        found.append(Link(trace_id, span_id, linkable, _attributes(attrs)))
    return found
