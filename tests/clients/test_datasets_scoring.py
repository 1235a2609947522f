"""Llama Stack datasets and scoring through the real `llama_stack_client` (0.2.12):
`datasets.register` (rows, a data: URL of CSV) / list / retrieve / iterrows (paging) /
unregister, append-rows (a raw POST: the 0.2.12 client has no method for it), the refusal
of a huggingface:// source on this offline server; `scoring_functions.list` / `register`;
`scoring.score` with the basic built-ins and exact accuracies, `score_batch` over a
registered dataset, a missing column (400), and `llm-as-judge::base` with the chat model
as the judge.

The server keeps datasets under its data directory across tests, so ids are unique per run.
"""
from __future__ import annotations

import base64
import uuid

import httpx
import pytest
from llama_stack_client import BadRequestError, NotFoundError

ROWS = [
    {"input_query": "Capital of France? A) Rome B) Paris", "expected_answer": "B", "generated_answer": "Answer: B"},
    {"input_query": "2 + 2? A) 4 B) 5", "expected_answer": "A", "generated_answer": "The best answer is B"},
    {"input_query": "Color of the sky? A) blue B) red", "expected_answer": "A", "generated_answer": "A"},
    {"input_query": "Largest planet? A) Jupiter B) Mars", "expected_answer": "A", "generated_answer": "answer: a, Jupiter"},
]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_datasets_register_list_page_append_unregister(ls, base_url, api_key):
    rows_id = uid("qa-rows")
    d = ls.datasets.register(
        purpose="eval/question-answer",
        source={"type": "rows", "rows": ROWS},
        dataset_id=rows_id,
        metadata={"description": "four questions"},
    )
    assert d.identifier == rows_id
    assert d.type == "dataset" and d.provider_id == "localfs"
    assert d.purpose == "eval/question-answer"
    assert d.metadata == {"description": "four questions"}

    csv = "question,answer\nWhat is 1+1?,2\n\"Say \"\"hi\"\", then stop\",\"hi, then stop\"\n"
    uri = "data:text/csv;base64," + base64.b64encode(csv.encode()).decode()
    c = ls.datasets.register(purpose="eval/question-answer", source={"type": "uri", "uri": uri})
    assert c.identifier.startswith("dataset-")
    assert c.source.type == "uri" and c.source.uri == uri
    got = ls.datasets.iterrows(c.identifier)
    assert got.data == [
        {"question": "What is 1+1?", "answer": "2"},
        {"question": 'Say "hi", then stop', "answer": "hi, then stop"},
    ]
    assert got.has_more is False

    ids = [x.identifier for x in ls.datasets.list()]
    assert rows_id in ids and c.identifier in ids
    assert ls.datasets.retrieve(rows_id).metadata == {"description": "four questions"}

    page = ls.datasets.iterrows(rows_id, start_index=1, limit=2)
    assert page.data == ROWS[1:3] and page.has_more is True
    page = ls.datasets.iterrows(rows_id, start_index=2, limit=-1)
    assert page.data == ROWS[2:] and page.has_more is False

    # append-rows: the 0.2.12 client has no method for it; a raw request with its auth.
    r = httpx.post(
        f"{base_url}/v1/datasetio/append-rows/{rows_id}",
        json={"rows": [{"expected_answer": "x", "generated_answer": "x"}]},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    page = ls.datasets.iterrows(rows_id, start_index=4)
    assert page.data == [{"expected_answer": "x", "generated_answer": "x"}]

    ls.datasets.unregister(rows_id)
    ls.datasets.unregister(c.identifier)
    with pytest.raises(NotFoundError):
        ls.datasets.retrieve(rows_id)
    assert rows_id not in [x.identifier for x in ls.datasets.list()]


def test_huggingface_source_is_refused_offline(ls):
    with pytest.raises(BadRequestError) as e:
        ls.datasets.register(
            purpose="eval/question-answer",
            source={"type": "uri", "uri": "huggingface://llamastack/simpleqa?split=train"},
        )
    assert "offline" in str(e.value)


def test_malformed_csv_row_is_refused_with_its_line(ls):
    uri = "data:text/csv;base64," + base64.b64encode(b"a,b\n1,2\n3\n").decode()
    with pytest.raises(BadRequestError) as e:
        ls.datasets.register(purpose="eval/question-answer", source={"type": "uri", "uri": uri})
    assert "line 3" in str(e.value)


def test_scoring_functions_list_has_the_builtins(ls):
    providers = {(p.api, p.provider_id) for p in ls.providers.list()}
    assert {("datasetio", "localfs"), ("scoring", "basic"), ("scoring", "llm-as-judge")} <= providers
    ids = {f.identifier: f for f in ls.scoring_functions.list()}
    for want in ("basic::equality", "basic::subset_of", "basic::regex_parser_multiple_choice_answer",
                 "basic::regex_parser_math_response", "llm-as-judge::base"):
        assert want in ids, sorted(ids)
    mc = ids["basic::regex_parser_multiple_choice_answer"]
    assert mc.params.type == "regex_parser" and len(mc.params.parsing_regexes) == 42
    assert mc.return_type.type == "number"
    assert ls.scoring_functions.retrieve("basic::equality").provider_id == "basic"


def test_score_basic_builtins_exact_accuracy(ls):
    res = ls.scoring.score(
        input_rows=ROWS,
        scoring_functions={
            "basic::equality": None,
            "basic::subset_of": None,
            "basic::regex_parser_multiple_choice_answer": None,
        },
    ).results
    eq = res["basic::equality"]
    assert [r["score"] for r in eq.score_rows] == [0.0, 0.0, 1.0, 0.0]
    assert eq.aggregated_results["accuracy"] == {"accuracy": 0.25, "num_correct": 1.0, "num_total": 4}
    sub = res["basic::subset_of"]
    assert [r["score"] for r in sub.score_rows] == [1.0, 0.0, 1.0, 0.0]
    assert sub.aggregated_results["accuracy"]["accuracy"] == 0.5
    # "answer: a" parses to "a" (case kept, as llama-stack), which is not "A".
    mc = res["basic::regex_parser_multiple_choice_answer"]
    assert [r["score"] for r in mc.score_rows] == [1.0, 0.0, 0.0, 0.0]
    assert mc.aggregated_results["accuracy"] == {"accuracy": 0.25, "num_correct": 1.0, "num_total": 4}

    # Call-time params: other aggregations.
    res = ls.scoring.score(
        input_rows=ROWS,
        scoring_functions={"basic::subset_of": {"type": "basic", "aggregation_functions": ["average", "median", "categorical_count"]}},
    ).results["basic::subset_of"]
    assert res.aggregated_results == {
        "average": {"average": 0.5},
        "median": {"median": 0.5},
        "categorical_count": {"categorical_count": {"0.0": 2, "1.0": 2}},
    }


def test_registered_regex_function_and_unknown_id(ls):
    fn_id = uid("my::verdict")
    ls.scoring_functions.register(
        scoring_fn_id=fn_id,
        description="VERDICT: <letter>",
        return_type={"type": "number"},
        params={"type": "regex_parser", "parsing_regexes": [r"VERDICT:\s*(\w)"], "aggregation_functions": ["accuracy"]},
    )
    assert ls.scoring_functions.retrieve(fn_id).params.parsing_regexes == [r"VERDICT:\s*(\w)"]
    res = ls.scoring.score(
        input_rows=[{"expected_answer": "y", "generated_answer": "VERDICT: y"},
                    {"expected_answer": "y", "generated_answer": "VERDICT: n"}],
        scoring_functions={fn_id: None},
    ).results[fn_id]
    assert res.aggregated_results["accuracy"]["accuracy"] == 0.5
    with pytest.raises(NotFoundError):
        ls.scoring.score(input_rows=ROWS, scoring_functions={"basic::no-such": None})


def test_missing_column_is_400_naming_row_and_column(ls):
    with pytest.raises(BadRequestError) as e:
        ls.scoring.score(
            input_rows=[{"expected_answer": "a", "generated_answer": "a"}, {"generated_answer": "a"}],
            scoring_functions={"basic::equality": None},
        )
    msg = str(e.value)
    assert "row 1" in msg and "expected_answer" in msg, msg


def test_score_batch_over_a_registered_dataset(ls):
    ds = uid("qa-batch")
    ls.datasets.register(purpose="eval/question-answer", source={"type": "rows", "rows": ROWS}, dataset_id=ds)
    out = ls.scoring.score_batch(
        dataset_id=ds,
        scoring_functions={"basic::equality": None},
        save_results_dataset=True,
    )
    assert out.results["basic::equality"].aggregated_results["accuracy"]["num_correct"] == 1.0
    assert out.dataset_id and out.dataset_id != ds
    saved = ls.datasets.iterrows(out.dataset_id).data
    assert [r["basic::equality"]["score"] for r in saved] == [0.0, 0.0, 1.0, 0.0]
    assert saved[0]["input_query"] == ROWS[0]["input_query"]
    plain = ls.scoring.score_batch(dataset_id=ds, scoring_functions={"basic::subset_of": None}, save_results_dataset=False)
    assert plain.dataset_id is None
    ls.datasets.unregister(out.dataset_id)
    ls.datasets.unregister(ds)


def test_llm_as_judge_with_the_chat_model(ls, model):
    rows = ROWS[:2]
    template = (
        "Question: {input_query}\nExpected: {expected_answer}\nGiven: {generated_answer}\n"
        "Rate the given answer from 0 to 9. Reply with 'Score: <digit>' only."
    )
    params = {
        "type": "llm_as_judge",
        "judge_model": model,
        "prompt_template": template,
        # Any character the model says first counts: the tiny model's reply is free text.
        "judge_score_regexes": [r"(?s)^\s*(.)"],
        "aggregation_functions": ["categorical_count"],
    }
    res = ls.scoring.score(input_rows=rows, scoring_functions={"llm-as-judge::base": params}).results["llm-as-judge::base"]
    assert len(res.score_rows) == 2
    for r in res.score_rows:
        assert isinstance(r["judge_feedback"], str)
        # The first character of a non-empty reply (an empty reply leaves it null).
        if r["judge_feedback"]:
            assert isinstance(r["score"], str) and len(r["score"]) == 1, r
        else:
            assert r["score"] is None, r
    counts = res.aggregated_results["categorical_count"]["categorical_count"]
    assert sum(counts.values()) == 2

    # A regex that never matches: each row keeps the judge's reply and a null score, as
    # llama-stack does; the count says "None".
    params["judge_score_regexes"] = [r"NEVER-PRESENT-(\d)"]
    res = ls.scoring.score(input_rows=rows, scoring_functions={"llm-as-judge::base": params}).results["llm-as-judge::base"]
    assert [r["score"] for r in res.score_rows] == [None, None]
    assert all(isinstance(r["judge_feedback"], str) for r in res.score_rows)
    assert res.aggregated_results == {"categorical_count": {"categorical_count": {"None": 2}}}

    # Its input columns are checked before the judge runs.
    with pytest.raises(BadRequestError) as e:
        ls.scoring.score(input_rows=[{"expected_answer": "a", "generated_answer": "a"}],
                         scoring_functions={"llm-as-judge::base": params})
    assert "input_query" in str(e.value)
