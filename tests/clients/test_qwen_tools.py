"""Real tool calls from a real model: Qwen2.5-Coder-0.5B-Instruct through the official
`openai` client. Its GGUF template lays out the tools itself (Hermes format); the model
answers with `<tool_call>` blocks or, as it often does, with bare or fenced JSON calls,
which the server turns into OpenAI `tool_calls` when the name is one of the request's tools.

Everything is greedy (temperature 0). The replies asserted here were seen on this model
with llama.cpp as well (same names and arguments; llama.cpp returns them as text).
"""
from __future__ import annotations

import json

from conftest import WEATHER_TOOL_OPENAI

ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
TOOLS = [WEATHER_TOOL_OPENAI, ADD_TOOL]
LISBON = [{"role": "user", "content": "What is the weather like in Lisbon right now?"}]


def chat(oa, model, messages, **kw):
    return oa.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=128, **kw)


def calls_of(message):
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


def streamed(oa, model, messages, **kw):
    """Reassembles a streamed reply: (content, calls by index, finish_reason)."""
    content, calls, finish = "", {}, None
    for ch in chat(oa, model, messages, stream=True, **kw):
        for choice in ch.choices:
            content += choice.delta.content or ""
            for d in choice.delta.tool_calls or []:
                slot = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = d.id or slot["id"]
                if d.function is not None:
                    slot["name"] += d.function.name or ""
                    slot["arguments"] += d.function.arguments or ""
            finish = choice.finish_reason or finish
    return content, calls, finish


def test_qwen_calls_get_weather_with_the_city_and_uses_the_result(oa, qwen):
    r = chat(oa, qwen, LISBON, tools=TOOLS)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c
    assert calls_of(c.message) == [("get_weather", {"location": "Lisbon"})], c.message
    assert not c.message.content
    call = c.message.tool_calls[0]
    assert call.id and call.type == "function"

    # The result goes back as the template's `tool` role; asked for text, the model answers.
    follow_up = LISBON + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees Celsius and sunny"},
    ]
    r2 = chat(oa, qwen, follow_up, tools=TOOLS, tool_choice="none")
    assert r2.usage.prompt_tokens > r.usage.prompt_tokens + 10
    assert not r2.choices[0].message.tool_calls
    assert r2.choices[0].message.content


def test_qwen_calls_add_with_both_numbers(oa, qwen):
    r = chat(oa, qwen, [{"role": "user", "content": "What is 1234 plus 4321?"}], tools=TOOLS)
    assert calls_of(r.choices[0].message) == [("add", {"a": 1234, "b": 4321})]


def test_qwen_streamed_call_matches_the_whole_reply(oa, qwen):
    content, calls, finish = streamed(oa, qwen, LISBON, tools=TOOLS)
    assert finish == "tool_calls"
    assert content == ""
    assert sorted(calls) == [0], calls
    assert calls[0]["id"] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"location": "Lisbon"}


def test_qwen_reply_with_several_calls(oa, qwen):
    # After a tool result, with tools still offered, this model answers with two calls
    # (get_weather again, then add): a multiple-call reply parsed from real output.
    r = chat(oa, qwen, LISBON, tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    follow_up = LISBON + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees Celsius and sunny"},
    ]
    r2 = chat(oa, qwen, follow_up, tools=TOOLS)
    whole = calls_of(r2.choices[0].message)
    assert len(whole) >= 2, r2.choices[0].message
    assert {n for n, _ in whole} <= {"get_weather", "add"}
    ids = [c.id for c in r2.choices[0].message.tool_calls]
    assert len(set(ids)) == len(ids)
    # Streamed: the same calls, at indices 0, 1, ...
    _, calls, finish = streamed(oa, qwen, follow_up, tools=TOOLS)
    assert finish == "tool_calls"
    assert sorted(calls) == list(range(len(whole)))
    assert [(calls[i]["name"], json.loads(calls[i]["arguments"])) for i in sorted(calls)] == whole


def test_qwen_required_call_is_constrained_to_the_hermes_block(oa, qwen):
    r = chat(oa, qwen, [{"role": "user", "content": "Say hello."}], tools=TOOLS, tool_choice="required")
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    (name, args), = calls_of(c.message)
    assert name in ("get_weather", "add") and isinstance(args, dict)
    r = chat(oa, qwen, [{"role": "user", "content": "Say hello."}], tools=TOOLS,
             tool_choice={"type": "function", "function": {"name": "add"}})
    (name, args), = calls_of(r.choices[0].message)
    assert name == "add" and set(args) >= {"a", "b"} and all(isinstance(v, int) for v in args.values())
