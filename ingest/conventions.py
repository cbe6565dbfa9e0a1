"""Semantic conventions: which span attributes fill which indexed column.

One table, read in order: the first key present wins. Covers the OTel GenAI conventions
(current and older names), msgtrace-sdk, msgflux, OpenInference (Arize Phoenix),
OpenLLMetry (Traceloop) and the legacy ``llm.usage.*`` / ``llm.cost.*`` keys.
"""

from __future__ import annotations

from typing import Any

COLUMN_KEYS: dict[str, tuple[str, ...]] = {
    "input_tokens": (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
        "llm.usage.prompt_tokens",
        "llm.usage.input_tokens",
    ),
    "output_tokens": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
        "llm.usage.completion_tokens",
        "llm.usage.output_tokens",
    ),
    "total_tokens": (
        "gen_ai.usage.total_tokens",
        "llm.token_count.total",
        "llm.usage.total_tokens",
    ),
    "cache_read_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
        "llm.usage.cache_read_input_tokens",
    ),
    "cache_write_tokens": (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
        "llm.usage.cache_creation_input_tokens",
    ),
    "reasoning_tokens": (
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
        "llm.usage.reasoning_tokens",
    ),
    # The response model is what actually ran ("gpt-4o-2024-08-06"); the request model
    # ("gpt-4o") is the fallback.
    "model": (
        "gen_ai.response.model",
        "gen_ai.request.model",
        "llm.model_name",
        "llm.response.model",
        "llm.request.model",
        "llm.model",
    ),
    "operation": ("gen_ai.operation.name", "llm.request.type"),
    "provider": ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"),
    "workflow_name": ("msgflux.workflow.name", "workflow.name", "traceloop.workflow.name"),
    "module_name": ("module.name",),
    "session_id": ("gen_ai.conversation.id", "session.id"),
    "user_id": ("user.id", "enduser.id"),
    "currency": ("gen_ai.usage.cost.currency", "llm.cost.currency"),
}

# A span's own total cost, if it carries one.
COST_TOTAL_KEYS = (
    "gen_ai.usage.cost",
    "gen_ai.usage.cost.total",
    "llm.cost.total",
    "llm.usage.cost",
)
# Otherwise the sum of the parts it carries (msgtrace-sdk sends input and output cost),
# from the first family present, so a span sending two conventions is not counted twice.
COST_PART_FAMILIES = (
    ("gen_ai.usage.cost.input_tokens", "gen_ai.usage.cost.output_tokens"),
    ("llm.cost.input", "llm.cost.output"),
    ("llm.cost.prompt", "llm.cost.completion"),
)

# Where a span says what it is, most specific first.
SPAN_TYPE_KEYS = (
    "openinference.span.kind",
    "gen_ai.operation.name",
    "module.type",
    "traceloop.span.kind",
    "span.type",
)
SPAN_TYPE_VALUES = {
    "llm": "llm",
    "chat": "llm",
    "text_completion": "llm",
    "completion": "llm",
    "generate_content": "llm",
    "embedding": "embedding",
    "embeddings": "embedding",
    "tool": "tool",
    "execute_tool": "tool",
    "agent": "agent",
    "invoke_agent": "agent",
    "create_agent": "agent",
    "retriever": "retriever",
    "retrieval": "retriever",
    "reranker": "reranker",
    "chain": "chain",
    "guardrail": "guardrail",
    "evaluator": "evaluator",
    "workflow": "workflow",
    "task": "task",
    "flow": "flow",
    "module": "module",
}
# Generic labels that a more telling attribute below may refine.
_GENERIC_TYPES = {"flow", "module", "task", "workflow", "chain"}

# Label columns and their sizes in traces.models.Span: values are cut to fit, since
# PostgreSQL refuses (and would fail the whole batch on) a value that does not.
LABEL_LIMITS = {
    "model": 255,
    "provider": 64,
    "operation": 64,
    "workflow_name": 255,
    "module_name": 255,
    "session_id": 255,
    "user_id": 255,
}

_MAX_INT = 2**63 - 1


def as_count(value: Any) -> int:
    """A token count from an attribute: ints, floats and numeric strings; else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value == value:  # not NaN
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(float(value))
        except (ValueError, OverflowError):
            return 0
    else:
        return 0
    return min(max(number, 0), _MAX_INT)


def as_amount(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    if number != number or number in (float("inf"), float("-inf")):
        return None
    return number


def as_label(value: Any, limit: int = 255) -> str:
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, bool | int | float):
        return str(value)[:limit]
    return ""


def first(attributes: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None and value != "":
            return value
    return None


def span_type(attributes: dict[str, Any], model: str, tokens: int) -> str:
    """llm / tool / agent / retriever / embedding / ...: what the span does."""
    declared = ""
    for key in SPAN_TYPE_KEYS:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            lowered = value.strip().lower()
            declared = SPAN_TYPE_VALUES.get(lowered, lowered[:32])
            break
    if declared and declared not in _GENERIC_TYPES:
        return declared
    if "gen_ai.tool.name" in attributes or "tool.name" in attributes:
        return "tool"
    if "gen_ai.agent.name" in attributes:
        return "agent"
    if model or tokens:
        return "llm"
    return declared


_COUNT_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
# Every key the table reads, with its column and rank, so a span's attributes are looked
# at once (a set intersection in C) rather than probed for each of ~60 keys: this runs for
# every span ingested.
_KEY_RANKS = {
    key: (column, rank) for column, keys in COLUMN_KEYS.items() for rank, key in enumerate(keys)
}
_COST_KEYS = frozenset(COST_TOTAL_KEYS).union(*COST_PART_FAMILIES)
_READ_KEYS = frozenset(_KEY_RANKS) | _COST_KEYS


def derive_columns(attributes: dict[str, Any]) -> dict[str, Any]:
    """The indexed columns a span's attributes imply."""
    found: dict[str, tuple[int, Any]] = {}
    present = attributes.keys() & _READ_KEYS
    for key in present - _COST_KEYS:
        value = attributes[key]
        if value is None or value == "":
            continue
        column, rank = _KEY_RANKS[key]
        best = found.get(column)
        if best is None or rank < best[0]:
            found[column] = (rank, value)

    columns: dict[str, Any] = {}
    for column in _COUNT_COLUMNS:
        columns[column] = as_count(found[column][1]) if column in found else 0
    if not columns["total_tokens"]:
        columns["total_tokens"] = columns["input_tokens"] + columns["output_tokens"]
    for column, limit in LABEL_LIMITS.items():
        columns[column] = as_label(found[column][1], limit) if column in found else ""

    cost = None
    if present & _COST_KEYS:
        cost = as_amount(first(attributes, COST_TOTAL_KEYS))
        for family in COST_PART_FAMILIES if cost is None else ():
            parts = [as_amount(attributes.get(key)) for key in family]
            parts = [part for part in parts if part is not None]
            if parts:
                cost = sum(parts)
                break
    columns["cost"] = cost
    currency = as_label(found["currency"][1], 8) if "currency" in found else ""
    columns["currency"] = (currency or "USD").upper() if cost is not None else ""
    # A span that reports its own cost keeps it; the writer prices the others from the
    # price table (traces.pricing), which needs the database this decoder does not have.
    columns["cost_source"] = "span" if cost is not None else ""
    columns["price_id"] = None
    columns["span_type"] = span_type(attributes, columns["model"], columns["total_tokens"])
    return columns
