"""A span's LLM conversation, whichever convention its instrumentation wrote it in.

Pure Python over a span's stored ``attributes`` and ``events``. Span data is untrusted:
nothing here raises on odd input, everything returned is a plain string (templates escape
it), and there are at most ``MAX_MESSAGES`` messages of at most ``MAX_TOOL_CALLS`` calls.

``CONVENTIONS`` lists the readers, richest first. Inputs come from the first one that
found inputs and outputs from the first that found outputs, so one convention never
shows the same messages twice, and a span whose prompt was recorded by one library and
whose response by another (msgtrace-sdk's ``gen_ai.prompt`` around msgflux's
``gen_ai.output.messages``) still reads as one exchange.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

MAX_MESSAGES = 500
MAX_TOOL_CALLS = 100
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: str  # indented JSON when it parses as JSON, else the raw text
    id: str = ""


@dataclass(slots=True)
class Message:
    role: str  # lower-cased; "unknown" when the span does not say
    content: str
    tool_calls: list[ToolCall]
    tool_call_id: str = ""
    name: str = ""
    finish_reason: str = ""
    output: bool = False  # a completion, as opposed to part of the prompt


@dataclass(slots=True)
class ToolUse:
    """What a tool-execution span ran: the span is the call."""

    name: str
    arguments: str
    result: str
    id: str = ""


@dataclass(slots=True)
class Conversation:
    messages: list[Message]
    tool: ToolUse | None
    source: str  # the convention(s) read: "gen_ai", "openinference", "gen_ai+msgtrace", ...


# --- values -------------------------------------------------------------------------------


def _safe(text: str) -> str:
    # json.loads turns a "\ud800" escape into a lone surrogate, which UTF-8 cannot encode:
    # the page showing it would fail.
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _decoded(value: Any) -> Any:
    """A string holding a JSON object or array, decoded; anything else as it is."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            pass
    return value


def _pretty(value: Any) -> str:
    """Text for display: JSON (decoded or in a string) indented, anything else as text."""
    if value is None:
        return ""
    if isinstance(value, str):
        decoded = _decoded(value)
        if not isinstance(decoded, dict | list):
            return _safe(value)
        value = decoded
    try:
        if isinstance(value, dict | list):
            text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
        else:
            text = str(value)
    except (TypeError, ValueError, RecursionError):  # odd keys, 5,000-digit ints, deep nesting
        return "[unreadable value]"
    return _safe(text)


def _text(value: Any) -> str:
    """Message text: strings as sent (even if they look like JSON), the rest via _pretty."""
    return _safe(value) if isinstance(value, str) else _pretty(value)


