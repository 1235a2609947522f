"""Stored chat completions through the real clients: the `openai` client's `store=True`,
`chat.completions.list / retrieve / update / delete / messages.list`, and llama-stack-client's
`chat.completions.list / retrieve` (the Llama Stack path records every completion).

The server's store may already hold completions of other tests, so each test finds its own by id.
"""
from __future__ import annotations

import openai
import pytest

USER_HI = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello in one short sentence."},
]


def test_openai_store_true_is_listed_retrieved_and_deleted(oa, model):
    r = oa.chat.completions.create(
        model=model, messages=USER_HI, max_tokens=6, temperature=0, store=True, metadata={"suite": "stored"}
    )
    page = oa.chat.completions.list(limit=100, model=model)
    found = [c for c in page.data if c.id == r.id]
    assert found, [c.id for c in page.data]
    c = found[0]
    assert c.object == "chat.completion"
    assert c.choices[0].message.content == r.choices[0].message.content
    assert c.model == r.model
    assert c.created == r.created
    extra = c.model_extra or {}
    assert c.metadata == {"suite": "stored"}
    assert [m["content"] for m in extra.get("input_messages", [])] == [m["content"] for m in USER_HI]

    got = oa.chat.completions.retrieve(r.id)
    assert got.id == r.id
    assert got.choices[0].message.content == r.choices[0].message.content

    msgs = oa.chat.completions.messages.list(r.id)
    assert [m.content for m in msgs.data] == [m["content"] for m in USER_HI]
    assert [m.role for m in msgs.data] == ["system", "user"]
    assert all(m.id for m in msgs.data)
    one = oa.chat.completions.messages.list(r.id, limit=1, order="desc")
    assert [m.content for m in one.data] == [USER_HI[-1]["content"]]

    upd = oa.chat.completions.update(r.id, metadata={"suite": "updated"})
    assert upd.id == r.id
    assert upd.metadata == {"suite": "updated"}

    d = oa.chat.completions.delete(r.id)
    assert d.id == r.id and d.deleted is True and d.object == "chat.completion.deleted"
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.delete(r.id)


def test_openai_default_is_not_stored(oa, model):
    r = oa.chat.completions.create(model=model, messages=USER_HI, max_tokens=4, temperature=0)
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.retrieve(r.id)


def test_openai_streamed_store_is_recorded_and_pages_auto_paginate(oa, model):
    stream = oa.chat.completions.create(
        model=model, messages=USER_HI, max_tokens=6, temperature=0, store=True, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    cid = chunks[0].id
    got = oa.chat.completions.retrieve(cid)
    assert got.choices[0].message.content == text
    # A second stored one, then the client's cursor pagination (limit=1) walks both.
    r2 = oa.chat.completions.create(model=model, messages=USER_HI, max_tokens=4, temperature=0, store=True)
    seen = [c.id for c in oa.chat.completions.list(limit=1, model=model)]
    assert seen.index(r2.id) < seen.index(cid), seen  # newest first
    asc = [c.id for c in oa.chat.completions.list(limit=1, model=model, order="asc")]
    assert asc == list(reversed(seen))


def test_openai_bad_list_parameters_are_400(oa):
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.list(limit=1000)
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.list(after="chatcmpl-no-such-id")


def test_llama_stack_client_lists_and_retrieves_every_completion(ls, model):
    r = ls.chat.completions.create(model=model, messages=USER_HI, max_tokens=6, temperature=0)
    page = ls.chat.completions.list(limit=100, model=model)
    assert page.object == "list"
    found = [c for c in page.data if c.id == r.id]
    assert found, [c.id for c in page.data]
    c = found[0]
    assert c.object == "chat.completion"
    assert [m.content for m in c.input_messages] == [m["content"] for m in USER_HI]
    assert c.choices[0].message.content == r.choices[0].message.content
    got = ls.chat.completions.retrieve(r.id)
    assert got.id == r.id
    assert [m.role for m in got.input_messages] == ["system", "user"]
