#!/usr/bin/env python3
"""Malformed requests: every one must get a 4xx with a JSON error, never a 5xx or a leak.

    python3 bench/reliability/malformed.py --spawn smollm2 [--api-key KEY]
    python3 bench/reliability/malformed.py --base-url http://127.0.0.1:8080 [--api-key KEY]

Sends a few hundred distinct bad requests, one at a time, to the OpenAI routes
(/v1/chat/completions, /v1/completions, /v1/models/{id}) and the Llama Stack routes
(/v1/inference/chat-completion, /v1/inference/completion,
/v1/inference/batch-chat-completion): bad JSON (empty, truncated, trailing garbage, NaN
and Infinity literals, 1e309, 100k nested brackets, lone surrogates, invalid UTF-8), wrong
types and out-of-range values for every field, unknown model, empty/incomplete messages,
malformed tools / tool_choice / response_format, wrong or missing Content-Type, a 20 MiB
body, unknown routes, wrong methods, and (with --api-key) missing or wrong credentials.

Checks, per response: the status is 4xx (each case also names the 4xx codes that fit it,
e.g. 404 unknown route, 405 wrong method, 413 too large, 415 content type, 401 auth, 400/422
bad body; another 4xx is reported as a mismatch, and fails only with --strict-status); the
body is JSON with an error message (`{"error": {"message": ...}}` on the API routes); the
body leaks nothing ("/root", "/home", ".rs:", "panicked", "backtrace"). Afterwards GET
/health must still be 200 and a normal chat completion must still work.

Prints the counts by status and `malformed: N requests, N 4xx, N 5xx, N other`; exits
non-zero on any 5xx, any other outcome (2xx/3xx, connection reset, timeout), a missing
error envelope, a leak, or a failed final check.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import oaiclient as oc  # noqa: E402

BODY_BAD = {400, 422}
LEAKS = ["/root", "/home", ".rs:", "panicked", "backtrace"]


@dataclass
class Case:
    name: str
    method: str
    path: str
    body: bytes | None
    expect: set[int]
    headers: dict | None = None
    envelope: bool = True  # require {"error": {"message": str}}


def J(x) -> bytes:
    return json.dumps(x).encode()


def routes(model: str) -> dict[str, dict]:
    """The valid base body of each POST route."""
    msgs = [{"role": "user", "content": "Hi"}]
    sp = {"strategy": {"type": "greedy"}, "max_tokens": 4}
    return {
        "/v1/chat/completions": {"model": model, "messages": msgs, "max_tokens": 4},
        "/v1/completions": {"model": model, "prompt": "Hi", "max_tokens": 4},
        "/v1/inference/chat-completion": {"model_id": model, "messages": msgs, "sampling_params": sp},
        "/v1/inference/completion": {"model_id": model, "content": "Hi", "sampling_params": sp},
        "/v1/inference/batch-chat-completion": {"model_id": model, "messages_batch": [msgs], "sampling_params": sp},
    }


# bad values for the messages of a chat dialog
BAD_MESSAGES = [
    ("string", "hello"), ("empty", []), ("number", 5), ("null", None), ("object", {"role": "user"}),
    ("no-content", [{"role": "user"}]), ("no-role", [{"content": "hi"}]),
    ("unknown-role", [{"role": "wizard", "content": "hi"}]), ("role-number", [{"role": 1, "content": "hi"}]),
    ("content-number", [{"role": "user", "content": 5}]), ("content-object", [{"role": "user", "content": {"a": 1}}]),
    ("content-part-bogus", [{"role": "user", "content": [{"type": "bogus", "x": 1}]}]),
    ("content-part-text-number", [{"role": "user", "content": [{"type": "text", "text": 5}]}]),
    ("array-of-arrays", [["user", "hi"]]), ("null-message", [None]), ("string-message", ["hi"]),
]
BAD_MAX_TOKENS = [("string", "x"), ("negative", -1), ("1e309", 1e309), ("2^70", 2 ** 70), ("10^4000", 10 ** 4000),
                  ("float", 1.5), ("bool", True), ("array", [4]), ("object", {"n": 4})]
BAD_TEMPERATURE = [("negative", -1), ("string", "hot"), ("1e400", 1e400), ("array", [0.5]), ("bool", True)]
BAD_SAMPLING = [("string", "x"), ("strategy-string", {"strategy": "greedy"}),
                ("strategy-unknown", {"strategy": {"type": "bogus"}}),
                ("top_p-temperature-negative", {"strategy": {"type": "top_p", "temperature": -1, "top_p": 0.9}}),
                ("top_p-temperature-string", {"strategy": {"type": "top_p", "temperature": "hot", "top_p": 0.9}}),
                ("top_p-top_p-1.5", {"strategy": {"type": "top_p", "temperature": 0.5, "top_p": 1.5}}),
                ("top_k-string", {"strategy": {"type": "top_k", "top_k": "x"}}),
                ("max_tokens-string", {"max_tokens": "x"}), ("max_tokens-negative", {"max_tokens": -1}),
                ("max_tokens-2^70", {"max_tokens": 2 ** 70}),
                ("max_tokens-10^4000", {"max_tokens": 10 ** 4000}), ("max_tokens-1e309", {"max_tokens": 1e309}),
                ("repetition_penalty-string", {"repetition_penalty": "x"}), ("array", [1])]
BAD_MODEL = [("number", 5), ("null", None), ("array", ["a"]), ("object", {}), ("bool", False)]


def body_cases(path: str, base: dict) -> list[Case]:
    """Broken JSON and transport-level problems, the same for every POST route."""
    good = J(base)
    big = b'{"pad": "' + b"a" * (20 << 20) + b'", ' + good[1:]
    out = [
        ("empty-body", b"", BODY_BAD | {411}),
        ("truncated", good[: len(good) // 2], BODY_BAD),
        ("truncated-one-byte", good[:-1], BODY_BAD),
        ("trailing-garbage", good + b" xyz", BODY_BAD),
        ("two-objects", good + good, BODY_BAD),
        ("array", b"[]", BODY_BAD),
        ("string", b'"hello"', BODY_BAD),
        ("null", b"null", BODY_BAD),
        ("number", b"42", BODY_BAD),
        ("empty-object", b"{}", BODY_BAD),
        ("single-quotes", good.replace(b'"', b"'"), BODY_BAD),
        ("nan-literal", good[:-1] + b', "temperature": NaN}', BODY_BAD),
        ("infinity-literal", good[:-1] + b', "temperature": Infinity}', BODY_BAD),
        ("nested-100k-brackets", b"[" * 100_000 + b"]" * 100_000, BODY_BAD),
        ("nested-100k-objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, BODY_BAD),
        ("nested-100k-in-field", good[:-1] + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", BODY_BAD),
        ("invalid-utf8", good.replace(b'"Hi"', b'"H\xff\xfei"'), BODY_BAD),
        ("invalid-utf8-key", good[:-1] + b', "\xc3\x28": 1}', BODY_BAD),
        ("lone-surrogate", good.replace(b'"Hi"', b'"\\ud800"'), BODY_BAD),
        ("bad-escape", good.replace(b'"Hi"', b'"\\x41"'), BODY_BAD),
        ("control-char-in-string", good.replace(b'"Hi"', b'"H\x01i"'), BODY_BAD),
        ("form-encoded", b"model=x&prompt=Hi", BODY_BAD),
        ("oversized-20MiB", big, {413}),
    ]
    cases = [Case(f"{path} {n}", "POST", path, b, e) for n, b, e in out]
    cases += [
        Case(f"{path} content-type-text", "POST", path, good, BODY_BAD | {415}, {"Content-Type": "text/plain"}),
        Case(f"{path} content-type-form", "POST", path, good, BODY_BAD | {415},
             {"Content-Type": "application/x-www-form-urlencoded"}),
        Case(f"{path} content-type-missing", "POST", path, good, BODY_BAD | {415}, {"Content-Type": None}),
    ]
    return cases


def with_field(base: dict, key: str, value, sub: str | None = None) -> dict:
    b = json.loads(json.dumps(base))
    if sub:
        b[sub] = dict(b.get(sub) or {})
        b[sub][key] = value
    else:
        b[key] = value
    return b


def field_cases(path: str, base: dict, model: str) -> list[Case]:
    out: list[tuple[str, dict, set]] = []

    def add(field_: str, values, sub=None, expect=BODY_BAD):
        for n, v in values:
            out.append((f"{sub + '.' if sub else ''}{field_}={n}", with_field(base, field_, v, sub), expect))

    llama_stack = "model_id" in base
    mkey = "model_id" if llama_stack else "model"
    add(mkey, BAD_MODEL)
    add(mkey, [("unknown", "no-such-model-xyz")], expect={400, 404})
    missing_model = dict(base)
    del missing_model[mkey]

    if path == "/v1/chat/completions":
        add("messages", BAD_MESSAGES)
        out.append(("messages-missing", {k: v for k, v in base.items() if k != "messages"}, BODY_BAD))
        add("max_tokens", BAD_MAX_TOKENS)
        add("max_completion_tokens", [("string", "x"), ("negative", -1), ("2^70", 2 ** 70)])
        add("temperature", BAD_TEMPERATURE)
        add("top_p", [("negative", -0.5), ("1.5", 1.5), ("string", "x")])
        add("n", [("zero", 0), ("1e9", 10 ** 9), ("string", "2"), ("negative", -1), ("float", 1.5)])
        add("stop", [("number", 5), ("number-list", [5]), ("object", {"a": 1}), ("nested-list", [["a"]])])
        add("stream", [("string", "yes"), ("number", 1), ("object", {})])
        add("seed", [("string", "x"), ("float", 1.5), ("2^70", 2 ** 70)])
        add("presence_penalty", [("string", "x"), ("array", [1])])
        add("frequency_penalty", [("string", "x"), ("object", {})])
        add("logprobs", [("string", "x"), ("number", 3)])
        add("top_logprobs", [("negative", -1), ("string", "x")])
        add("stream_options", [("string", "x"), ("include_usage-string", {"include_usage": "yes"})])
        add("tools", [("string", "x"), ("object", {}), ("missing-function", [{"type": "function"}]),
                      ("name-number", [{"type": "function", "function": {"name": 5}}]),
                      ("unknown-type", [{"type": "bogus", "function": {"name": "f"}}]),
                      ("parameters-string", [{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
                      ("null-entry", [None])])
        add("tool_choice", [("unknown-string", "sometimes"), ("number", 5), ("object-unknown-type", {"type": "bogus"}),
                            ("function-not-in-tools", {"type": "function", "function": {"name": "nonexistent"}})])
        add("response_format", [("string", "json"), ("unknown-type", {"type": "bogus"}),
                                ("json_schema-missing", {"type": "json_schema"}),
                                ("schema-string", {"type": "json_schema", "json_schema": {"name": "x", "schema": "notaschema"}}),
                                ("schema-bad-type", {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}})])
    elif path == "/v1/completions":
        add("prompt", [("number", 5), ("object", {}), ("null", None), ("bool", True),
                       ("negative-token", [-1]), ("token-out-of-vocab", [10 ** 12]), ("token-float", [1.5]),
                       ("nested-object", [{"a": 1}])])
        out.append(("prompt-missing", {k: v for k, v in base.items() if k != "prompt"}, BODY_BAD))
        add("max_tokens", BAD_MAX_TOKENS)
        add("temperature", BAD_TEMPERATURE)
        add("top_p", [("negative", -0.5), ("1.5", 1.5), ("string", "x")])
        add("n", [("zero", 0), ("1e9", 10 ** 9), ("string", "2"), ("negative", -1)])
        add("stop", [("number", 5), ("number-list", [5]), ("object", {"a": 1})])
        add("stream", [("string", "yes"), ("object", {})])
        add("seed", [("string", "x"), ("2^70", 2 ** 70)])
        add("logprobs", [("string", "x"), ("negative", -1)])
        add("echo", [("string", "x")])
        add("suffix", [("number", 5)])
        add("best_of", [("string", "x")])
    elif path == "/v1/inference/chat-completion":
        add("messages", BAD_MESSAGES)
        out.append(("messages-missing", {k: v for k, v in base.items() if k != "messages"}, BODY_BAD))
        add("sampling_params", BAD_SAMPLING)
        add("tools", [("string", "x"), ("tool_name-number", [{"tool_name": 5}]), ("null-entry", [None])])
        add("tool_choice", [("unknown-string", "sometimes"), ("number", 5)])
        add("tool_prompt_format", [("unknown", "bogus"), ("number", 5)])
        add("response_format", [("string", "json"), ("unknown-type", {"type": "bogus"})])
        add("stream", [("string", "yes")])
        add("logprobs", [("string", "x"), ("top_k-string", {"top_k": "x"})])
    elif path == "/v1/inference/completion":
        add("content", [("number", 5), ("object", {}), ("null", None), ("part-bogus", [{"type": "bogus"}])])
        out.append(("content-missing", {k: v for k, v in base.items() if k != "content"}, BODY_BAD))
        add("sampling_params", BAD_SAMPLING)
        add("response_format", [("string", "json"), ("unknown-type", {"type": "bogus"})])
        add("stream", [("string", "yes")])
        add("logprobs", [("string", "x")])
    elif path == "/v1/inference/batch-chat-completion":
        add("messages_batch", [("string", "x"), ("empty", []), ("number", 5), ("list-of-strings", ["x"]),
                               ("dialog-missing-content", [[{"role": "user"}]]),
                               ("dialog-unknown-role", [[{"role": "wizard", "content": "hi"}]]),
                               ("dialog-string", [["hi"]]), ("null", None)])
        out.append(("messages_batch-missing", {k: v for k, v in base.items() if k != "messages_batch"}, BODY_BAD))
        add("sampling_params", BAD_SAMPLING[:8])
        add("tools", [("string", "x")])
        add("response_format", [("unknown-type", {"type": "bogus"})])
    return [Case(f"{path} {n}", "POST", path, J(b), e) for n, b, e in out]


def route_cases(post_paths: list[str], api_key: str | None) -> list[Case]:
    cases = []
    for p in post_paths:
        for m in ("GET", "PUT", "DELETE", "PATCH"):
            cases.append(Case(f"{m} {p}", m, p, None if m in ("GET", "DELETE") else b"{}", {405}))
    for p in ["/v1/chat/completion", "/v2/chat/completions", "/v1/inference/chat_completion", "/v1/foo",
              "/v1/chat/completions/extra", "/v1/inference/", "/%ff%fe", "/v1/completions%00"]:
        cases.append(Case(f"unknown route {p}", "POST", p, b"{}", {404, 400}, envelope=False))
    for p, exp in [("/v1/models/no-such-model-xyz", {404}), ("/v1/models/%ff%fe", {400, 404}),
                   ("/v1/models/" + "x" * 10000, {400, 404, 414, 431}),
                   ("/v1/models/..%2F..%2Fetc%2Fpasswd", {400, 404}), ("/v1/models/%00", {400, 404}),
                   ("/v1/models/a%20b", {404}), ("/v1/models/%7B%7D", {404})]:
        cases.append(Case(f"GET {p[:60]}", "GET", p, None, exp))
    for m in ("POST", "PUT", "DELETE", "PATCH"):
        cases.append(Case(f"{m} /v1/models/no-such-model-xyz", m, "/v1/models/no-such-model-xyz",
                          None if m == "DELETE" else b"{}", {404, 405}))
    if api_key:
        for p in post_paths + ["/v1/models"]:
            for n, h in [("missing", None), ("wrong", "Bearer wrong-" + api_key), ("basic", "Basic " + api_key),
                         ("empty-bearer", "Bearer "), ("no-scheme", api_key)]:
                cases.append(Case(f"{p} auth-{n}", "GET" if p == "/v1/models" else "POST", p,
                                  None if p == "/v1/models" else b"{}", {401}, {"Authorization": h}))
    return cases


def check_body(c: Case, r: oc.Response, model: str) -> list[str]:
    problems = []
    # the model id we sent may be a path (llama-server's is); an echo of it is no leak
    low = r.body.replace(model.encode(), b"").replace(json.dumps(model)[1:-1].encode(), b"").lower()
    for s in LEAKS:
        if s.encode() in low:
            problems.append(f"leak {s!r}")
    try:
        doc = json.loads(r.body)
    except ValueError:
        return problems + [f"body not JSON: {r.body[:120]!r}"]
    ok = isinstance(doc, dict) and isinstance(doc.get("error"), dict) and isinstance(doc["error"].get("message"), str) \
        and doc["error"]["message"].strip() != ""
    if not ok:
        loose = isinstance(doc, dict) and any(isinstance(doc.get(k), str) and doc[k] for k in ("error", "message", "detail"))
        if c.envelope or not loose:
            problems.append(f"no error envelope: {r.body[:120]!r}")
    return problems


async def main_async(a) -> int:
    async with oc.target_from_args(a, "malformed") as (t, _pid):
        model = a.model or await oc.model_id(t)
        bases = routes(model)
        cases: list[Case] = []
        for p, b in bases.items():
            cases += body_cases(p, b)
            cases += field_cases(p, b, model)
        cases += route_cases(list(bases), a.api_key)
        names = Counter(c.name for c in cases)
        dup = [n for n, k in names.items() if k > 1]
        assert not dup, f"duplicate case names: {dup[:5]}"
        print(f"malformed: {len(cases)} cases against {t.url} (model {model!r})", file=sys.stderr, flush=True)

        statuses: Counter = Counter()
        n4 = n5 = nother = 0
        failures: list[str] = []
        mismatches: list[str] = []
        for i, c in enumerate(cases):
            try:
                r = await oc.request(t, c.method, c.path, c.body, c.headers, timeout=a.timeout)
            except oc.HttpError as e:
                statuses["error"] += 1
                nother += 1
                failures.append(f"{c.name}: no response ({e})")
                continue
            statuses[r.status] += 1
            if 400 <= r.status < 500:
                n4 += 1
                if r.status not in c.expect:
                    mismatches.append(f"{c.name}: {r.status} (expected {'/'.join(map(str, sorted(c.expect)))})"
                                      f" {r.body[:100]!r}")
            elif r.status >= 500:
                n5 += 1
                failures.append(f"{c.name}: {r.status} {r.body[:160]!r}")
            else:
                nother += 1
                failures.append(f"{c.name}: {r.status} (not 4xx) {r.body[:160]!r}")
            for p in check_body(c, r, model):
                failures.append(f"{c.name}: {r.status} {p}")
            if a.verbose:
                print(f"{r.status} {c.name[:100]}", file=sys.stderr)

        # the server must still be up and serving
        final_ok = True
        try:
            h = await oc.request(t, "GET", "/health", timeout=10)
            if h.status != 200:
                final_ok = False
                failures.append(f"after: GET /health -> {h.status}")
        except oc.HttpError as e:
            final_ok = False
            failures.append(f"after: GET /health failed: {e}")
        try:
            r = await oc.request(t, "POST", "/v1/chat/completions",
                                 {"model": model, "messages": [{"role": "user", "content": "Say hello."}],
                                  "max_tokens": 8, "temperature": 0}, timeout=120)
            content = None
            if r.status == 200:
                content = r.json()["choices"][0]["message"].get("content")
            if not isinstance(content, str):
                final_ok = False
                failures.append(f"after: normal chat completion -> {r.status} {r.body[:200]!r}")
            else:
                print(f"after: GET /health 200, chat completion 200 ({content[:40]!r})", file=sys.stderr)
        except (oc.HttpError, ValueError, KeyError, IndexError, TypeError) as e:
            final_ok = False
            failures.append(f"after: normal chat completion failed: {e!r}")

        print("status counts: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))))
        if mismatches:
            print(f"{len(mismatches)} 4xx with another code than expected:")
            for m in mismatches[: a.show]:
                print("  " + m)
            if len(mismatches) > a.show:
                print(f"  ... {len(mismatches) - a.show} more")
        if failures:
            print(f"{len(failures)} failures:")
            for f in failures[: a.show]:
                print("  " + f)
            if len(failures) > a.show:
                print(f"  ... {len(failures) - a.show} more")
        print(f"malformed: {len(cases)} requests, {n4} 4xx, {n5} 5xx, {nother} other")
        bad = bool(failures) or not final_ok or (a.strict_status and mismatches)
        return 1 if bad else 0


def main():
    oc.exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    oc.add_target_args(ap)
    ap.add_argument("--timeout", type=float, default=30, help="seconds per request")
    ap.add_argument("--strict-status", action="store_true", help="fail when a 4xx is not one of the expected codes")
    ap.add_argument("--show", type=int, default=40, help="failures / mismatches to list")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every status")
    a = ap.parse_args()
    sys.exit(asyncio.run(main_async(a)))


if __name__ == "__main__":
    main()
