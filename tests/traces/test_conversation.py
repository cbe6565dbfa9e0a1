from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgtrace.sdk import (
    MsgTraceAttributes,
    Spans,
    add_tool_call_event,
    add_tool_error_event,
    add_tool_result_event,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from traces.conversation import (
    MAX_MESSAGES,
    MAX_TOOL_CALLS,
    Conversation,
    Message,
    ToolCall,
    ToolUse,
    conversation,
)

WEATHER_ARGS = '{\n  "location": "Paris"\n}'


def _roles(result: Conversation) -> list[str]:
    return [message.role for message in result.messages]


def _event(name: str, **attributes) -> dict:
    return {"name": name, "time_unix_nano": 1_700_000_000_000_000_000, "attributes": attributes}


def _recorded(body) -> tuple[dict, list]:
    """Attributes and events of one span recorded through the real OTel SDK, as stored."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("span"):
        body()
    (span,) = exporter.get_finished_spans()

    def plain(attributes):  # the SDK keeps arrays as tuples; ingest stores lists
        return {k: list(v) if isinstance(v, tuple) else v for k, v in attributes.items()}

    events = [
        {"name": e.name, "time_unix_nano": e.timestamp, "attributes": plain(e.attributes)}
        for e in span.events
    ]
    return plain(span.attributes), events


# --- OTel GenAI (current) -----------------------------------------------------------------

GEN_AI_INPUT = [
    {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
    {
        "role": "assistant",
        "parts": [
            {
                "type": "tool_call",
                "id": "call_VSPygqKTWdrhaFErNvMV18Yl",
                "name": "get_weather",
                "arguments": {"location": "Paris"},
            }
        ],
    },
    {
        "role": "tool",
        "parts": [
            {
                "type": "tool_call_response",
                "id": "call_VSPygqKTWdrhaFErNvMV18Yl",
                "response": "rainy, 57°F",
            }
        ],
    },
]
GEN_AI_OUTPUT = [
    {
        "role": "assistant",
        "parts": [{"type": "text", "content": "It is rainy in Paris, 57°F."}],
        "finish_reason": "stop",
    }
]


def test_gen_ai_messages_read_as_a_multi_turn_conversation_with_a_tool_call():
    result = conversation(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system_instructions": json.dumps(
                [{"type": "text", "content": "You are a weather bot."}]
            ),
            "gen_ai.input.messages": json.dumps(GEN_AI_INPUT),
            "gen_ai.output.messages": json.dumps(GEN_AI_OUTPUT),
        },
        [],
    )

    assert result.source == "gen_ai"
    assert result.tool is None
    assert result.messages == [
        Message("system", "You are a weather bot.", []),
        Message("user", "Weather in Paris?", []),
        Message(
            "assistant",
            "",
            [ToolCall("get_weather", WEATHER_ARGS, "call_VSPygqKTWdrhaFErNvMV18Yl")],
        ),
        Message("tool", "rainy, 57°F", [], tool_call_id="call_VSPygqKTWdrhaFErNvMV18Yl"),
        Message("assistant", "It is rainy in Paris, 57°F.", [], finish_reason="stop", output=True),
    ]


def test_gen_ai_structured_values_on_the_inference_details_event_are_read():
    details = _event(
        "gen_ai.client.inference.operation.details",
        **{"gen_ai.input.messages": GEN_AI_INPUT, "gen_ai.output.messages": GEN_AI_OUTPUT},
    )

    result = conversation({"gen_ai.request.model": "gpt-4o"}, [details])

    assert result.source == "gen_ai"
    assert _roles(result) == ["user", "assistant", "tool", "assistant"]
    assert result.messages[-1].output


def test_gen_ai_multi_part_content_joins_text_and_names_media():
    message = {
        "role": "user",
        "parts": [
            {"type": "text", "content": "What is in this picture?"},
            {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "iVBO"},
            {"type": "uri", "modality": "video", "uri": "https://example.com/clip.mp4"},
            {"type": "text", "content": "Answer in one word."},
        ],
    }

    result = conversation({"gen_ai.input.messages": json.dumps([message])}, [])

    assert result.messages[0].content == (
        "What is in this picture?\n\n[image]\n\n[video]\n\nAnswer in one word."
    )
    assert "iVBO" not in result.messages[0].content


def test_tool_result_reported_as_result_and_json_arguments_string_are_pretty_printed():
    messages = [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "name": "f", "arguments": '{"a":1}'}],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "result": {"t": 2}}]},
    ]

    result = conversation({"gen_ai.input.messages": messages}, [])

    assert result.messages[0].tool_calls == [ToolCall("f", '{\n  "a": 1\n}')]
    assert result.messages[1].content == '{\n  "t": 2\n}'
    assert result.messages[1].tool_call_id == "c1"


# --- OpenLLMetry ----------------------------------------------------------------------------


def test_openllmetry_flattened_prompt_and_completion_with_tool_calls():
    attributes = {
        "llm.request.type": "chat",
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "You are a weather bot.",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "Weather in Paris?",
        "gen_ai.prompt.2.role": "assistant",
        "gen_ai.prompt.2.tool_calls.0.id": "call_1",
        "gen_ai.prompt.2.tool_calls.0.name": "get_weather",
        "gen_ai.prompt.2.tool_calls.0.arguments": '{"location": "Paris"}',
        "gen_ai.prompt.3.role": "tool",
        "gen_ai.prompt.3.content": "rainy, 57°F",
        "gen_ai.prompt.3.tool_call_id": "call_1",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "It is rainy.",
        "gen_ai.completion.0.finish_reason": "stop",
    }

    result = conversation(attributes, [])

    assert result.source == "openllmetry"
    assert _roles(result) == ["system", "user", "assistant", "tool", "assistant"]
    assert result.messages[2].tool_calls == [ToolCall("get_weather", WEATHER_ARGS, "call_1")]
    assert result.messages[3].tool_call_id == "call_1"
    assert result.messages[4] == Message(
        "assistant", "It is rainy.", [], finish_reason="stop", output=True
    )
    assert [message.output for message in result.messages] == [False] * 4 + [True]


def test_flattened_messages_sort_numerically_so_index_10_comes_after_9():
    attributes = {}
    for i in range(12):
        attributes[f"gen_ai.prompt.{i}.role"] = "user"
        attributes[f"gen_ai.prompt.{i}.content"] = f"turn {i}"

    result = conversation(attributes, [])

    assert [m.content for m in result.messages] == [f"turn {i}" for i in range(12)]


def test_openllmetry_json_multi_part_content_is_split_into_text_and_image():
    content = [
        {"type": "text", "text": "Describe this."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
    ]
    attributes = {"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": json.dumps(content)}

    assert conversation(attributes, []).messages[0].content == "Describe this.\n\n[image]"


def test_openllmetry_completion_function_call_and_refusal():
    attributes = {
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.finish_reason": "tool_calls",
        "gen_ai.completion.0.tool_calls.0.name": "lookup",
        "gen_ai.completion.0.tool_calls.0.arguments": "not json",
        "gen_ai.completion.1.role": "assistant",
        "gen_ai.completion.1.refusal": "I can't help with that.",
    }

    first, second = conversation(attributes, []).messages

    assert first.tool_calls == [ToolCall("lookup", "not json")]
    assert first.finish_reason == "tool_calls"
    assert second.content == "I can't help with that."


# --- OpenInference ----------------------------------------------------------------------------


def test_openinference_messages_with_contents_tool_calls_and_tool_result():
    p = "llm.input_messages"
    attributes = {
        "openinference.span.kind": "LLM",
        f"{p}.0.message.role": "system",
        f"{p}.0.message.content": "You are a weather bot.",
        f"{p}.1.message.role": "user",
        f"{p}.1.message.contents.0.message_content.type": "text",
        f"{p}.1.message.contents.0.message_content.text": "Weather where this photo was taken?",
        f"{p}.1.message.contents.1.message_content.type": "image",
        f"{p}.1.message.contents.1.message_content.image.image.url": "https://x/img.png",
        f"{p}.2.message.role": "assistant",
        f"{p}.2.message.tool_calls.0.tool_call.id": "call_1",
        f"{p}.2.message.tool_calls.0.tool_call.function.name": "get_weather",
        f"{p}.2.message.tool_calls.0.tool_call.function.arguments": '{"location": "Paris"}',
        f"{p}.3.message.role": "tool",
        f"{p}.3.message.name": "get_weather",
        f"{p}.3.message.tool_call_id": "call_1",
        f"{p}.3.message.content": "rainy, 57°F",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "It is rainy in Paris.",
        "input.value": '{"messages": "the raw request"}',
        "output.value": '{"choices": "the raw response"}',
    }

    result = conversation(attributes, [])

    assert result.source == "openinference"
    assert result.messages == [
        Message("system", "You are a weather bot.", []),
        Message("user", "Weather where this photo was taken?\n\n[image]", []),
        Message("assistant", "", [ToolCall("get_weather", WEATHER_ARGS, "call_1")]),
        Message("tool", "rainy, 57°F", [], tool_call_id="call_1", name="get_weather"),
        Message("assistant", "It is rainy in Paris.", [], output=True),
    ]


def test_openinference_tool_span_shows_the_call_not_the_parameter_schema():
    attributes = {
        "openinference.span.kind": "TOOL",
        "tool.name": "get_weather",
        "tool.description": "Current weather",
        "tool.parameters": '{"type": "object", "properties": {"location": {"type": "string"}}}',
        "input.value": '{"location": "Paris"}',
        "output.value": "rainy, 57°F",
    }

    result = conversation(attributes, [])

    assert result.tool == ToolUse("get_weather", WEATHER_ARGS, "rainy, 57°F")
    assert result.messages == []  # input.value/output.value are the tool's, not a chat
    assert result.source == "openinference"


# --- Span events (older GenAI semconv) ---------------------------------------------------------


def test_gen_ai_message_and_choice_events():
    tool_calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
        }
    ]
    events = [
        _event("gen_ai.system.message", **{"gen_ai.system": "openai", "content": "Be brief."}),
        _event("gen_ai.user.message", content="Weather in Paris?"),
        _event("gen_ai.assistant.message", tool_calls=json.dumps(tool_calls)),
        _event("gen_ai.tool.message", content="rainy, 57°F", id="call_1"),
        _event(
            "gen_ai.choice",
            index=0,
            finish_reason="stop",
            message=json.dumps({"role": "assistant", "content": "Rainy."}),
        ),
        "not an event",
        {"name": 7},
    ]

    result = conversation({}, events)

    assert result.source == "events"
    assert result.messages == [
        Message("system", "Be brief.", []),
        Message("user", "Weather in Paris?", []),
        Message("assistant", "", [ToolCall("get_weather", WEATHER_ARGS, "call_1")]),
        Message("tool", "rainy, 57°F", [], tool_call_id="call_1"),
        Message("assistant", "Rainy.", [], finish_reason="stop", output=True),
    ]


def test_azure_style_events_carry_their_body_in_gen_ai_event_content():
    events = [
        _event(
            "gen_ai.user.message",
            **{"gen_ai.event.content": json.dumps({"role": "user", "content": "Hi"})},
        ),
        _event(
            "gen_ai.choice",
            **{
                "gen_ai.event.content": json.dumps(
                    {"finish_reason": "stop", "index": 0, "message": {"content": "Hello!"}}
                )
            },
        ),
    ]

    result = conversation({}, events)

    assert result.messages == [
        Message("user", "Hi", []),
        Message("assistant", "Hello!", [], finish_reason="stop", output=True),
    ]


def test_content_prompt_and_completion_events():
    prompt = json.dumps([{"role": "user", "content": "Tell me a joke"}])
    events = [
        _event("gen_ai.content.prompt", **{"gen_ai.prompt": prompt}),
        _event("gen_ai.content.completion", **{"gen_ai.completion": "Why did the chicken..."}),
    ]

    result = conversation({}, events)

    assert [(m.role, m.content, m.output) for m in result.messages] == [
        ("user", "Tell me a joke", False),
        ("assistant", "Why did the chicken...", True),
    ]


# --- msgtrace-sdk, recorded through the real SDK ----------------------------------------------


def test_msgtrace_sdk_chat_span_with_messages_prompt_and_finish_reason():
    def body():
        MsgTraceAttributes.set_operation_name("chat")
        MsgTraceAttributes.set_prompt(
            [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is AI?"},
            ]
        )
        MsgTraceAttributes.set_completion("Software that learns.")
        MsgTraceAttributes.set_finish_reason("stop")

    result = conversation(*_recorded(body))

    assert result.source == "msgtrace"
    assert result.messages == [
        Message("system", "You are terse.", []),
        Message("user", "What is AI?", []),
        Message("assistant", "Software that learns.", [], finish_reason="stop", output=True),
    ]


def test_msgtrace_sdk_plain_prompt_reads_as_a_user_message():
    def body():
        MsgTraceAttributes.set_prompt("What is AI?")
        MsgTraceAttributes.set_completion('{"answer": "software that learns"}')

    result = conversation(*_recorded(body))

    assert result.messages == [
        Message("user", "What is AI?", []),
        Message("assistant", '{\n  "answer": "software that learns"\n}', [], output=True),
    ]


def test_msgtrace_sdk_agent_span_with_callings_responses_and_tool_attributes():
    def body():  # msgtrace-sdk's own tool-calling example
        MsgTraceAttributes.set_operation_name("agent")
        MsgTraceAttributes.set_agent_name("research_agent")
        MsgTraceAttributes.set_tool_name("search_web")
        MsgTraceAttributes.set_tool_call_id("call_001")
        MsgTraceAttributes.set_tool_call_arguments({"query": "latest AI research"})
        MsgTraceAttributes.set_tool_response({"results": ["r1", "r2"]})
        MsgTraceAttributes.set_tool_callings(
            [{"id": "call_001", "name": "search_web", "arguments": {"query": "latest AI"}}]
        )
        MsgTraceAttributes.set_tool_responses([{"id": "call_001", "content": "Found 2 results"}])
        MsgTraceAttributes.set_agent_response("Two papers stand out.")

    result = conversation(*_recorded(body))

    assert result.tool == ToolUse(
        "search_web",
        '{\n  "query": "latest AI research"\n}',
        '{\n  "results": [\n    "r1",\n    "r2"\n  ]\n}',
        "call_001",
    )
    assert result.messages == [
        Message(
            "assistant",
            "",
            [ToolCall("search_web", '{\n  "query": "latest AI"\n}', "call_001")],
            output=True,
        ),
        Message("tool", "Found 2 results", [], tool_call_id="call_001", output=True),
        Message("assistant", "Two papers stand out.", [], output=True),
    ]
    assert result.source == "msgtrace"


def test_msgtrace_sdk_tool_events_read_in_order():
    def body():
        add_tool_call_event("search", "t1", arguments={"q": "otel"}, step=1)
        add_tool_result_event("search", "t1", result="3 hits", step=1)
        add_tool_call_event("fetch", "t2", arguments={"url": "https://x"}, step=2)
        add_tool_error_event("fetch", "t2", error="timeout", step=2)

    result = conversation(*_recorded(body))

    assert [(m.role, m.content, m.name, m.tool_call_id) for m in result.messages] == [
        ("assistant", "", "", ""),
        ("tool", "3 hits", "search", "t1"),
        ("assistant", "", "", ""),
        ("tool", "Error: timeout", "fetch", "t2"),
    ]
    assert result.messages[0].tool_calls == [ToolCall("search", '{\n  "q": "otel"\n}', "t1")]


def test_msgtrace_sdk_tool_span_decorator_is_a_tool_use():
    @Spans.set_tool_attributes("search_db", description="Search knowledge base")
    def search():
        MsgTraceAttributes.set_tool_call_arguments('{"query": "AI"}')
        MsgTraceAttributes.set_tool_response("2 rows")

    result = conversation(*_recorded(search))

    assert result == Conversation(
        [], ToolUse("search_db", '{\n  "query": "AI"\n}', "2 rows"), "gen_ai"
    )


def test_gen_ai_tool_execution_span():
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "get_weather",
        "gen_ai.tool.call.id": "call_1",
        "gen_ai.tool.call.arguments": '{"location": "Paris"}',
        "gen_ai.tool.call.result": "rainy, 57°F",
    }

    result = conversation(attributes, [])

    assert result == Conversation(
        [], ToolUse("get_weather", WEATHER_ARGS, "rainy, 57°F", "call_1"), "gen_ai"
    )


# --- fallback, preference, mixing -----------------------------------------------------------


def test_input_and_output_values_are_the_fallback_pretty_printed():
    attributes = {
        "openinference.span.kind": "CHAIN",
        "input.value": '{"question": "What is AI?"}',
        "output.value": "Software that learns.",
    }

    result = conversation(attributes, [])

    assert result.source == "input/output"
    assert result.messages == [
        Message("input", '{\n  "question": "What is AI?"\n}', []),
        Message("output", "Software that learns.", [], output=True),
    ]


def test_richest_convention_wins_without_duplicating_messages():
    attributes = {
        "gen_ai.input.messages": json.dumps(GEN_AI_INPUT),
        "gen_ai.output.messages": json.dumps(GEN_AI_OUTPUT),
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "Weather in Paris?",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "It is rainy in Paris, 57°F.",
        "input.value": "raw",
        "output.value": "raw",
    }

    result = conversation(attributes, [])

    assert result.source == "gen_ai"
    assert len(result.messages) == 4
    assert [m.content for m in result.messages].count("Weather in Paris?") == 1


def test_prompt_and_response_from_different_libraries_read_as_one_exchange():
    attributes = {  # msgtrace-sdk's prompt inside a msgflux model span
        "gen_ai.prompt": json.dumps([{"role": "user", "content": "Hi"}]),
        "gen_ai.output.messages": json.dumps(GEN_AI_OUTPUT),
    }

    result = conversation(attributes, [])

    assert _roles(result) == ["user", "assistant"]
    assert result.source == "gen_ai+msgtrace"


# --- nothing, malformed, hostile -------------------------------------------------------------


def test_spans_without_messages_or_tools_have_no_conversation():
    assert conversation({}, []) is None
    assert (
        conversation({"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 9}, []) is None
    )
    # Content capture off: roles and reasons, no text.
    assert (
        conversation({"gen_ai.prompt.0.role": "user"}, [_event("gen_ai.choice", index=0)]) is None
    )
    assert conversation({"gen_ai.input.messages": "[]"}, []) is None


def test_wrong_types_for_the_arguments_themselves():
    assert conversation(None, None) is None
    assert conversation([], "events") is None
    assert (
        conversation({"gen_ai.prompt.0.content": "hi"}, {"name": "x"}).messages[0].content == "hi"
    )


def test_malformed_json_is_shown_as_text_not_raised():
    result = conversation({"gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "te'}, [])

    assert result.messages == [Message("unknown", '[{"role": "user", "parts": [{"type": "te', [])]


def test_wrong_types_inside_messages_are_skipped_or_shown_as_text():
    messages = [
        None,
        42,
        ["nested", ["list"]],
        {"role": ["not", "a", "string"], "parts": "just text"},
        {"role": "user", "parts": [None, 3, {"type": None}, {"type": "tool_call"}]},
        {"role": "assistant", "tool_calls": "garbage", "content": {"text": "x"}},
        {"role": "tool", "parts": [{"type": "tool_call_response", "response": float("nan")}]},
    ]

    result = conversation({"gen_ai.input.messages": messages, "gen_ai.output.messages": 12}, [])

    assert isinstance(result, Conversation)
    assert result.messages[0].content == "42"
    assert result.messages[2].role == "unknown"
    assert result.messages[2].content == "just text"


def test_huge_and_odd_indexes_do_not_break_ordering():
    attributes = {
        "gen_ai.prompt.99999999999.role": "user",
        "gen_ai.prompt.99999999999.content": "last",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "first",
        "gen_ai.prompt." + "9" * 5000 + ".content": "ignored: too many digits",
        "gen_ai.prompt.².content": "ignored: not an ASCII digit",
        "gen_ai.prompt.x.content": "ignored: not an index",
    }

    assert [m.content for m in conversation(attributes, []).messages] == ["first", "last"]


def test_messages_and_tool_calls_are_capped():
    calls = [{"type": "tool_call", "name": f"f{i}"} for i in range(MAX_TOOL_CALLS + 50)]
    messages = [{"role": "assistant", "parts": calls}] + [
        {"role": "user", "content": str(i)} for i in range(MAX_MESSAGES + 100)
    ]

    result = conversation({"gen_ai.input.messages": json.dumps(messages)}, [])

    assert len(result.messages) == MAX_MESSAGES
    assert len(result.messages[0].tool_calls) == MAX_TOOL_CALLS


def test_deeply_nested_json_and_lone_surrogates_are_survived():
    deep = "[" * 100_000 + "]" * 100_000
    result = conversation({"input.value": deep, "output.value": '["\\ud800 broken"]'}, [])

    assert result.messages[0].content == deep  # not JSON that Python can decode: raw text
    assert "\ufffd broken" in result.messages[1].content
    result.messages[1].content.encode()  # a page can be written from it


def test_span_text_stays_plain_strings():
    attributes = {"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "<script>x</script>"}

    message = conversation(attributes, []).messages[0]

    assert type(message.content) is str
    assert message.content == "<script>x</script>"


_KEYS = [
    "gen_ai.system_instructions",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.prompt.0.content",
    "gen_ai.prompt.10.tool_calls.0.arguments",
    "gen_ai.completion.0.role",
    "llm.input_messages.0.message.contents.0.message_content.type",
    "llm.output_messages.1.message.tool_calls.0.tool_call.function.name",
    "gen_ai.response.finish_reasons",
    "gen_ai.tool.name",
    "tool.name",
    "tool.callings",
    "tool.responses",
    "input.value",
    "output.value",
]
_EVENT_NAMES = [
    "gen_ai.user.message",
    "gen_ai.tool.message",
    "gen_ai.choice",
    "gen_ai.content.prompt",
    "gen_ai.client.inference.operation.details",
    "gen_ai.tool.call",
    "gen_ai.tool.result",
]
_words = st.sampled_from(
    ["role", "content", "parts", "type", "text", "tool_call", "tool_calls", "message", "id", "0"]
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | _words,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10) | _words, children, max_size=4)
    ),
    max_leaves=25,
)
_value = _json | _json.map(lambda value: json.dumps(value)[:200])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    attributes=st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=30), _value, max_size=8),
    events=st.lists(
        _json
        | st.fixed_dictionaries(
            {
                "name": st.sampled_from(_EVENT_NAMES),
                "attributes": st.dictionaries(_words | st.sampled_from(_KEYS), _value, max_size=5),
            }
        ),
        max_size=4,
    ),
)
def test_any_attributes_and_events_give_none_or_a_conversation_of_plain_strings(attributes, events):
    result = conversation(attributes, events)

    assert result is None or isinstance(result, Conversation)
    for message in result.messages if result else []:
        assert isinstance(message.role, str) and message.role
        assert isinstance(message.content, str)
        assert all(isinstance(call.arguments, str) for call in message.tool_calls)
