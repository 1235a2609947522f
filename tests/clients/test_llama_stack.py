"""`ferrollama serve` through Meta's official `llama-stack-client` (Llama Stack API on /v1)."""
from __future__ import annotations

import json

import jsonschema
import pytest
from llama_stack_client import AuthenticationError, LlamaStackClient, NotFoundError

from conftest import (
    PERSON_PROMPT,
    PERSON_SCHEMA,
    TIMEOUT_S,
    WEATHER_TOOL_LLAMA_STACK,
    content_text,
    tool_args,
)

STOP_REASONS = ("end_of_turn", "end_of_message", "out_of_tokens")
GREEDY = {"strategy": {"type": "greedy"}}
USER_HI = [{"role": "user", "content": "Say hello in one short sentence."}]
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
ESSAY = [{"role": "user", "content": "Write a long essay about the history of Rome."}]  # never done in 4 tokens


def greedy(max_tokens):
    return {**GREEDY, "max_tokens": max_tokens}


# ---- models and inspection ----


def test_models_list_includes_both_served_models(ls, model, model2):
    models = ls.models.list()
    by_id = {m.identifier: m for m in models}
    assert model in by_id and model2 in by_id, list(by_id)
    for m in models:
        assert m.type == "model"
        # JSON key "model_type": the chat models, and the embedding model serve loads.
        assert m.api_model_type == ("embedding" if m.identifier == "all-MiniLM-L6-v2" else "llm")
        assert isinstance(m.provider_id, str) and m.provider_id
        assert isinstance(m.metadata, dict)


def test_models_retrieve_returns_the_requested_model(ls, model):
    m = ls.models.retrieve(model)
    assert m.identifier == model
    assert m.type == "model"


def test_health_version_routes_and_providers_parse(ls):
    assert ls.inspect.health().status == "OK"
    version = ls.inspect.version().version
    assert isinstance(version, str) and version
    routes = ls.routes.list()
    assert isinstance(routes, list)
    served = {(r.route, r.method.upper()) for r in routes}
    assert ("/v1/inference/chat-completion", "POST") in served, served
    assert all(isinstance(r.provider_types, list) for r in routes)
    providers = ls.providers.list()
    assert isinstance(providers, list) and providers
    assert "inference" in {p.api for p in providers}
    for p in providers:
        assert p.provider_id and p.provider_type
        assert isinstance(p.config, dict) and isinstance(p.health, dict)


# ---- chat completion ----


def test_chat_completion_returns_assistant_text(ls, model):
    r = ls.inference.chat_completion(model_id=model, messages=USER_HI, sampling_params=greedy(24))
    msg = r.completion_message
    assert msg.role == "assistant"
    assert content_text(msg.content).strip()
    assert msg.stop_reason in STOP_REASONS
    assert not msg.tool_calls


def test_chat_completion_default_sampling_params_work(ls, model):
    # No sampling_params at all: the server's defaults (and its max_tokens cap) apply.
    r = ls.inference.chat_completion(
        model_id=model, messages=[{"role": "user", "content": "Reply with one word: yes or no?"}]
    )
    assert r.completion_message.stop_reason in STOP_REASONS
    assert isinstance(content_text(r.completion_message.content), str)


def test_chat_completion_accepts_system_message_and_content_items(ls, model):
    messages = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": [{"type": "text", "text": "Say hello"}, {"type": "text", "text": " in French."}]},
    ]
    r = ls.inference.chat_completion(model_id=model, messages=messages, sampling_params=greedy(16))
    assert content_text(r.completion_message.content).strip()
    assert r.completion_message.stop_reason in STOP_REASONS


def test_chat_completion_stream_events_start_progress_complete(ls, model):
    expected = ls.inference.chat_completion(model_id=model, messages=USER_HI, sampling_params=greedy(24))
    events = [c.event for c in ls.inference.chat_completion(
        model_id=model, messages=USER_HI, sampling_params=greedy(24), stream=True
    )]
    kinds = [e.event_type for e in events]
    assert kinds[0] == "start", kinds
    assert kinds[-1] == "complete", kinds
    assert set(kinds[1:-1]) == {"progress"}, kinds
    text = "".join(e.delta.text for e in events if e.event_type == "progress" and e.delta.type == "text")
    assert text.strip()
    assert text == content_text(expected.completion_message.content)  # greedy: same text streamed or not
    assert events[-1].stop_reason == expected.completion_message.stop_reason


def test_greedy_max_tokens_4_stops_out_of_tokens(ls, model):
    r = ls.inference.chat_completion(model_id=model, messages=ESSAY, sampling_params=greedy(4))
    assert r.completion_message.stop_reason == "out_of_tokens"
    assert content_text(r.completion_message.content)


