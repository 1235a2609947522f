"""Embeddings and vector stores through the real clients: `openai` (embeddings in base64,
its default, and float; files → vector store → poll → search), `llama-stack-client`
(inference.embeddings, the model list). The server loads all-MiniLM-L6-v2 by default.
"""
from __future__ import annotations

import io
import math
import time

import openai
import pytest

EMB = "all-MiniLM-L6-v2"


def cosine(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_openai_embeddings_base64_and_float_agree(oa):
    texts = ["A man is eating food.", "A man is eating a piece of bread."]
    b64 = oa.embeddings.create(model=EMB, input=texts)  # the client asks for base64
    flt = oa.embeddings.create(model=EMB, input=texts, encoding_format="float")
    assert b64.model == EMB and len(b64.data) == 2
    assert len(b64.data[0].embedding) == 384
    for x, y in zip(b64.data, flt.data):
        assert max(abs(p - q) for p, q in zip(x.embedding, y.embedding)) < 1e-6
    # sentence-transformers' README gives 0.7553 for this pair with this model.
    assert abs(cosine(flt.data[0].embedding, flt.data[1].embedding) - 0.7553) < 1e-3
    assert flt.usage.prompt_tokens == 8 + 11
    with pytest.raises(openai.BadRequestError) as e:
        oa.embeddings.create(model=EMB, input="x", dimensions=64)
    assert "dimensions" in str(e.value)


def test_llama_stack_embeddings_and_model_list(ls):
    r = ls.inference.embeddings(model_id=EMB, contents=["Paris is the capital of France.", "Berlin is in Germany."])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 384
    m = [m for m in ls.models.list() if m.identifier == EMB]
    assert m and m[0].model_type == "embedding"
    assert m[0].metadata["embedding_dimension"] == 384


DOCS = {
    "volcano.txt": "Volcanoes form where magma rises through the crust; eruptions throw ash into the air and lava flows down the slopes.",
    "bread.txt": "To bake sourdough bread, feed the starter, mix flour, water and salt, let the dough rise, shape the loaf and bake it hot.",
    "tennis.txt": "A tennis match is played in sets; six games win a set, and a game is scored fifteen, thirty, forty, game.",
}


def wait_completed(oa, vs_id: str, file_id: str):
    deadline = time.time() + 120
    while True:
        f = oa.vector_stores.files.retrieve(file_id, vector_store_id=vs_id)
        if f.status != "in_progress":
            return f
        assert time.time() < deadline, f"{file_id} still in progress"
        time.sleep(0.1)


def test_upload_attach_poll_search(oa):
    ids = {}
    for name, text in DOCS.items():
        ids[name] = oa.files.create(file=(name, io.BytesIO(text.encode())), purpose="assistants").id
    vs = oa.vector_stores.create(name="client-test", file_ids=list(ids.values()), metadata={"suite": "clients"})
    assert vs.id.startswith("vs_") and vs.metadata == {"suite": "clients"}
    for fid in ids.values():
        assert wait_completed(oa, vs.id, fid).status == "completed"
    assert oa.vector_stores.retrieve(vs.id).file_counts.completed == 3

    res = oa.vector_stores.search(vs.id, query="how is bread made at home?")
    hits = list(res)
    assert hits[0].filename == "bread.txt" and hits[0].file_id == ids["bread.txt"]
    assert hits[0].content[0].text == DOCS["bread.txt"]
    assert 0 < hits[0].score <= 1

    # Attributes and filters through an attach of its own.
    extra = oa.files.create(file=("lava.txt", io.BytesIO(b"Lava is molten rock erupted by a volcano.")), purpose="assistants")
    vf = oa.vector_stores.files.create(vector_store_id=vs.id, file_id=extra.id, attributes={"kind": "note", "year": 2024})
    assert vf.attributes == {"kind": "note", "year": 2024}
    wait_completed(oa, vs.id, extra.id)
    hits = list(oa.vector_stores.search(vs.id, query="volcano lava", filters={"type": "eq", "key": "kind", "value": "note"}))
    assert [h.filename for h in hits] == ["lava.txt"]

    listed = list(oa.vector_stores.files.list(vector_store_id=vs.id, filter="completed"))
    assert {f.id for f in listed} == set(ids.values()) | {extra.id}
    content = list(oa.vector_stores.files.content(file_id=ids["tennis.txt"], vector_store_id=vs.id))
    assert content[0].text == DOCS["tennis.txt"]

    deleted = oa.vector_stores.files.delete(file_id=ids["tennis.txt"], vector_store_id=vs.id)
    assert deleted.deleted
    assert all(h.filename != "tennis.txt" for h in oa.vector_stores.search(vs.id, query="tennis scoring"))

    with pytest.raises(openai.BadRequestError):
        oa.vector_stores.search(vs.id, query="")
    with pytest.raises(openai.NotFoundError):
        oa.vector_stores.retrieve("vs_000000000000000000000000")
    assert oa.vector_stores.delete(vs.id).deleted
