"""Fixtures for the real-client tests: a live `ferrollama serve` described by environment variables.

scripts/client-tests starts the server and sets:
    FERROLLAMA_BASE_URL   e.g. http://127.0.0.1:40123 (no trailing /v1)
    FERROLLAMA_API_KEY    the key the server was started with
    FERROLLAMA_MODEL      id of the chat model (SmolLM2-135M-Instruct), used by most tests
    FERROLLAMA_MODEL2     id of the second model (the tiny Llama 3.1 fixture)
    FERROLLAMA_QWEN       id of Qwen2.5-Coder-0.5B-Instruct (real tool calls)
Without FERROLLAMA_BASE_URL every test is skipped.

Wire facts these tests rely on are in docs/llama-stack-wire.md.
"""
from __future__ import annotations

import json
import os

import pytest

BASE_URL = os.environ.get("FERROLLAMA_BASE_URL", "").rstrip("/")
API_KEY = os.environ.get("FERROLLAMA_API_KEY", "")
MODEL = os.environ.get("FERROLLAMA_MODEL", "")
MODEL2 = os.environ.get("FERROLLAMA_MODEL2", "")
# Qwen2.5-Coder-0.5B-Instruct (Hermes tool calls through its own template).
QWEN = os.environ.get("FERROLLAMA_QWEN", "")

# Generous per-request timeout: 2 CPU cores, but every request asks for <= 48 tokens.
TIMEOUT_S = 120.0

WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "City name, e.g. Paris"}},
            "required": ["location"],
        },
    },
}

WEATHER_TOOL_LLAMA_STACK = {
    "tool_name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {
        "location": {"param_type": "string", "description": "City name, e.g. Paris", "required": True},
    },
}

PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
PERSON_PROMPT = (
    "Reply with a JSON object describing this person: their name is Alice and their age is 30."
)


def pytest_collection_modifyitems(config, items):
    if BASE_URL:
        return
    skip = pytest.mark.skip(reason="FERROLLAMA_BASE_URL not set (run ./scripts/client-tests)")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def base_url() -> str:
    return BASE_URL


@pytest.fixture(scope="session")
def api_key() -> str:
    return API_KEY


@pytest.fixture(scope="session")
def model() -> str:
    assert MODEL, "FERROLLAMA_MODEL not set"
    return MODEL


@pytest.fixture(scope="session")
def qwen() -> str:
    assert QWEN, "FERROLLAMA_QWEN not set"
    return QWEN


@pytest.fixture(scope="session")
def model2() -> str:
    assert MODEL2, "FERROLLAMA_MODEL2 not set"
    return MODEL2


@pytest.fixture(scope="session")
def oa():
    """openai client on /v1 (paths /v1/chat/completions, /v1/completions, /v1/models)."""
    import openai

    # max_retries=0: a 5xx must show up as a failure, not as a slow retry.
    return openai.OpenAI(base_url=BASE_URL + "/v1", api_key=API_KEY, max_retries=0, timeout=TIMEOUT_S)


@pytest.fixture(scope="session")
def ls():
    """llama-stack client on the server root (paths /v1/inference/..., /v1/models, ...)."""
    from llama_stack_client import LlamaStackClient

    return LlamaStackClient(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=TIMEOUT_S)


def tool_args(tool_call) -> dict:
    """A llama-stack ToolCall's arguments as a dict (the wire allows an object or a JSON string)."""
    args = tool_call.arguments
    if isinstance(args, str):
        args = json.loads(args)
    assert isinstance(args, dict), f"arguments is not an object: {tool_call.arguments!r}"
    return args


def content_text(content) -> str:
    """llama-stack InterleavedContent (str, item or list of items) -> its text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(content_text(c) for c in content)
    text = getattr(content, "text", None)
    assert isinstance(text, str), f"not text content: {content!r}"
    return text
