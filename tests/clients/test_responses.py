"""The OpenAI Responses API through the official `openai` client (3.57.0): function tools
(Qwen2.5-Coder-0.5B, forced with tool_choice so it is deterministic) and their outputs
chained with previous_response_id; streaming event types; retrieve / list / delete /
input_items; the code interpreter run in the sandbox; an MCP server's tools (the real
FastMCP server of tests/clients/mcp_server.py); and the same API on Llama Stack's path,
also through llama-stack-client 0.2.12 (create, retrieve, list, streaming).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "City name, e.g. Paris"}},
        "required": ["location"],
    },
}


def test_function_call_then_output_with_previous_response_id(oa, qwen):
    r = oa.responses.create(model=qwen, input="What is the weather like in Lisbon right now?",
                            tools=[WEATHER], tool_choice="required", temperature=0, max_output_tokens=64)
    assert r.object == "response" and r.status == "completed", r
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1, r.output
    call = calls[0]
    assert call.name == "get_weather"
    args = json.loads(call.arguments)
    assert isinstance(args.get("location"), str), args
    assert call.call_id
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens

    # tool_choice none: the model answers in text (it could call get_weather again).
    r2 = oa.responses.create(model=qwen, previous_response_id=r.id, tools=[WEATHER], tool_choice="none",
                             temperature=0, max_output_tokens=48,
                             input=[{"type": "function_call_output", "call_id": call.call_id,
                                     "output": json.dumps({"temperature_c": 21, "sky": "sunny"})}])
    assert r2.previous_response_id == r.id
    assert r2.status in ("completed", "incomplete"), r2
    # The model read the result: it answers in text.
    assert r2.output_text.strip(), r2.output
    items = oa.responses.input_items.list(r2.id)
    assert [i.type for i in items.data] == ["function_call_output"]


def test_streaming_event_types(oa, model):
    events = list(oa.responses.create(model=model, input="Say hello.", temperature=0,
                                      max_output_tokens=16, stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"], types
    assert types[-1] in ("response.completed", "response.incomplete"), types
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    if text:
        for t in ("response.output_item.added", "response.content_part.added", "response.output_text.done",
                  "response.content_part.done", "response.output_item.done"):
            assert t in types, types
        done = next(e for e in events if e.type == "response.output_text.done")
        assert done.text.strip() == text.strip()
    final = events[-1].response
    assert final.output_text.strip() == text.strip()


def test_streamed_function_call_arguments(oa, qwen):
    events = list(oa.responses.create(model=qwen, input="Weather in Paris?", tools=[WEATHER],
                                      tool_choice={"type": "function", "name": "get_weather"},
                                      temperature=0, max_output_tokens=64, stream=True))
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types, types
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert "location" in json.loads(done.arguments)
    item = next(e.item for e in events if e.type == "response.output_item.done" and e.item.type == "function_call")
    assert item.name == "get_weather" and item.arguments == done.arguments


def test_retrieve_list_delete_input_items(oa, model):
    r = oa.responses.create(model=model, input=[{"role": "user", "content": "hi"},
                                                {"role": "user", "content": [{"type": "input_text", "text": "again"}]}],
                            max_output_tokens=4, temperature=0, metadata={"suite": "clients"})
    got = oa.responses.retrieve(r.id)
    assert got.id == r.id and got.metadata == {"suite": "clients"}
    assert got.output_text == r.output_text
    items = oa.responses.input_items.list(r.id, order="asc")
    assert [i.content[0].text for i in items.data] == ["hi", "again"]
    page = oa.responses.input_items.list(r.id, order="asc", limit=1)
    assert len(page.data) == 1 and page.has_more
    rest = oa.responses.input_items.list(r.id, order="asc", after=page.data[0].id)
    assert [i.content[0].text for i in rest.data] == ["again"]
    # openai 3.57 has no responses.list: the raw GET, OpenAI's list shape.
    listing = oa.get("/responses", cast_to=object, options={"params": {"limit": 100}})
    assert listing["object"] == "list" and r.id in [x["id"] for x in listing["data"]]
    assert oa.responses.delete(r.id) is None
    import openai

    with pytest.raises(openai.NotFoundError):
        oa.responses.retrieve(r.id)


def test_store_false_cannot_be_continued(oa, model):
    import openai

    r = oa.responses.create(model=model, input="hi", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError) as e:
        oa.responses.create(model=model, input="again", previous_response_id=r.id, max_output_tokens=2)
    assert "store: false" in str(e.value)


def test_file_search_on_an_unknown_store_is_refused(oa, model):
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        oa.responses.create(model=model, input="x", tools=[{"type": "file_search", "vector_store_ids": ["vs_1"]}])
    assert "no vector store with id 'vs_1'" in str(e.value)


def test_code_interpreter_runs_in_the_sandbox(oa, model):
    r = oa.responses.create(model=model, input="Compute 6*7 in Python and print it.",
                            instructions="You are a helpful assistant. Use Python to compute.",
                            tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
                            tool_choice="required", temperature=0, max_output_tokens=48,
                            extra_body={"max_infer_iters": 2})
    calls = [o for o in r.output if o.type == "code_interpreter_call"]
    assert calls, r.output
    ci = calls[0]
    assert ci.code is not None and ci.container_id
    logs = ci.outputs[0].logs
    # The sandbox's status line: the call really ran (whatever code the model wrote).
    assert logs.startswith(("completed", "timed out", "the interpreter died")), logs


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def mcp_http():
    """The real FastMCP server (tests/clients/mcp_server.py) over streamable HTTP."""
    port = free_port()
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.Popen([sys.executable, os.path.join(here, "mcp_server.py"), "http", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    p.terminate()
    p.wait(10)


def test_mcp_tools_are_listed_and_called(oa, qwen, mcp_http):
    r = oa.responses.create(model=qwen, input="Add 2 and 40 with the add tool.",
                            tools=[{"type": "mcp", "server_label": "calc", "server_url": mcp_http,
                                    "allowed_tools": ["add"], "require_approval": "never"}],
                            tool_choice={"type": "mcp", "server_label": "calc", "name": "add"},
                            temperature=0, max_output_tokens=48, extra_body={"max_infer_iters": 2})
    assert r.output[0].type == "mcp_list_tools", r.output
    assert [t.name for t in r.output[0].tools] == ["add"]
    calls = [o for o in r.output if o.type == "mcp_call"]
    assert calls and calls[0].name == "add" and calls[0].server_label == "calc", r.output
    assert json.loads(calls[0].arguments).keys() == {"a", "b"}
    assert calls[0].output is not None or calls[0].error is not None


def test_llama_stack_path(base_url, api_key, model):
    import openai

    ls_oa = openai.OpenAI(base_url=base_url + "/v1/openai/v1", api_key=api_key, max_retries=0, timeout=120)
    r = ls_oa.responses.create(model=model, input="hi", max_output_tokens=4)
    assert ls_oa.responses.retrieve(r.id).id == r.id


def test_llama_stack_client_responses(ls, model):
    """llama-stack-client 0.2.12 parses the same objects on /v1/openai/v1/responses."""
    r = ls.responses.create(model=model, input="hi", temperature=0, max_infer_iters=1,
                            extra_body={"max_output_tokens": 4})
    assert r.object == "response" and r.status in ("completed", "incomplete"), r
    assert r.text.format.type == "text"
    got = ls.responses.retrieve(r.id)
    assert got.id == r.id and [o.type for o in got.output] == [o.type for o in r.output]
    listing = ls.responses.list(limit=100)
    mine = [x for x in listing.data if x.id == r.id]
    assert mine and mine[0].input[0].content[0].text == "hi", listing
    events = list(ls.responses.create(model=model, input="hi", stream=True, previous_response_id=r.id,
                                      extra_body={"max_output_tokens": 4}))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] in ("response.completed", "response.incomplete"), types
    assert events[-1].response.previous_response_id == r.id
