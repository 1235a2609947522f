"""`ferrollama serve` through the official `openai` Python client (OpenAI API on /v1)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import jsonschema
import openai
import pytest

from conftest import PERSON_PROMPT, PERSON_SCHEMA, TIMEOUT_S, WEATHER_TOOL_OPENAI

USER_HI = [{"role": "user", "content": "Say hello in one short sentence."}]
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
ESSAY = [{"role": "user", "content": "Write a long essay about the history of Rome."}]  # never done in 5 tokens


def chat(oa, model, messages, **kw):
    return oa.chat.completions.create(model=model, messages=messages, **kw)


# ---- models ----


def test_models_list_includes_both_served_models(oa, model, model2):
    models = list(oa.models.list())
    ids = [m.id for m in models]
    assert model in ids and model2 in ids, ids
    for m in models:
        assert m.object == "model"
        assert isinstance(m.created, int)
        assert isinstance(m.owned_by, str) and m.owned_by


def test_models_retrieve_returns_the_requested_model(oa, model):
    m = oa.models.retrieve(model)
    assert m.id == model
    assert m.object == "model"


def test_openai_client_also_works_on_the_llama_stack_openai_prefix(base_url, api_key, model):
    # base_url .../v1/openai/v1 is where llama-stack serves its OpenAI-compatible API.
    client = openai.OpenAI(base_url=base_url + "/v1/openai/v1", api_key=api_key, max_retries=0, timeout=TIMEOUT_S)
    assert model in [m.id for m in client.models.list()]
    r = client.chat.completions.create(model=model, messages=USER_HI, max_tokens=8, temperature=0)
    assert r.choices[0].message.content


# ---- chat ----


def test_chat_returns_text_finish_reason_and_usage(oa, model):
    r = chat(oa, model, USER_HI, max_tokens=24, temperature=0)
    assert r.object == "chat.completion"
    assert r.model == model
    assert r.id
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0
    assert c.message.role == "assistant"
    assert isinstance(c.message.content, str) and c.message.content.strip()
    assert not c.message.tool_calls
    assert c.finish_reason in ("stop", "length")
    assert r.usage is not None
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_matches_non_streamed_text_and_ends_with_usage(oa, model):
    expected = chat(oa, model, USER_HI, max_tokens=24, temperature=0)
    chunks = list(
        chat(oa, model, USER_HI, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True})
    )
    assert chunks, "no chunks"
    for ch in chunks:
        assert ch.object == "chat.completion.chunk"
        assert ch.id == chunks[0].id
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert text.strip()
    assert text == expected.choices[0].message.content  # greedy: streaming must not change the text
    assert finish == [expected.choices[0].finish_reason], finish  # exactly one, on the last choice chunk
    # include_usage: the last chunk has no choices and carries the usage.
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens > 0
    assert last.usage.completion_tokens == expected.usage.completion_tokens


def test_chat_stream_without_include_usage_sends_no_usage(oa, model):
    chunks = list(chat(oa, model, USER_HI, max_tokens=8, temperature=0, stream=True))
    assert chunks
    assert all(ch.usage is None for ch in chunks)
    assert chunks[-1].choices and chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_max_tokens_3_stops_with_finish_reason_length(oa, model):
    r = chat(oa, model, ESSAY, max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


def test_max_completion_tokens_is_an_alias_of_max_tokens(oa, model):
    r = chat(oa, model, ESSAY, max_completion_tokens=3, temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


def test_stop_sequence_cuts_the_text_before_it(oa, model):
    messages = [{"role": "user", "content": "Write three sentences about the sea."}]
    full = chat(oa, model, messages, max_tokens=32, temperature=0).choices[0].message.content
    assert len(full) >= 12, f"too little text to pick a stop sequence from: {full!r}"
    # A stop string from the middle of the greedy text; the greedy re-run must end right before
    # its first occurrence (which must not be at the very start, nor be all whitespace).
    stop, cut = "", -1
    for i in range(len(full) // 2, len(full) - 3):
        stop = full[i : i + 3]
        cut = full.find(stop)
        if cut > 0 and stop.strip():
            break
    assert cut > 0 and stop.strip(), full
    r = chat(oa, model, messages, max_tokens=32, temperature=0, stop=[stop, "@@never@@"])
    c = r.choices[0]
    assert c.finish_reason == "stop"
    assert stop not in c.message.content
    assert c.message.content == full[:cut], (full, stop, c.message.content)


def test_seed_makes_temperature_sampling_reproducible(oa, model):
    messages = [{"role": "user", "content": "Tell me a short story about a dragon."}]

    def sample(seed):
        r = chat(oa, model, messages, max_tokens=16, temperature=0.7, seed=seed)
        return r.choices[0].message.content

    first = sample(1234)
    assert first == sample(1234)
    # ...and the seed is actually used: some other seed gives another text.
    others = {sample(s) for s in (1, 2, 3)}
    assert others - {first}, "four different seeds gave the same text"


def test_n_2_returns_two_indexed_choices(oa, model):
    r = chat(oa, model, USER_HI, max_tokens=12, temperature=0.8, seed=7, n=2)
    assert sorted(c.index for c in r.choices) == [0, 1]
    for c in r.choices:
        assert c.message.role == "assistant"
        assert c.message.content
        assert c.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens >= 2


def test_logprobs_with_top_logprobs_2(oa, model):
    r = chat(oa, model, ESSAY, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2)
    c = r.choices[0]
    assert c.finish_reason == "length"
    assert c.logprobs is not None and c.logprobs.content
    entries = c.logprobs.content
    assert len(entries) == r.usage.completion_tokens
    assert "".join(e.token for e in entries) == c.message.content
    for e in entries:
        assert isinstance(e.token, str)
        assert e.logprob <= 0.0
        assert len(e.top_logprobs) == 2
        a, b = e.top_logprobs
        assert a.logprob >= b.logprob
        # greedy: the chosen token is the most likely one
        assert e.token == a.token
        assert e.logprob == pytest.approx(a.logprob, abs=1e-4)


# ---- tools ----


def test_required_tool_call_round_trip(oa, model):
    r = chat(oa, model, WEATHER_QUESTION, tools=[WEATHER_TOOL_OPENAI], tool_choice="required", max_tokens=48, temperature=0)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    assert c.message.tool_calls, c.message
    call = c.message.tool_calls[0]
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args, dict)
    assert isinstance(args.get("location"), str) and args["location"]

    # Send the call and its result back; tool_choice="none" asks for a text answer.
    follow_up = WEATHER_QUESTION + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 21, "condition": "sunny"})},
    ]
    r2 = chat(oa, model, follow_up, tools=[WEATHER_TOOL_OPENAI], tool_choice="none", max_tokens=32, temperature=0)
    c2 = r2.choices[0]
    assert not c2.message.tool_calls
    assert c2.message.content and c2.message.content.strip()
    assert c2.finish_reason in ("stop", "length")
    # The tool result is part of the prompt.
    assert r2.usage.prompt_tokens > r.usage.prompt_tokens


def test_streamed_tool_call_deltas_reassemble_to_json_arguments(oa, model):
    stream = chat(
        oa, model, WEATHER_QUESTION, tools=[WEATHER_TOOL_OPENAI], tool_choice="required",
        max_tokens=48, temperature=0, stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    for ch in stream:
        for choice in ch.choices:
            for d in choice.delta.tool_calls or []:
                slot = calls.setdefault(d.index, {"id": None, "type": None, "name": "", "arguments": ""})
                if d.id:
                    slot["id"] = d.id
                if d.type:
                    slot["type"] = d.type
                if d.function is not None:
                    slot["name"] += d.function.name or ""
                    slot["arguments"] += d.function.arguments or ""
            if choice.finish_reason:
                finish = choice.finish_reason
    assert finish == "tool_calls"
    assert sorted(calls) == list(range(len(calls))) and calls, calls
    first = calls[0]
    assert first["id"] and first["type"] == "function"
    assert first["name"] == "get_weather"
    args = json.loads(first["arguments"])
    assert isinstance(args.get("location"), str) and args["location"]


# ---- structured output ----


def test_response_format_json_schema_output_validates(oa, model):
    r = chat(
        oa, model, [{"role": "user", "content": PERSON_PROMPT}], max_tokens=48, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True}},
    )
    c = r.choices[0]
    assert c.finish_reason == "stop", c
    value = json.loads(c.message.content)
    jsonschema.validate(value, PERSON_SCHEMA)


def test_response_format_json_object_output_is_an_object(oa, model):
    r = chat(
        oa, model, [{"role": "user", "content": PERSON_PROMPT}], max_tokens=48, temperature=0,
        response_format={"type": "json_object"},
    )
    c = r.choices[0]
    # The model may still be writing extra keys when max_tokens ends it: the server then
    # closes the document, so it parses either way.
    assert c.finish_reason in ("stop", "length"), c
    assert isinstance(json.loads(c.message.content), dict)


def test_json_schema_output_validates_even_when_max_tokens_cuts_it(oa, model):
    for max_tokens in (12, 16, 24):
        r = chat(
            oa, model, [{"role": "user", "content": PERSON_PROMPT}], max_tokens=max_tokens, temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}},
        )
        c = r.choices[0]
        jsonschema.validate(json.loads(c.message.content), PERSON_SCHEMA)
        assert r.usage.completion_tokens <= max_tokens, r.usage


# ---- errors ----


def test_unknown_model_is_404_not_found(oa):
    with pytest.raises(openai.NotFoundError) as e:
        chat(oa, "no-such-model", USER_HI, max_tokens=4)
    assert e.value.status_code == 404
    assert isinstance(e.value.body, dict) and e.value.body.get("message"), e.value.body


def test_wrong_api_key_is_401_authentication_error(base_url, model):
    bad = openai.OpenAI(base_url=base_url + "/v1", api_key="wrong-key", max_retries=0, timeout=TIMEOUT_S)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model=model, messages=USER_HI, max_tokens=4)
    assert e.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_missing_authorization_header_is_401(base_url, model):
    body = json.dumps({"model": model, "messages": USER_HI, "max_tokens": 4}).encode()
    req = urllib.request.Request(
        base_url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=TIMEOUT_S)
    assert e.value.code == 401
    assert "error" in json.loads(e.value.read())


def test_empty_messages_is_400_bad_request(oa, model):
    with pytest.raises(openai.BadRequestError) as e:
        chat(oa, model, [], max_tokens=4)
    assert e.value.status_code == 400
    assert isinstance(e.value.body, dict) and e.value.body.get("message"), e.value.body


# ---- legacy completions ----

PROMPT = "The capital of France is"


def test_completion_returns_text_and_usage(oa, model):
    r = oa.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert r.model == model
    c = r.choices[0]
    assert c.index == 0
    assert c.text
    assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 8


def test_completion_max_tokens_stops_with_length(oa, model):
    r = oa.completions.create(model=model, prompt=PROMPT, max_tokens=2, temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 2


def test_completion_stream_matches_non_streamed_text(oa, model):
    expected = oa.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0).choices[0]
    chunks = list(oa.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0, stream=True))
    assert chunks
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert text == expected.text
    assert finish == [expected.finish_reason]


def test_second_model_serves_completions(oa, model2):
    r = oa.completions.create(model=model2, prompt="Hello", max_tokens=4, temperature=0)
    assert r.model == model2
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert r.usage.completion_tokens <= 4
