"""Agents and tools through the real llama-stack-client 0.2.12: the `Agent` helper end to end
(a server-side code interpreter turn; a client-side tool turn that pauses and resumes),
sessions/turns/steps read back, the tool runtime API (built-ins, MCP groups, web tools
against local stand-ins of Brave Search and Wolfram Alpha, tests/clients/fake_web.py).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import content_text

WEB_URL = os.environ.get("FERROLLAMA_WEB_URL", "")
BRAVE = {"X-LlamaStack-Provider-Data": json.dumps({"brave_search_api_key": "test-brave-key"})}
WOLFRAM = {"X-LlamaStack-Provider-Data": json.dumps({"wolfram_alpha_api_key": "test-wolfram-key"})}
GREEDY = {"strategy": {"type": "greedy"}, "max_tokens": 48}


def chunks_of(stream):
    out = list(stream)
    errors = [c for c in out if hasattr(c, "error") and getattr(c, "error", None)]
    assert not errors, errors
    return out


def event_types(chunks):
    return [c.event.payload.event_type for c in chunks]


def test_builtin_toolgroups_and_tools_are_listed(ls):
    ids = {g.identifier for g in ls.toolgroups.list()}
    assert {"builtin::code_interpreter", "builtin::websearch", "builtin::wolfram_alpha"} <= ids
    tools = ls.tools.list(toolgroup_id="builtin::code_interpreter")
    assert [t.identifier for t in tools] == ["code_interpreter"]
    assert tools[0].parameters[0].name == "code" and tools[0].parameters[0].required


def test_invoke_code_interpreter_runs_python_in_the_sandbox(ls):
    r = ls.tool_runtime.invoke_tool(tool_name="code_interpreter", kwargs={"code": "import os\nprint(6*7, os.getuid())"})
    assert r.error_message is None, r
    text = content_text(r.content)
    assert text.startswith("completed\n"), text
    assert "[stdout]\n42 1000\n[/stdout]" in text, text
    assert r.metadata["exit_code"] == 0 and r.metadata["timed_out"] is False


def test_invoke_code_interpreter_cannot_read_the_server_files(ls):
    here = os.path.abspath(__file__)
    r = ls.tool_runtime.invoke_tool(tool_name="code_interpreter", kwargs={"code": f"print(open({here!r}).read())"})
    text = content_text(r.content)
    assert "FileNotFoundError" in text, text
    assert "Agents and tools through" not in text


@pytest.mark.skipif(not WEB_URL, reason="FERROLLAMA_WEB_URL not set (scripts/client-tests sets it)")
def test_invoke_brave_search_uses_the_provider_data_key(ls):
    r = ls.tool_runtime.invoke_tool(tool_name="brave_search", kwargs={"query": "llama facts"}, extra_headers=BRAVE)
    assert r.error_message is None, r
    body = json.loads(content_text(r.content))
    assert body["query"] == "llama facts"
    assert body["top_k"][0]["title"] == "Llamas: llama facts"
    assert body["top_k"][0]["url"] == "https://example.org/llamas"
    seen = json.load(urllib.request.urlopen(WEB_URL + "/requests"))
    assert {"path": "/res/v1/web/search", "query": {"q": "llama facts"}, "token": "test-brave-key"} in seen


@pytest.mark.skipif(not WEB_URL, reason="FERROLLAMA_WEB_URL not set (scripts/client-tests sets it)")
def test_web_tool_without_a_key_is_a_readable_tool_error(ls):
    r = ls.tool_runtime.invoke_tool(tool_name="brave_search", kwargs={"query": "x"})
    assert r.error_message and "BRAVE_SEARCH_API_KEY" in r.error_message, r
    r = ls.tool_runtime.invoke_tool(tool_name="wolfram_alpha", kwargs={"query": "6*7"}, extra_headers=WOLFRAM)
    assert r.error_message is None, r
    assert "42" in content_text(r.content)


def test_unknown_tool_is_404(ls):
    import llama_stack_client

    with pytest.raises(llama_stack_client.NotFoundError):
        ls.tool_runtime.invoke_tool(tool_name="no_such_tool", kwargs={})


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
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    yield url
    p.terminate()
    p.wait(10)


def test_mcp_toolgroup_register_list_invoke_unregister(ls, mcp_http):
    ls.toolgroups.register(toolgroup_id="mcp::test", provider_id="model-context-protocol", mcp_endpoint={"uri": mcp_http})
    try:
        g = ls.toolgroups.get("mcp::test")
        assert g.mcp_endpoint.uri == mcp_http
        names = sorted(t.identifier for t in ls.tools.list(toolgroup_id="mcp::test"))
        assert names == ["add", "echo", "fail"]
        r = ls.tool_runtime.invoke_tool(tool_name="add", kwargs={"a": 2, "b": 40})
        assert content_text(r.content) == "42" and r.error_message is None, r
        r = ls.tool_runtime.invoke_tool(tool_name="fail", kwargs={"message": "boom"})
        assert r.error_message and "boom" in r.error_message, r
        defs = ls.tool_runtime.list_tools(tool_group_id="mcp::test")
        assert {d.name for d in defs} == {"add", "echo", "fail"}
    finally:
        ls.toolgroups.unregister("mcp::test")
    assert "mcp::test" not in {g.identifier for g in ls.toolgroups.list()}


def test_stdio_mcp_endpoints_are_refused_over_http(ls):
    import llama_stack_client

    with pytest.raises(llama_stack_client.BadRequestError):
        ls.toolgroups.register(toolgroup_id="mcp::evil", provider_id="model-context-protocol",
                               mcp_endpoint={"uri": "stdio:sh -c 'touch /tmp/pwned'"})


def test_agent_runs_the_code_interpreter_and_continues(ls, model):
    """The real path: SmolLM2, a forced call (tool_choice required) executed in the sandbox,
    its result fed back, and a final answer."""
    from llama_stack_client.lib.agents.agent import Agent

    agent = Agent(ls, model=model, instructions="You are a helpful assistant. Use Python to compute.",
                  tools=["builtin::code_interpreter"], tool_config={"tool_choice": "required"},
                  sampling_params=GREEDY, max_infer_iters=2)
    sid = agent.create_session("ci")
    chunks = chunks_of(agent.create_turn(messages=[{"role": "user", "content": "Compute 6*7 in Python and print it."}],
                                         session_id=sid, stream=True))
    types = event_types(chunks)
    assert types[0] == "turn_start" and types[-1] == "turn_complete", types
    turn = chunks[-1].event.payload.turn
    kinds = [s.step_type for s in turn.steps]
    assert kinds[:3] == ["inference", "tool_execution", "inference"], kinds
    ex = turn.steps[1]
    assert ex.tool_calls[0].tool_name == "code_interpreter"
    assert "code" in ex.tool_calls[0].arguments
    out = content_text(ex.tool_responses[0].content)
    # The sandbox's status line: the call really ran (whatever code the model wrote).
    assert out.startswith(("completed", "timed out", "the interpreter died")), out
    # The model's second inference saw the result and answered without a forced call.
    assert turn.output_message.stop_reason in ("end_of_turn", "end_of_message", "out_of_tokens")
    # Read back: session, turn and step.
    s = ls.agents.session.retrieve(session_id=sid, agent_id=agent.agent_id)
    assert [t.turn_id for t in s.turns] == [turn.turn_id]
    t = ls.agents.turn.retrieve(turn_id=turn.turn_id, agent_id=agent.agent_id, session_id=sid)
    assert [x.step_id for x in t.steps] == [x.step_id for x in turn.steps]
    st = ls.agents.steps.retrieve(step_id=ex.step_id, turn_id=turn.turn_id, agent_id=agent.agent_id, session_id=sid)
    assert st.step.step_type == "tool_execution"


def test_invoke_runs_each_call_in_a_fresh_sandbox(ls):
    """The session-less tool runtime shares no state between calls (agent sessions do:
    crates/agents/tests/runtime.rs)."""
    ls.tool_runtime.invoke_tool(tool_name="code_interpreter", kwargs={"code": "x = 41"})
    r = ls.tool_runtime.invoke_tool(tool_name="code_interpreter", kwargs={"code": "print('x' in globals())"})
    assert "[stdout]\nFalse\n[/stdout]" in content_text(r.content)


def test_client_tool_turn_pauses_and_resumes(ls, model):
    from llama_stack_client.lib.agents.client_tool import client_tool
    from llama_stack_client.lib.agents.agent import Agent

    calls = []

    @client_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city.

        :param city: the city's name
        :returns: the weather
        """
        calls.append(city)
        return "sunny, 21 C"

    agent = Agent(ls, model=model, instructions="You are a weather assistant.", tools=[get_weather],
                  tool_config={"tool_choice": "required"}, sampling_params=GREEDY, max_infer_iters=2)
    sid = agent.create_session("weather")
    chunks = chunks_of(agent.create_turn(messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                                         session_id=sid, stream=True))
    types = event_types(chunks)
    assert "turn_awaiting_input" in types, types
    assert types[-1] == "turn_complete", types
    assert len(calls) >= 1, "the client tool ran"
    turn = chunks[-1].event.payload.turn
    executed = [s for s in turn.steps if s.step_type == "tool_execution"]
    assert executed and executed[0].tool_calls[0].tool_name == "get_weather"
    assert "sunny" in content_text(executed[0].tool_responses[0].content)
    # The turn is stored complete, with the client step.
    t = ls.agents.turn.retrieve(turn_id=turn.turn_id, agent_id=agent.agent_id, session_id=sid)
    assert t.output_message is not None and t.completed_at is not None


