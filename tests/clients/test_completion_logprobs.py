"""Legacy completions `echo` + `logprobs` (prompt scoring), as lm-evaluation-harness's
`local-completions` model uses them, through the real openai client."""
from __future__ import annotations

import math

PROMPT = "The capital of France is Paris. The capital of Italy is"


def _score(oa, model, prompt, max_tokens=0, logprobs=1):
    return oa.completions.create(
        model=model, prompt=prompt, max_tokens=max_tokens, echo=True, logprobs=logprobs, temperature=0
    )


def test_echo_with_max_tokens_zero_scores_the_prompt_only(oa, model):
    r = _score(oa, model, PROMPT)
    c = r.choices[0]
    assert c.text == PROMPT
    assert r.usage.completion_tokens == 0
    lp = c.logprobs
    n = r.usage.prompt_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    for v, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:]):
        assert v <= 0.0 and math.isfinite(v)
        assert len(top) == 1
        # The most likely token is at least as likely as the actual one.
        assert max(top.values()) >= v - 1e-5
    assert lp.text_offset == sorted(lp.text_offset)
    # Offsets index into the echoed text: the last token's visible text ends it.
    assert PROMPT.endswith(lp.tokens[-1])
    assert lp.text_offset[-1] == len(PROMPT.encode()) - len(lp.tokens[-1].encode())


def test_echo_with_generation_appends_the_completion_tokens(oa, model):
    scored = _score(oa, model, PROMPT).choices[0].logprobs
    r = _score(oa, model, PROMPT, max_tokens=2)
    c = r.choices[0]
    assert c.text.startswith(PROMPT)
    n = r.usage.prompt_tokens
    assert len(c.logprobs.token_logprobs) == n + r.usage.completion_tokens
    for a, b in zip(scored.token_logprobs[1:], c.logprobs.token_logprobs[1:n]):
        assert abs(a - b) < 1e-4


def test_token_id_prompts_are_scored_each_in_its_choice(oa, model):
    # lm-evaluation-harness sends token ids, several prompts per request.
    r = oa.completions.create(
        model=model, prompt=[[1, 2, 3, 4], [5, 6, 7]], max_tokens=0, echo=True, logprobs=0, temperature=0
    )
    assert [c.index for c in r.choices] == [0, 1]
    assert [len(c.logprobs.token_logprobs) for c in r.choices] == [4, 3]
    assert r.usage.prompt_tokens == 7


# Prompts after which SmolLM2 ends its turn (<|im_end|>) at once.
_ENDED_TURNS = [
    "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\nHello! How can I help you today?",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n2+2 equals 4.",
    "<|im_start|>user\nThanks!<|im_end|>\n<|im_start|>assistant\nYou're welcome!",
]


def test_a_stop_token_ending_the_output_is_listed_as_the_generated_token(oa, model):
    # lm-eval's local-completions scores a continuation with `echo`, `max_tokens: 1`, and
    # sums token_logprobs[ctxlen:-1]: the last entry must be the generated token even when
    # that token is the end of turn (which adds no text), else the continuation's last
    # token is dropped.
    stopped = 0
    for prompt in _ENDED_TURNS:
        r = _score(oa, model, prompt, max_tokens=1)
        c = r.choices[0]
        lp = c.logprobs
        n = r.usage.prompt_tokens
        assert len(lp.token_logprobs) == n + 1, (prompt, c.finish_reason, lp.tokens[-3:])
        assert len(lp.tokens) == len(lp.top_logprobs) == len(lp.text_offset) == n + 1
        if c.finish_reason == "stop":
            stopped += 1
            # The stop token adds no text; it starts where the text ends.
            assert c.text == prompt
            assert lp.text_offset[-1] == len(prompt.encode())
            assert lp.tokens[-1] == "<|im_end|>"
            assert lp.token_logprobs[-1] <= 0.0 and math.isfinite(lp.token_logprobs[-1])
        # The prompt's entries are those of scoring it alone.
        alone = _score(oa, model, prompt).choices[0].logprobs.token_logprobs
        for a, b in zip(alone[1:], lp.token_logprobs[1:n]):
            assert abs(a - b) < 1e-4
    assert stopped >= 1, "no prompt ended in a stop token: pick prompts the model ends"