def test_top_p_sampling_with_repetition_penalty_and_stop(ls, model):
    r = ls.inference.chat_completion(
        model_id=model, messages=USER_HI,
        sampling_params={
            "strategy": {"type": "top_p", "temperature": 0.7, "top_p": 0.9},
            "max_tokens": 16, "repetition_penalty": 1.1, "stop": ["\n\n"],
        },
    )
    assert r.completion_message.stop_reason in STOP_REASONS
    assert "\n\n" not in content_text(r.completion_message.content)


def test_top_k_sampling_strategy_is_accepted(ls, model):
    r = ls.inference.chat_completion(
        model_id=model, messages=USER_HI,
        sampling_params={"strategy": {"type": "top_k", "top_k": 5}, "max_tokens": 8},
    )
    assert r.completion_message.stop_reason in STOP_REASONS
    assert content_text(r.completion_message.content)


def test_chat_completion_logprobs_top_k_2(ls, model):
    r = ls.inference.chat_completion(
        model_id=model, messages=ESSAY, sampling_params=greedy(4), logprobs={"top_k": 2}
    )
    assert r.completion_message.stop_reason == "out_of_tokens"
    assert r.logprobs is not None
    assert len(r.logprobs) == 4  # one entry per generated token
    for entry in r.logprobs:
        # keyed by token text, so two tokens with the same text may collapse into one key
        assert 1 <= len(entry.logprobs_by_token) <= 2
        assert all(v <= 0.0 for v in entry.logprobs_by_token.values())


# ---- tool calls ----


def test_required_custom_tool_call(ls, model):
    r = ls.inference.chat_completion(
        model_id=model, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL_LLAMA_STACK],
        tool_config={"tool_choice": "required"}, sampling_params=greedy(48),
    )
    msg = r.completion_message
    assert msg.tool_calls, msg
    call = msg.tool_calls[0]
    assert call.tool_name == "get_weather"
    assert call.call_id
    args = tool_args(call)
    assert isinstance(args.get("location"), str) and args["location"]
    assert msg.stop_reason in ("end_of_turn", "end_of_message")


def test_deprecated_top_level_tool_choice_required_also_forces_the_call(ls, model):
    r = ls.inference.chat_completion(
        model_id=model, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL_LLAMA_STACK],
        tool_choice="required", sampling_params=greedy(48),
    )
    assert r.completion_message.tool_calls
    assert r.completion_message.tool_calls[0].tool_name == "get_weather"


def test_custom_tool_call_round_trip_with_tool_response(ls, model):
    first = ls.inference.chat_completion(
        model_id=model, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL_LLAMA_STACK],
        tool_config={"tool_choice": "required"}, sampling_params=greedy(48),
    ).completion_message
    assert first.tool_calls
    call = first.tool_calls[0]
    messages = WEATHER_QUESTION + [
        {
            "role": "assistant",
            "content": content_text(first.content),
            "stop_reason": first.stop_reason,
            "tool_calls": [{"call_id": call.call_id, "tool_name": call.tool_name, "arguments": tool_args(call)}],
        },
        {"role": "tool", "call_id": call.call_id, "content": json.dumps({"temperature_c": 21, "condition": "sunny"})},
    ]
    r = ls.inference.chat_completion(
        model_id=model, messages=messages, tools=[WEATHER_TOOL_LLAMA_STACK],
        tool_config={"tool_choice": "none"}, sampling_params=greedy(32),
    )
    assert not r.completion_message.tool_calls
    assert content_text(r.completion_message.content).strip()
    assert r.completion_message.stop_reason in ("end_of_turn", "out_of_tokens")


def test_streamed_custom_tool_call_ends_with_a_parsed_tool_call_delta(ls, model):
    events = [c.event for c in ls.inference.chat_completion(
        model_id=model, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL_LLAMA_STACK],
        tool_config={"tool_choice": "required"}, sampling_params=greedy(48), stream=True,
    )]
    assert events[0].event_type == "start" and events[-1].event_type == "complete"
    tool_deltas = [e.delta for e in events if e.delta.type == "tool_call"]
    assert tool_deltas, [e.delta for e in events]
    assert all(d.parse_status in ("started", "in_progress", "failed", "succeeded") for d in tool_deltas)
    done = [d for d in tool_deltas if d.parse_status == "succeeded"]
    assert len(done) == 1, tool_deltas
    call = done[0].tool_call
    assert not isinstance(call, str), call
    assert call.tool_name == "get_weather"
    assert isinstance(tool_args(call).get("location"), str)
    assert events[-1].stop_reason in ("end_of_turn", "end_of_message")


def test_builtin_brave_search_call_has_a_query(ls, model):
    r = ls.inference.chat_completion(
        model_id=model,
        messages=[{"role": "user", "content": "Search the web for the latest news about Mars."}],
        tools=[{"tool_name": "brave_search"}], tool_config={"tool_choice": "required"},
        sampling_params=greedy(48),
    )
    msg = r.completion_message
    assert msg.tool_calls, msg
    call = msg.tool_calls[0]
    assert call.tool_name == "brave_search"
    query = tool_args(call).get("query")
    assert isinstance(query, str) and query.strip()
    # Llama 3.1 built-in calls end with <|eom_id|> (unless the token budget ran out first).
    assert msg.stop_reason in ("end_of_message", "out_of_tokens")