def _label(value: Any) -> str:
    """A role, name, id or finish reason: strings and numbers only."""
    if isinstance(value, str):
        return _safe(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _pretty(value)
    return ""


def _first(mapping: dict, keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = mapping.get(key)
        if value is not None and value != "":
            return value
    return None


def _indexed(value: Any) -> list:
    """A list, or the values of a dict keyed "0", "1", ... in numeric order (10 after 9)."""
    value = _decoded(value)
    if isinstance(value, list):
        return value
    if not isinstance(value, dict):
        return []
    # ASCII digits only ("²".isdigit() is true), and short: int() refuses 4,300 digits.
    keyed = [
        (int(key), item)
        for key, item in value.items()
        if isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 18
    ]
    return [item for _, item in sorted(keyed, key=itemgetter(0))]


class _Node(dict):
    """A level _unflatten built, as opposed to a dict value the span sent (never written to)."""


def _unflatten(attributes: dict, prefix: str) -> dict:
    """Keys like ``prefix.0.tool_calls.1.name`` as nested dicts; the first key of a path wins."""
    tree = _Node()
    for key, value in attributes.items():
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        *path, leaf = key[len(prefix) :].split(".")
        node = tree
        for step in path:
            node = node.setdefault(step, _Node())
            if not isinstance(node, _Node):  # a value already sits at this path
                break
        else:
            node.setdefault(leaf, value)
    return tree


def _events(events: list) -> Iterator[tuple[str, dict]]:
    for event in events:
        if isinstance(event, dict) and isinstance(event.get("name"), str):
            attributes = event.get("attributes")
            yield event["name"], attributes if isinstance(attributes, dict) else {}


# --- messages -----------------------------------------------------------------------------

_TEXT_PARTS = {"", "text", "input_text", "output_text"}
_REASONING_PARTS = {"reasoning", "thinking"}
_CALL_PARTS = {"tool_call", "function_call", "tool_use"}
_RESULT_PARTS = {"tool_call_response", "tool_result", "function_call_output"}
# A decoded dict with none of these is a structured answer, not a message.
_MESSAGE_KEYS = {"role", "content", "parts", "contents", "tool_calls", "message", "function_call"}


def _tool_call(item: Any) -> ToolCall | None:
    item = _decoded(item)
    if not isinstance(item, dict):
        return None
    call = item["tool_call"] if isinstance(item.get("tool_call"), dict) else item  # OpenInference
    function = call["function"] if isinstance(call.get("function"), dict) else call  # OpenAI
    name = _label(function.get("name"))
    arguments = _first(function, ("arguments", "input"))  # Anthropic's tool_use has "input"
    if not name and arguments is None:
        return None
    return ToolCall(name, _pretty(arguments), _label(_first(call, ("id", "call_id"))))


def _part(part: Any) -> tuple[str, ToolCall | None, str]:
    """One content part as (text, tool call, id of the call it answers)."""
    if not isinstance(part, dict):
        return _text(part), None, ""
    if isinstance(part.get("message_content"), dict):  # OpenInference wraps each part
        part = part["message_content"]
    kind = _label(part.get("type")).lower()
    text = _first(part, ("content", "text"))
    if kind in _CALL_PARTS:
        return "", _tool_call(part), ""
    if kind in _RESULT_PARTS:
        result = _first(part, ("response", "result", "content", "output"))
        return _pretty(result), None, _label(_first(part, ("id", "tool_use_id", "call_id")))
    if kind in _TEXT_PARTS and text is not None:
        return _text(text), None, ""
    if kind in _REASONING_PARTS:
        return "[reasoning]" + (f"\n{_text(text)}" if text is not None else ""), None, ""
    if not kind:
        return _pretty(part), None, ""
    # Images, audio, files: named, not shown ("image_url" and a blob of modality image alike).
    media = _label(part.get("modality")) or kind.removeprefix("input_").removesuffix("_url")
    return f"[{media}]", None, ""


def _content_parts(record: dict) -> list:
    for key in ("parts", "contents", "content"):
        value = record.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, str):
            # OpenLLMetry stores OpenAI and Anthropic multi-part content as a JSON string.
            decoded = _decoded(value)
            if isinstance(decoded, list) and all(
                isinstance(part, dict) and "type" in part for part in decoded
            ):
                return decoded
            return [value]
        if isinstance(value, dict):
            return _indexed(value) or [value]
        return value if isinstance(value, list) else [value]
    return []


def _message(record: Any, output: bool, role: str = "") -> Message | None:
    """One message from an OpenAI-, GenAI-, OpenLLMetry- or OpenInference-shaped record."""
    if not isinstance(record, dict):
        text = _text(record)
        return Message(role or "unknown", text, [], output=output) if text else None
    inner = _decoded(record.get("message"))
    if isinstance(inner, dict):  # OpenInference nests; a gen_ai.choice keeps finish_reason out
        record = {**record, **inner}
    texts, calls, call_id = [], [], _label(record.get("tool_call_id"))
    for part in _content_parts(record):
        text, call, answers = _part(part)
        texts.append(text)
        calls.append(call)
        call_id = call_id or answers
    calls.extend(_tool_call(item) for item in _indexed(record.get("tool_calls"))[:MAX_TOOL_CALLS])
    calls.append(_tool_call(record.get("function_call")))  # OpenAI's pre-tools API
    if record.get("function_call_name"):  # and OpenInference's record of it
        arguments = _pretty(record.get("function_call_arguments_json"))
        calls.append(ToolCall(_label(record["function_call_name"]), arguments))
    content = "\n\n".join(text for text in texts if text) or _text(record.get("refusal"))
    calls = [call for call in calls if call][:MAX_TOOL_CALLS]
    if not content and not calls:
        return None
    return Message(
        role=_label(record.get("role")).strip().lower() or role or "unknown",
        content=content,
        tool_calls=calls,
        tool_call_id=call_id,
        name=_label(record.get("name")),
        finish_reason=_label(record.get("finish_reason")),
        output=output,
    )


def _records(records: list, output: bool, role: str = "") -> list[Message]:
    found = (_message(_decoded(record), output, role) for record in records[:MAX_MESSAGES])
    return [message for message in found if message]


def _messages(value: Any, output: bool, role: str = "") -> list[Message]:
    """Messages from a list of records, one record, or plain text (JSON or not)."""
    decoded = _decoded(value)
    if isinstance(decoded, list):
        return _records(decoded, output, role)
    if isinstance(decoded, dict) and not decoded.keys() & _MESSAGE_KEYS:
        decoded = _pretty(decoded)
    message = _message(decoded, output, role)
    return [message] if message else []


# --- conventions --------------------------------------------------------------------------

Found = tuple[list[Message], list[Message]]  # (inputs, outputs)

_DETAILS_EVENT = "gen_ai.client.inference.operation.details"
_EVENT_ROLES = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_TOOL_KEYS = {
    "name": ("gen_ai.tool.name", "tool.name", "tool_call.function.name"),
    "id": ("gen_ai.tool.call.id", "tool.id", "tool_call.id"),
    # OpenInference's tool.parameters is the tool's schema: shown only without real arguments.
    "arguments": (
        "gen_ai.tool.call.arguments",
        "tool_call.function.arguments",
        "input.value",
        "tool.parameters",
    ),
    # gen_ai.tool.response is msgtrace-sdk's name for the result.
    "result": ("gen_ai.tool.call.result", "gen_ai.tool.response", "output.value"),
}
_GEN_AI_TOOL_KEYS = {
    key for keys in _TOOL_KEYS.values() for key in keys if key.startswith("gen_ai")
}


def _gen_ai(attributes: dict, events: list) -> Found:
    # The same keys may be recorded on the span or, structured, on the details event.
    details = (body for name, body in _events(events) if name == _DETAILS_EVENT)
    for source in (attributes, *details):
        system = _decoded(source.get("gen_ai.system_instructions"))
        key = "parts" if isinstance(system, list) else "content"
        inputs = _records([{"role": "system", key: system}], False)
        inputs += _messages(source.get("gen_ai.input.messages"), False)
        outputs = _messages(source.get("gen_ai.output.messages"), True)
        if inputs or outputs:
            return inputs, outputs
    return [], []


def _flattened(inputs_prefix: str, outputs_prefix: str) -> Callable[[dict, list], Found]:
    def read(attributes: dict, events: list) -> Found:
        inputs = _indexed(_unflatten(attributes, inputs_prefix))
        outputs = _indexed(_unflatten(attributes, outputs_prefix))
        return _records(inputs, False), _records(outputs, True)

    return read


def _event_body(body: dict) -> dict:
    # Azure AI Inference puts the whole body, as JSON, in one attribute.
    content = _decoded(body.get("gen_ai.event.content"))
    return {**body, **content} if isinstance(content, dict) else body


def _span_events(attributes: dict, events: list) -> Found:
    inputs, outputs = [], []
    for name, body in _events(events):
        if name in _EVENT_ROLES:
            body = _event_body(body)
            if name == "gen_ai.tool.message":
                body = {"tool_call_id": body.get("id"), **body}
            inputs += _records([body], False, _EVENT_ROLES[name])
        elif name == "gen_ai.choice":
            outputs += _records([_event_body(body)], True, "assistant")
        elif name == "gen_ai.content.prompt":
            inputs += _messages(body.get("gen_ai.prompt"), False, "user")
        elif name == "gen_ai.content.completion":
            outputs += _messages(body.get("gen_ai.completion"), True, "assistant")
    return inputs, outputs


def _msgtrace_step(name: str, body: dict) -> Message | None:
    """msgtrace-sdk's add_tool_call_event / add_tool_result_event / add_tool_error_event."""
    tool, call_id = _label(body.get("tool_name")), _label(body.get("tool_id"))
    if name == "gen_ai.tool.call":
        call = ToolCall(tool, _pretty(body.get("arguments")), call_id)
        return Message("assistant", "", [call], output=True)
    if name == "gen_ai.tool.result":
        content = _pretty(body.get("result"))
    elif name == "gen_ai.tool.error":
        content = f"Error: {_text(body.get('error'))}"
    else:
        return None
    return Message("tool", content, [], tool_call_id=call_id, name=tool, output=True)


def _msgtrace(attributes: dict, events: list) -> Found:
    inputs = _messages(attributes.get("gen_ai.prompt"), False, "user")
    answer = _messages(
        _first(attributes, ("gen_ai.completion", "gen_ai.agent.response")), True, "assistant"
    )
    callings = _indexed(attributes.get("tool.callings"))[:MAX_TOOL_CALLS]
    calls = [call for call in map(_tool_call, callings) if call]
    responses = _indexed(attributes.get("tool.responses"))  # [{"id": ..., "content": ...}]
    ids = [{"tool_call_id": item.get("id"), **item} for item in responses if isinstance(item, dict)]
    steps = _records(ids, True, "tool")
    if not calls and not steps:
        steps = [m for name, body in _events(events) if (m := _msgtrace_step(name, body))]
    # Calls with no results are the answer's own (content plus tool_calls, as OpenAI has
    # it); calls that ran come before the answer the agent gave after them.
    if calls and answer and not steps:
        answer[-1].tool_calls = (answer[-1].tool_calls + calls)[:MAX_TOOL_CALLS]
    elif calls:
        steps.insert(0, Message("assistant", "", calls, output=True))
    return inputs, steps + answer


def _is_tool(attributes: dict) -> bool:
    return (
        _first(attributes, _TOOL_KEYS["name"]) is not None
        or attributes.get("gen_ai.operation.name") == "execute_tool"
        or attributes.get("openinference.span.kind") == "TOOL"
    )


def _input_output(attributes: dict, events: list) -> Found:
    if _is_tool(attributes):  # these are the tool's arguments and result, shown as such
        return [], []
    inputs = _pretty(attributes.get("input.value"))
    outputs = _pretty(attributes.get("output.value"))
    return (
        [Message("input", inputs, [])] if inputs else [],
        [Message("output", outputs, [], output=True)] if outputs else [],
    )


CONVENTIONS: tuple[tuple[str, Callable[[dict, list], Found]], ...] = (
    ("gen_ai", _gen_ai),  # gen_ai.system_instructions, gen_ai.input/output.messages
    ("openinference", _flattened("llm.input_messages.", "llm.output_messages.")),
    ("openllmetry", _flattened("gen_ai.prompt.", "gen_ai.completion.")),
    ("openllmetry", _flattened("llm.prompts.", "llm.completions.")),  # before gen_ai.*
    ("events", _span_events),  # gen_ai.user.message, gen_ai.choice, ... span events
    ("msgtrace", _msgtrace),  # gen_ai.prompt, gen_ai.completion, tool.callings, ...
    ("input/output", _input_output),  # OpenInference's generic input.value / output.value
)


def _tool_use(attributes: dict) -> ToolUse | None:
    if not _is_tool(attributes):
        return None
    found = {field: _first(attributes, keys) for field, keys in _TOOL_KEYS.items()}
    return ToolUse(
        _label(found["name"]),
        _pretty(found["arguments"]),
        _pretty(found["result"]),
        _label(found["id"]),
    )


def conversation(attributes: dict, events: list) -> Conversation | None:
    """The span's messages and tool use; None when the span carries neither."""
    attributes = attributes if isinstance(attributes, dict) else {}
    events = events if isinstance(events, list) else []
    inputs: list[Message] = []
    outputs: list[Message] = []
    sources: list[str] = []
    for source, read in CONVENTIONS:
        found_inputs, found_outputs = read(attributes, events)
        if found_inputs and not inputs:
            inputs = found_inputs
            sources.append(source)
        if found_outputs and not outputs:
            outputs = found_outputs
            sources.append(source)
        if inputs and outputs:
            break
    # msgtrace-sdk (and the OTel spans) give finish reasons once per span, one per choice.
    reasons = _indexed(attributes.get("gen_ai.response.finish_reasons"))
    answers = [message for message in outputs if message.role != "tool"]
    for message, reason in zip(answers, reasons, strict=False):
        message.finish_reason = message.finish_reason or _label(reason)

    tool = _tool_use(attributes)
    messages = (inputs + outputs)[:MAX_MESSAGES]
    if not messages and tool is None:
        return None
    if not sources:
        sources.append("gen_ai" if attributes.keys() & _GEN_AI_TOOL_KEYS else "openinference")
    return Conversation(messages, tool, "+".join(dict.fromkeys(sources)))
