"""Llama Stack eval through the real `llama_stack_client` (0.2.12) on SmolLM2:
`benchmarks.register` / list / retrieve; `eval.evaluate_rows` with basic::equality and
basic::subset_of, its generations pinned to greedy `inference.chat_completion` replies to the
same dialogs (so the accuracies are known in advance); `eval.run_eval` as a background job,
polled with `eval.jobs.status`, whose `eval.jobs.retrieve` result equals evaluate_rows'
answer; `num_examples`; `eval.jobs.cancel`; and the 404s / 400s.

The server keeps datasets and benchmarks under its data directory across tests, so ids are
unique per run.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest
from llama_stack_client import APIStatusError, BadRequestError, NotFoundError

from conftest import content_text

SYSTEM = "Answer in a few words."
QUESTIONS = ["What is the capital of France?", "What is 2 + 2?", "What color is the sky?"]
MAX_TOKENS = 8


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def greedy(n: int) -> dict:
    return {"strategy": {"type": "greedy"}, "max_tokens": n}


def config(model: str, max_tokens: int = MAX_TOKENS, **extra) -> dict:
    return {
        "eval_candidate": {
            "type": "model",
            "model": model,
            "sampling_params": greedy(max_tokens),
            "system_message": {"role": "system", "content": SYSTEM},
        },
        "scoring_params": {},
        **extra,
    }


def wait_done(ls, bench: str, job_id: str, limit_s: float = 240.0) -> str:
    t = time.monotonic()
    while True:
        s = ls.eval.jobs.status(job_id, benchmark_id=bench).status
        if s != "in_progress":
            return s
        assert time.monotonic() - t < limit_s, "eval job still in_progress"
        time.sleep(0.1)


def test_benchmarks_evaluate_rows_and_jobs(ls, model):
    # The reference: SmolLM2's greedy replies to the dialogs the eval will send.
    replies = []
    for q in QUESTIONS:
        r = ls.inference.chat_completion(
            model_id=model,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
            sampling_params=greedy(MAX_TOKENS),
        )
        replies.append(content_text(r.completion_message.content))
    assert replies[0].strip(), replies
    # Row 0 expects exactly its reply (equality 1), row 1 a reply it cannot give (0), row 2
    # the empty string (subset_of 1; equality 0 as the reply is not empty). Row 2 goes
    # through chat_completion_input, a JSON string of messages.
    rows = [
        {"input_query": QUESTIONS[0], "expected_answer": replies[0]},
        {"input_query": QUESTIONS[1], "expected_answer": "\u0001never"},
        {
            "chat_completion_input": json.dumps([{"role": "user", "content": QUESTIONS[2]}]),
            "expected_answer": "",
        },
    ]
    assert replies[2] != ""
    ds = uid("eval-qa")
    ls.datasets.register(purpose="eval/question-answer", source={"type": "rows", "rows": rows}, dataset_id=ds)
    bench = uid("bench")
    fns = ["basic::equality", "basic::subset_of"]
    ls.benchmarks.register(benchmark_id=bench, dataset_id=ds, scoring_functions=fns, metadata={"k": "v"})
    b = ls.benchmarks.retrieve(bench)
    assert (b.identifier, b.dataset_id, b.scoring_functions, b.type) == (bench, ds, fns, "benchmark")
    assert b.metadata == {"k": "v"}
    assert bench in [x.identifier for x in ls.benchmarks.list()]

    res = ls.eval.evaluate_rows(bench, benchmark_config=config(model), input_rows=rows, scoring_functions=fns)
    assert res.generations == [{"generated_answer": r} for r in replies]
    eq = res.scores["basic::equality"]
    assert [r["score"] for r in eq.score_rows] == [1.0, 0.0, 0.0]
    assert eq.aggregated_results["accuracy"] == {"accuracy": 1 / 3, "num_correct": 1.0, "num_total": 3}
    sub = res.scores["basic::subset_of"]
    assert [r["score"] for r in sub.score_rows] == [1.0, 0.0, 1.0]
    assert sub.aggregated_results["accuracy"]["accuracy"] == 2 / 3

    job = ls.eval.run_eval(bench, benchmark_config=config(model))
    assert job.status == "in_progress" and job.job_id
    assert wait_done(ls, bench, job.job_id) == "completed"
    got = ls.eval.jobs.retrieve(job.job_id, benchmark_id=bench)
    assert got.model_dump() == res.model_dump()

    # num_examples: the first two rows.
    job2 = ls.eval.run_eval(bench, benchmark_config=config(model, num_examples=2))
    assert job2.job_id != job.job_id
    assert wait_done(ls, bench, job2.job_id) == "completed"
    got = ls.eval.jobs.retrieve(job2.job_id, benchmark_id=bench)
    assert got.generations == res.generations[:2]
    assert got.scores["basic::equality"].aggregated_results["accuracy"]["accuracy"] == 0.5

    # 404s: unknown benchmark, unknown job, a job asked for under another benchmark.
    with pytest.raises(NotFoundError):
        ls.benchmarks.retrieve(uid("nope"))
    with pytest.raises(NotFoundError):
        ls.eval.jobs.status("nope", benchmark_id=bench)
    with pytest.raises(NotFoundError):
        ls.eval.jobs.retrieve(job.job_id, benchmark_id=uid("other"))
    with pytest.raises(NotFoundError):
        ls.eval.evaluate_rows(uid("nope"), benchmark_config=config(model), input_rows=rows, scoring_functions=fns)


def test_cancel_and_bad_input(ls, model):
    rows = [{"input_query": f"Write a long story about the number {i}.", "expected_answer": ""} for i in range(24)]
    ds = uid("eval-long")
    ls.datasets.register(purpose="eval/question-answer", source={"type": "rows", "rows": rows}, dataset_id=ds)
    bench = uid("bench-long")
    ls.benchmarks.register(benchmark_id=bench, dataset_id=ds, scoring_functions=["basic::subset_of"])
    job = ls.eval.run_eval(bench, benchmark_config=config(model, max_tokens=400))
    time.sleep(0.5)
    ls.eval.jobs.cancel(job.job_id, benchmark_id=bench)
    assert ls.eval.jobs.status(job.job_id, benchmark_id=bench).status == "cancelled"
    with pytest.raises(APIStatusError) as e:
        ls.eval.jobs.retrieve(job.job_id, benchmark_id=bench)
    assert e.value.status_code == 409
    # The engine is free again at once: a short request is not stuck behind the job.
    t = time.monotonic()
    ls.inference.chat_completion(
        model_id=model, messages=[{"role": "user", "content": "Hi"}], sampling_params=greedy(2)
    )
    assert time.monotonic() - t < 20

    # Bad input: a row without an input column, a missing expected_answer, an unknown model,
    # an unknown scoring function, an agent candidate, an unknown dataset.
    fns = ["basic::equality"]
    with pytest.raises(BadRequestError, match=r"input_rows\[1\] has none of the columns"):
        ls.eval.evaluate_rows(
            bench,
            benchmark_config=config(model),
            input_rows=[{"input_query": "q", "expected_answer": "a"}, {"question": "q", "expected_answer": "a"}],
            scoring_functions=fns,
        )
    with pytest.raises(BadRequestError, match="missing column 'expected_answer'"):
        ls.eval.evaluate_rows(bench, benchmark_config=config(model), input_rows=[{"input_query": "q"}], scoring_functions=fns)
    with pytest.raises(NotFoundError, match="the model 'nope' does not exist"):
        ls.eval.evaluate_rows(
            bench, benchmark_config=config("nope"), input_rows=[{"input_query": "q", "expected_answer": "a"}], scoring_functions=fns
        )
    with pytest.raises(NotFoundError, match="scoring function 'basic::nope'"):
        ls.eval.evaluate_rows(
            bench, benchmark_config=config(model), input_rows=[{"input_query": "q", "expected_answer": "a"}], scoring_functions=["basic::nope"]
        )
    # An agent candidate answers each row as one agent turn; a plain completion row cannot
    # be asked of an agent.
    agent = {"type": "agent", "config": {"model": model, "instructions": "Answer in one word.",
             "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 8}}}
    out = ls.eval.evaluate_rows(
        bench,
        benchmark_config={"eval_candidate": agent, "scoring_params": {}},
        input_rows=[{"input_query": "Capital of France?", "expected_answer": "Paris"}],
        scoring_functions=fns,
    )
    assert len(out.generations) == 1 and isinstance(out.generations[0]["generated_answer"], str)
    with pytest.raises(BadRequestError, match="is a plain completion"):
        ls.eval.evaluate_rows(
            bench,
            benchmark_config={"eval_candidate": agent, "scoring_params": {}},
            input_rows=[{"completion_input": "q", "expected_answer": "a"}],
            scoring_functions=fns,
        )
    with pytest.raises(NotFoundError, match="the dataset 'nope-"):
        ls.benchmarks.register(benchmark_id=uid("b"), dataset_id=uid("nope"), scoring_functions=fns)