def test_builtin_code_interpreter_call_has_code(ls, model):
    r = ls.inference.chat_completion(
        model_id=model,
        messages=[{"role": "user", "content": "Use Python to compute 2 to the power of 10."}],
        tools=[{"tool_name": "code_interpreter"}], tool_config={"tool_choice": "required"},
        sampling_params=greedy(48),
    )
    msg = r.completion_message
    assert msg.tool_calls, msg
    call = msg.tool_calls[0]
    assert call.tool_name == "code_interpreter"
    code = tool_args(call).get("code")
    assert isinstance(code, str) and code.strip()


# ---- structured output ----


def test_response_format_json_schema_output_validates(ls, model):
    r = ls.inference.chat_completion(
        model_id=model, messages=[{"role": "user", "content": PERSON_PROMPT}],
        response_format={"type": "json_schema", "json_schema": PERSON_SCHEMA},
        sampling_params=greedy(48),
    )
    msg = r.completion_message
    assert msg.stop_reason == "end_of_turn", msg
    value = json.loads(content_text(msg.content))
    jsonschema.validate(value, PERSON_SCHEMA)


# ---- batches ----


def test_batch_chat_completion_returns_one_completion_per_dialog(ls, model):
    batch = [
        [{"role": "user", "content": "Name a color."}],
        [{"role": "user", "content": "Name an animal."}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a city."}],
    ]
    r = ls.inference.batch_chat_completion(model_id=model, messages_batch=batch, sampling_params=greedy(8))
    assert len(r.batch) == 3
    for item in r.batch:
        assert item.completion_message.role == "assistant"
        assert content_text(item.completion_message.content).strip()
        assert item.completion_message.stop_reason in STOP_REASONS


def test_batch_completion_returns_one_completion_per_prompt(ls, model):
    prompts = ["The capital of France is", "One, two, three,"]
    r = ls.inference.batch_completion(model_id=model, content_batch=prompts, sampling_params=greedy(4))
    assert len(r.batch) == 2
    for item in r.batch:
        assert item.content
        assert item.stop_reason in STOP_REASONS


# ---- raw completion ----

PROMPT = "The capital of France is"


def test_completion_returns_text(ls, model):
    r = ls.inference.completion(model_id=model, content=PROMPT, sampling_params=greedy(8))
    assert isinstance(r.content, str) and r.content
    assert r.stop_reason in STOP_REASONS


def test_completion_stream_matches_non_streamed_text(ls, model):
    expected = ls.inference.completion(model_id=model, content=PROMPT, sampling_params=greedy(8))
    chunks = list(ls.inference.completion(model_id=model, content=PROMPT, sampling_params=greedy(8), stream=True))
    assert chunks
    # The client types stream chunks as CompletionResponse (`content`); upstream names the field
    # `delta`. docs/llama-stack-wire.md asks the server to send both; `content` is what the client reads.
    text = "".join(c.content for c in chunks)
    assert text == expected.content
    assert chunks[-1].stop_reason == expected.stop_reason
    assert all(c.stop_reason is None for c in chunks[:-1])


# ---- the OpenAI-compatible routes of the llama-stack client (/v1/openai/v1/...) ----


def test_llama_stack_openai_chat_completions_non_streamed(ls, model):
    r = ls.chat.completions.create(model=model, messages=USER_HI, max_tokens=8, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")


def test_llama_stack_openai_chat_completions_streamed(ls, model):
    # The llama-stack client json-decodes every SSE event: a `data: [DONE]` line would raise here.
    chunks = list(ls.chat.completions.create(model=model, messages=USER_HI, max_tokens=8, temperature=0, stream=True))
    assert chunks
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_llama_stack_openai_completions(ls, model):
    r = ls.completions.create(model=model, prompt=PROMPT, max_tokens=4, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.choices[0].finish_reason in ("stop", "length")


# ---- errors ----


def test_unknown_model_id_is_404(ls):
    with pytest.raises(NotFoundError):
        ls.inference.chat_completion(model_id="no-such-model", messages=USER_HI, sampling_params=greedy(4))
    with pytest.raises(NotFoundError):
        ls.models.retrieve("no-such-model")


def test_wrong_api_key_is_401(base_url, model):
    bad = LlamaStackClient(base_url=base_url, api_key="wrong-key", max_retries=0, timeout=TIMEOUT_S)
    with pytest.raises(AuthenticationError):
        bad.inference.chat_completion(model_id=model, messages=USER_HI, sampling_params=greedy(4))
