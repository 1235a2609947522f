"""Synthetic data generation through the real `llama_stack_client` (0.2.12):
`synthetic_data_generation.generate(dialogs, filtering_function, model)` with our extras in
`extra_body`; records in `finetune`'s chat format with provenance, the system prompt left
out, a seeded rerun giving the same data, a shield dropping unsafe pairs, and bad input
refused with a 400 / 404 that says why (docs/sdg.md).
"""
from __future__ import annotations

import uuid

import pytest
from llama_stack_client import BadRequestError, NotFoundError

DIALOGS = [
    {"role": "system", "content": "Answer in one short sentence."},
    {"role": "user", "content": "Name a fruit."},
    {"role": "user", "content": "Name a color."},
]


def generate(ls, model, fn="top_k", dialogs=DIALOGS, **extra):
    body = {"n": 3, "max_tokens": 12, "k": 1, "seed": 5}
    body.update(extra)
    return ls.synthetic_data_generation.generate(
        dialogs=dialogs, filtering_function=fn, model=model, extra_body=body
    )


def test_sdg_top_k_records_with_provenance_and_a_reproducible_seed(ls, model):
    r = generate(ls, model)
    s = r.statistics
    assert s["prompts"] == 2 and s["generations"] == 6 and s["filtering_function"] == "top_k"
    assert s["kept"] == len(r.synthetic_data) <= 2
    assert s["kept"] + s["unsafe_dropped"] + s["empty_dropped"] + s["filtered_out"] == 6, s
    assert r.synthetic_data, s
    for rec in r.synthetic_data:
        msgs = rec["messages"]
        # The system message drove the teacher but is not in the record.
        assert [m["role"] for m in msgs] == ["user", "assistant"], msgs
        assert msgs[0]["content"] in ("Name a fruit.", "Name a color.")
        assert msgs[1]["content"].strip()
        p = rec["provenance"]
        assert p["model"] == model and p["filtering_function"] == "top_k"
        assert isinstance(p["seed"], int) and p["score"] <= 0.0
    # The same request (same seed) gives the same data.
    again = generate(ls, model)
    assert again.synthetic_data == r.synthetic_data


def test_sdg_none_keeps_every_reply_and_a_shield_drops_flagged_ones(ls, model):
    r = generate(ls, model, fn="none", n=2)
    assert r.statistics["kept"] + r.statistics["empty_dropped"] == 4, r.statistics
    sid = f"regex-{uuid.uuid4().hex[:8]}"
    ls.shields.register(shield_id=sid, provider_id="regex", params={"pattern": "(?s).", "code": "S1"})
    flagged = generate(ls, model, fn="none", n=2, shield_id=sid)
    assert flagged.synthetic_data == []
    assert flagged.statistics["unsafe_dropped"] + flagged.statistics["empty_dropped"] == 4
    # The served model as a stand-in Llama Guard: every kept record carries its verdict.
    guarded = generate(ls, model, fn="none", n=1, shield_id=model)
    for rec in guarded.synthetic_data:
        assert rec["provenance"]["shield"] == {"shield_id": model, "flagged": False, "codes": []}


def test_sdg_bad_input_is_a_clear_error(ls, model):
    with pytest.raises(BadRequestError, match="filtering function"):
        generate(ls, model, fn="best")
    with pytest.raises(BadRequestError, match="not a user or system message"):
        generate(ls, model, dialogs=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    with pytest.raises(BadRequestError, match="no user message"):
        generate(ls, model, dialogs=[{"role": "system", "content": "s"}])
    with pytest.raises(BadRequestError, match="n = 1000"):
        generate(ls, model, n=1000)
    with pytest.raises(BadRequestError, match="does not exist"):
        generate(ls, model, shield_id="no-such-shield")
    with pytest.raises(NotFoundError):
        generate(ls, "no-such-model")
