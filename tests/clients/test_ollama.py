"""`ferrollama serve` through the official `ollama` Python client (Ollama API on /api).

Pull tests use the local fake hub that scripts/client-tests starts (tests/clients/fake_hub.py,
repository $FERROLLAMA_HUB_REPO holding one tiny GGUF); the server's store is a temp dir.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from datetime import datetime

import jsonschema
import ollama
import pytest

from conftest import API_KEY, BASE_URL, PERSON_PROMPT, PERSON_SCHEMA, TIMEOUT_S, WEATHER_TOOL_OPENAI

HUB_REPO = os.environ.get("FERROLLAMA_HUB_REPO", "")
HI = [{"role": "user", "content": "Say hello in one short sentence."}]
ESSAY = [{"role": "user", "content": "Write a long essay about the history of Rome."}]
GREEDY = {"temperature": 0, "num_predict": 12}


@pytest.fixture(scope="session")
def ol():
    """ollama client on the server root, the API key as a header."""
    return ollama.Client(host=BASE_URL, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=TIMEOUT_S)


def get(path: str, key: str | None = API_KEY, method: str = "GET"):
    req = urllib.request.Request(BASE_URL + path, method=method)
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)


def assert_final(r, max_eval: int | None = None):
    assert r.done is True
    assert r.done_reason in ("stop", "length"), r
    assert r.prompt_eval_count and r.prompt_eval_count > 0
    assert r.eval_count is not None and r.eval_count >= 0
    if max_eval is not None:
        assert r.eval_count <= max_eval
    for d in (r.total_duration, r.prompt_eval_duration, r.eval_duration):
        assert isinstance(d, int) and d >= 0
    assert r.total_duration > 0
    assert r.load_duration is not None
    datetime.fromisoformat(r.created_at.replace("Z", "+00:00"))


# ---- liveness, version, auth ----


def test_root_says_ollama_is_running_and_head_works():
    with get("/") as r:
        assert r.status == 200
        assert r.read() == b"Ollama is running"
    with get("/", method="HEAD") as r:
        assert r.status == 200


def test_version_is_reported():
    with get("/api/version") as r:
        v = json.loads(r.read())
    assert isinstance(v["version"], str) and v["version"]


def test_wrong_api_key_is_401_in_ollama_shape(model):
    bad = ollama.Client(host=BASE_URL, headers={"Authorization": "Bearer nope"}, timeout=TIMEOUT_S)
    with pytest.raises(ollama.ResponseError) as e:
        bad.list()
    assert e.value.status_code == 401
    assert "API key" in e.value.error


# ---- models ----


def test_list_shows_both_served_models_with_details(ol, model, model2):
    models = {m.model: m for m in ol.list().models}
    assert f"{model}:latest" in models and f"{model2}:latest" in models, models
    m = models[f"{model}:latest"]
    assert m.details.format == "gguf"
    assert m.details.family == "llama"
    assert m.details.quantization_level == "Q4_1"
    assert m.details.parameter_size.endswith("M")
    assert m.size > 50_000_000
    assert len(m.digest) == 64
    assert isinstance(m.modified_at, datetime)
    assert models[f"{model2}:latest"].details.quantization_level == "Q8_0"


def test_show_gives_details_model_info_and_template(ol, model):
    s = ol.show(model)
    assert s.details.family == "llama"
    assert s.modelinfo["general.architecture"] == "llama"
    assert s.modelinfo["llama.context_length"] > 0
    assert s.modelinfo["general.parameter_count"] > 100_000_000
    assert "im_start" in s.template  # SmolLM2's ChatML template
    assert s.modelfile.startswith("# Modelfile")
    assert "completion" in s.capabilities
    # NAME:latest is the same model.
    assert ol.show(f"{model}:latest").modelinfo == s.modelinfo


def test_ps_lists_loaded_models_and_reflects_keep_alive(ol, model, model2):
    ol.generate(model=model2, prompt="", keep_alive="10m")  # loads nothing new; records keep_alive
    running = {m.model: m for m in ol.ps().models}
    assert {f"{model}:latest", f"{model2}:latest"} <= set(running), running
    m2 = running[f"{model2}:latest"]
    assert m2.context_length and m2.context_length > 0
    left = (m2.expires_at - datetime.now(m2.expires_at.tzinfo)).total_seconds()
    assert 500 < left <= 601, m2.expires_at


def test_unknown_model_is_404_with_ollamas_wording(ol):
    with pytest.raises(ollama.ResponseError) as e:
        ol.chat(model="no-such-model", messages=HI, stream=False)
    assert e.value.status_code == 404
    assert e.value.error == 'model "no-such-model" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError) as e:
        ol.show("no-such-model:7b")
    assert e.value.status_code == 404


# ---- chat ----


def test_chat_not_streamed(ol, model):
    r = ol.chat(model=model, messages=HI, stream=False, options=GREEDY)
    assert_final(r, max_eval=12)
    assert r.model == model
    assert r.message.role == "assistant"
    assert r.message.content.strip()
    assert not r.message.tool_calls


def test_chat_streamed_matches_not_streamed(ol, model):
    whole = ol.chat(model=model, messages=HI, stream=False, options=GREEDY)
    parts = list(ol.chat(model=model, messages=HI, stream=True, options=GREEDY))
    assert len(parts) >= 3
    assert all(not p.done for p in parts[:-1])
    last = parts[-1]
    assert_final(last, max_eval=12)
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert last.eval_count == whole.eval_count
    assert last.done_reason == whole.done_reason


def test_chat_streams_by_default_as_ndjson(model):
    body = json.dumps({"model": model, "messages": HI, "options": {"temperature": 0, "num_predict": 3}}).encode()
    req = urllib.request.Request(BASE_URL + "/api/chat", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
        assert r.headers["Content-Type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in r.read().decode().splitlines()]
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 3
    assert all(line["done"] is False for line in lines[:-1])


def test_num_predict_ends_with_done_reason_length(ol, model):
    r = ol.chat(model=model, messages=ESSAY, stream=False, options={"temperature": 0, "num_predict": 3})
    assert r.done_reason == "length"
    assert r.eval_count == 3
    g = ol.generate(model=model, prompt="Write a long essay about Rome.", stream=False,
                    options={"temperature": 0, "num_predict": 4})
    assert g.done_reason == "length"
    assert g.eval_count == 4


def test_seed_makes_sampling_reproducible(ol, model):
    opts = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 1234, "num_predict": 16}
    a = ol.chat(model=model, messages=ESSAY, stream=False, options=opts)
    b = ol.chat(model=model, messages=ESSAY, stream=False, options=opts)
    assert a.message.content == b.message.content
    others = {
        ol.chat(model=model, messages=ESSAY, stream=False, options={**opts, "seed": s}).message.content
        for s in (1, 2, 3)
    }
    assert others - {a.message.content}, "different seeds gave the same text"


def test_temperature_zero_is_deterministic_and_stop_cuts(ol, model):
    a = ol.chat(model=model, messages=HI, stream=False, options=GREEDY)
    b = ol.chat(model=model, messages=HI, stream=False, options=GREEDY)
    assert a.message.content == b.message.content
    words = a.message.content.split()
    assert len(words) >= 2, a.message.content
    stop = words[1]
    c = ol.chat(model=model, messages=HI, stream=False, options={**GREEDY, "stop": [stop]})
    assert stop not in c.message.content
    assert c.done_reason == "stop"


def test_unknown_options_are_accepted(ol, model):
    r = ol.chat(model=model, messages=HI, stream=False,
                options={**GREEDY, "num_thread": 2, "num_gpu": 0, "mirostat": 0, "num_ctx": 2048,
                         "repeat_penalty": 1.2, "min_p": 0.05, "top_k": 20, "top_p": 0.8})
    assert_final(r, max_eval=12)


# ---- generate ----


def test_generate_not_streamed_and_streamed(ol, model):
    opts = {"temperature": 0, "num_predict": 10}
    whole = ol.generate(model=model, prompt="Name a color.", system="Answer in one word.", stream=False, options=opts)
    assert_final(whole, max_eval=10)
    assert whole.response.strip()
    parts = list(ol.generate(model=model, prompt="Name a color.", system="Answer in one word.", stream=True, options=opts))
    assert "".join(p.response for p in parts) == whole.response
    assert parts[-1].done and parts[-1].eval_count == whole.eval_count
    # The system prompt replaces the template's default one (SmolLM2's is longer); raw mode
    # uses no template at all.
    plain = ol.generate(model=model, prompt="Name a color.", stream=False, options=opts)
    raw = ol.generate(model=model, prompt="Name a color.", raw=True, stream=False, options=opts)
    assert whole.prompt_eval_count != plain.prompt_eval_count
    assert raw.prompt_eval_count < min(whole.prompt_eval_count, plain.prompt_eval_count)


def test_generate_suffix_is_refused_clearly(ol, model):
    with pytest.raises(ollama.ResponseError) as e:
        ol.generate(model=model, prompt="def add(a, b):", suffix="    return c", stream=False)
    assert e.value.status_code == 400
    assert "suffix" in e.value.error


# ---- structured output ----


def test_format_json_schema_output_validates(ol, model):
    r = ol.chat(model=model, messages=[{"role": "user", "content": PERSON_PROMPT}], format=PERSON_SCHEMA,
                stream=False, options={"temperature": 0, "num_predict": 48})
    jsonschema.validate(json.loads(r.message.content), PERSON_SCHEMA)


def test_format_json_schema_validates_when_streamed_and_cut_short(ol, model):
    parts = list(ol.generate(model=model, prompt=PERSON_PROMPT, format=PERSON_SCHEMA, stream=True,
                             options={"temperature": 0, "num_predict": 12}))
    assert parts[-1].eval_count <= 12
    jsonschema.validate(json.loads("".join(p.response for p in parts)), PERSON_SCHEMA)


def test_format_json_gives_an_object(ol, model):
    r = ol.generate(model=model, prompt=PERSON_PROMPT, format="json", stream=False,
                    options={"temperature": 0, "num_predict": 48})
    assert isinstance(json.loads(r.response), dict)


def test_unsupported_format_schema_is_400(ol, model):
    with pytest.raises(ollama.ResponseError) as e:
        ol.chat(model=model, messages=HI, format={"type": "string", "pattern": "a+"}, stream=False)
    assert e.value.status_code == 400
    assert "format" in e.value.error


# ---- tools ----

WEATHER_QUESTION = [{"role": "user", "content": "What is the weather like in Paris right now?"}]


# SmolLM2-135M does not call a tool unprompted (tried: several phrasings at temperature 0),
# and Ollama has no tool_choice to force one. What is deterministic: with `tools`, a reply that
# is a call `{"name", "parameters"}` comes back as `message.tool_calls`, and `format` (the
# same constrained decoding) makes the reply exactly such a call.
CALL_FORMAT = {
    "type": "object",
    "properties": {"name": {"enum": ["get_weather"]}, "parameters": WEATHER_TOOL_OPENAI["function"]["parameters"]},
    "required": ["name", "parameters"],
}


def test_tool_call_comes_back_as_message_tool_calls(ol, model):
    r = ol.chat(model=model, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL_OPENAI], format=CALL_FORMAT,
                stream=False, options={"temperature": 0, "num_predict": 48})
    assert r.message.tool_calls, r.message
    call = r.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments, dict)
    assert isinstance(call.function.arguments.get("location"), str)
    assert r.message.content == ""
    # Streamed: the call arrives whole in one chunk, no raw JSON text before it.
    parts = list(ol.chat(model=model, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL_OPENAI], format=CALL_FORMAT,
                         stream=True, options={"temperature": 0, "num_predict": 48}))
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert calls[0].function.arguments == call.function.arguments
    assert "".join(p.message.content or "" for p in parts) == ""
    # Without tools the same output is plain text.
    plain = ol.chat(model=model, messages=WEATHER_QUESTION, format=CALL_FORMAT, stream=False,
                    options={"temperature": 0, "num_predict": 48})
    assert not plain.message.tool_calls
    assert json.loads(plain.message.content)["name"] == "get_weather"

    # Round trip: the call and the tool's result go back; the result is part of the prompt.
    follow = WEATHER_QUESTION + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_name": "get_weather", "content": json.dumps({"temperature_c": 21, "sky": "sunny"})},
    ]
    r2 = ol.chat(model=model, messages=follow, tools=[WEATHER_TOOL_OPENAI], stream=False,
                 options={"temperature": 0, "num_predict": 24})
    assert r2.prompt_eval_count > r.prompt_eval_count
    assert_final(r2, max_eval=24)


def test_tool_message_objects_from_the_client_are_accepted(ol, model):
    msg = ollama.Message(role="assistant", content="", tool_calls=[
        ollama.Message.ToolCall(function=ollama.Message.ToolCall.Function(name="get_weather", arguments={"location": "Oslo"}))])
    r = ol.chat(model=model, messages=WEATHER_QUESTION + [msg, {"role": "tool", "content": "rain"}],
                stream=False, options=GREEDY)
    assert_final(r, max_eval=12)


# ---- embeddings ----


def test_embed_with_the_embedding_model_and_refuse_a_chat_model(ol, model):
    r = ol.embed(model="all-MiniLM-L6-v2", input=["hello world", "good morning"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 384
    assert r.prompt_eval_count > 0
    e = ol.embeddings(model="all-MiniLM-L6-v2", prompt="hello world")
    assert max(abs(a - b) for a, b in zip(e.embedding, r.embeddings[0])) < 1e-6
    with pytest.raises(ollama.ResponseError) as err:
        ol.embed(model=model, input="hello")
    assert err.value.status_code == 400
    assert "not an embedding model" in err.value.error


# ---- pull and delete (local fake hub, temp store) ----


def test_pull_streams_progress_then_delete(ol, model):
    assert HUB_REPO, "FERROLLAMA_HUB_REPO not set (run ./scripts/client-tests)"
    events = list(ol.pull(HUB_REPO, stream=True))
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest", statuses
    assert statuses[-1] == "success", statuses
    files = [e for e in events if e.total]
    assert files, statuses
    assert files[-1].completed == files[-1].total > 100_000
    assert files[-1].digest.endswith(".gguf")

    names = {m.model for m in ol.list().models}
    pulled = sorted(n for n in names if n.startswith("tiny-q4_k_m"))
    assert pulled == ["tiny-q4_k_m:latest"], names
    s = ol.show("tiny-q4_k_m")
    assert s.details.quantization_level == "Q4_K_M"
    # In the store but not loaded: a clear error saying how to serve it.
    with pytest.raises(ollama.ResponseError) as e:
        ol.chat(model="tiny-q4_k_m", messages=HI, stream=False)
    assert e.value.status_code == 400
    assert "serve -m tiny-q4_k_m" in e.value.error

    # Pulling again is a no-op answered in one object.
    again = ol.pull(HUB_REPO, stream=False)
    assert again.status == "success"

    assert ol.delete("tiny-q4_k_m:latest").status == "success"
    assert "tiny-q4_k_m:latest" not in {m.model for m in ol.list().models}
    with pytest.raises(ollama.ResponseError) as e:
        ol.delete("tiny-q4_k_m")
    assert e.value.status_code == 404


def test_pull_of_a_missing_repository_fails_clearly(ol):
    with pytest.raises(ollama.ResponseError) as e:
        list(ol.pull("test/no-such-repo", stream=True))
    assert "no-such-repo" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        ol.pull("test/no-such-repo", stream=False)
    assert e.value.status_code == 404


def test_ollama_registry_names_are_refused_with_400(ol):
    with pytest.raises(ollama.ResponseError) as e:
        ol.pull("llama3.2", stream=False)
    assert e.value.status_code == 400
    assert "hub" in e.value.error


def test_deleting_a_served_model_outside_the_store_is_refused(ol, model):
    with pytest.raises(ollama.ResponseError) as e:
        ol.delete(model)
    assert e.value.status_code == 400
