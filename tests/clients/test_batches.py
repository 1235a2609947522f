"""OpenAI's Batches API through the real `openai` client: upload a JSONL file, create a
batch, poll it to the end, download its output and error files; a bad line lands in the
error file while the rest completes; a cancelled batch keeps its finished lines."""
from __future__ import annotations

import io
import json
import time

import openai
import pytest


def _line(custom_id, model, text, max_tokens=4, url="/v1/chat/completions"):
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": {
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "temperature": 0,
        },
    }


def _upload(oa, lines):
    data = "\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines).encode() + b"\n"
    return oa.files.create(file=("batch.jsonl", io.BytesIO(data)), purpose="batch")


def _wait(oa, batch_id, final=("completed", "failed", "cancelled"), timeout=120):
    t = time.time()
    while True:
        b = oa.batches.retrieve(batch_id)
        if b.status in final:
            return b
        assert b.status in ("validating", "in_progress", "finalizing", "cancelling"), b.status
        assert time.time() - t < timeout, f"batch still {b.status}"
        time.sleep(0.2)


def _jsonl(oa, file_id):
    return [json.loads(x) for x in oa.files.content(file_id).read().decode().splitlines() if x.strip()]


def test_batch_runs_every_line_and_a_bad_line_goes_to_the_error_file(oa, model):
    lines = [_line(f"req-{i}", model, f"Say the number {i}.") for i in range(3)]
    lines.insert(1, "{not json")
    lines.append(_line("wrong-url", model, "x", url="/v1/completions"))
    lines.append({**_line("bad-body", model, "x"), "body": {"model": model, "messages": "nope"}})
    f = _upload(oa, lines)
    b = oa.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"run": "test"}
    )
    assert b.id.startswith("batch_") and b.object == "batch"
    assert b.status in ("validating", "in_progress", "finalizing", "completed")
    assert b.input_file_id == f.id and b.endpoint == "/v1/chat/completions"
    assert b.metadata == {"run": "test"}
    b = _wait(oa, b.id)
    assert b.status == "completed", b
    assert b.request_counts.total == 6
    assert (b.request_counts.completed, b.request_counts.failed) == (3, 3)
    assert b.in_progress_at and b.completed_at and b.completed_at >= b.created_at

    out = _jsonl(oa, b.output_file_id)
    assert sorted(x["custom_id"] for x in out) == ["req-0", "req-1", "req-2"]
    for x in out:
        assert x["id"].startswith("batch_req_")
        assert x["error"] is None
        assert x["response"]["status_code"] == 200
        body = x["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] is not None
        assert 0 < body["usage"]["completion_tokens"] <= 4

    errs = _jsonl(oa, b.error_file_id)
    by = {x["custom_id"] or f"line {x['error']['line']}": x for x in errs}
    assert set(by) == {"line 2", "wrong-url", "bad-body"}, by
    assert by["line 2"]["error"]["code"] == "invalid_json"
    assert by["wrong-url"]["error"]["code"] == "mismatched_url"
    assert by["bad-body"]["response"]["status_code"] == 400

    listed = [x.id for x in oa.batches.list(limit=100)]
    assert b.id in listed


def test_cancel_keeps_finished_lines(oa, model):
    lines = [_line(f"c-{i}", model, f"Count to {i}.", max_tokens=48) for i in range(40)]
    f = _upload(oa, lines)
    b = oa.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    # Let a few lines finish, then cancel.
    t = time.time()
    while oa.batches.retrieve(b.id).request_counts.completed < 2:
        assert time.time() - t < 60
        time.sleep(0.05)
    c = oa.batches.cancel(b.id)
    assert c.status in ("cancelling", "cancelled", "completed")
    b = _wait(oa, b.id)
    if b.status == "completed":
        pytest.skip("the batch finished before the cancel took effect")
    assert b.status == "cancelled" and b.cancelled_at
    out = _jsonl(oa, b.output_file_id)
    ids = [x["custom_id"] for x in out]
    assert len(ids) == len(set(ids)) == b.request_counts.completed
    assert 2 <= len(ids) < 40
    assert set(ids) <= {f"c-{i}" for i in range(40)}


def test_bad_creates_and_unknown_ids_are_refused(oa, base_url, api_key):
    with pytest.raises(openai.NotFoundError):
        oa.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        oa.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    f = _upload(oa, ["{}"])
    with pytest.raises(openai.BadRequestError):
        oa.batches.create(input_file_id=f.id, endpoint="/v1/nope", completion_window="24h")
    # The Llama Stack path serves the same batches.
    ls = openai.OpenAI(base_url=base_url + "/v1/openai/v1", api_key=api_key, max_retries=0)
    b = ls.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h")
    b = _wait(ls, b.id)
    assert b.status == "completed"
    assert (b.request_counts.total, b.request_counts.failed) == (1, 1)
    assert oa.batches.retrieve(b.id).id == b.id