def test_resume_of_a_turn_not_waiting_is_400(ls, model):
    import llama_stack_client

    a = ls.agents.create(agent_config={"model": model, "instructions": "Be brief.", "sampling_params": GREEDY})
    sid = ls.agents.session.create(agent_id=a.agent_id, session_name="s").session_id
    turn = ls.agents.turn.create(agent_id=a.agent_id, session_id=sid, messages=[{"role": "user", "content": "Hi"}], stream=False)
    assert turn.output_message.content
    with pytest.raises(llama_stack_client.BadRequestError):
        ls.agents.turn.resume(agent_id=a.agent_id, session_id=sid, turn_id=turn.turn_id,
                              tool_responses=[{"call_id": "x", "tool_name": "y", "content": "z"}], stream=False)
    ls.agents.session.delete(session_id=sid, agent_id=a.agent_id)
    with pytest.raises(llama_stack_client.NotFoundError):
        ls.agents.session.retrieve(session_id=sid, agent_id=a.agent_id)
    ls.agents.delete(a.agent_id)


def test_bad_agent_configs_are_400(ls, model):
    import llama_stack_client

    for cfg in (
        {"model": "no-such-model", "instructions": "x"},
        {"model": model, "instructions": "x", "toolgroups": ["builtin::nope"]},
        {"model": model, "instructions": "x", "input_shields": ["no-such-shield"]},
        {"model": model, "instructions": "x", "max_infer_iters": 0},
    ):
        with pytest.raises((llama_stack_client.BadRequestError, llama_stack_client.NotFoundError)):
            ls.agents.create(agent_config=cfg)
