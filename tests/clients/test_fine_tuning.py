"""Fine-tuning through the real clients: OpenAI's `fine_tuning.jobs` (create from an uploaded
file, retrieve, list, events, checkpoints, cancel) and Llama Stack's `post_training`
(supervised-fine-tune, preference-optimize, job status / artifacts / list / cancel), on the
tiny model (FERROLLAMA_MODEL2: its vocabulary is not Llama 3's and it has no chat template,
so the data is `{"text": ...}` records, continued pretraining, and raw-text preference
pairs for DPO).
"""
from __future__ import annotations

import io
import json
import time
import uuid

import openai
import pytest


def text_jsonl(n: int, salt: int = 0) -> bytes:
    lines = [
        json.dumps({"text": f"Record {i + salt}: the cat sat on the mat {(i * 7 + salt) % 13} times."})
        for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


def pref_jsonl(n: int) -> bytes:
    lines = [
        json.dumps({"prompt": f"Record {i}: the cat", "chosen": " sat on the mat.",
                    "rejected": " ran off the roof."})
        for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


def upload(oa, data: bytes, name: str = "train.jsonl") -> str:
    return oa.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune").id


def wait_final(get, done=("succeeded", "failed", "cancelled"), timeout_s: float = 180.0):
    deadline = time.monotonic() + timeout_s
    while True:
        job = get()
        if job.status in done:
            return job
        assert time.monotonic() < deadline, f"job still {job.status} after {timeout_s} s"
        time.sleep(0.2)


def test_openai_job_trains_reports_and_lists(oa, model2):
    train = upload(oa, text_jsonl(8))
    valid = upload(oa, text_jsonl(2, salt=100), "valid.jsonl")
    job = oa.fine_tuning.jobs.create(
        model=model2,
        training_file=train,
        validation_file=valid,
        suffix="t1",
        seed=7,
        hyperparameters={"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 5.0},
        extra_body={"hyperparameters": {"n_epochs": 2, "batch_size": 2,
                                        "learning_rate_multiplier": 5.0, "seq_len": 16,
                                        "lora_rank": 4, "lora_dropout": 0.1,
                                        "checkpoint_every": 2}},
    )
    assert job.id.startswith("ftjob-"), job.id
    assert job.object == "fine_tuning.job"
    assert job.status in ("validating_files", "queued", "running"), job.status
    assert job.training_file == train and job.validation_file == valid
    assert job.fine_tuned_model is None

    done = wait_final(lambda: oa.fine_tuning.jobs.retrieve(job.id))
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:{model2}:t1:{job.id[-8:]}"
    assert done.trained_tokens and done.trained_tokens > 0
    assert done.finished_at and done.finished_at >= done.created_at
    assert done.seed == 7

    events = oa.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert events, "no events"
    # Newest first: the completion message, then metrics of the last step.
    assert "completed" in events[0].message, events[0].message
    started = [e for e in events if "total_steps" in (e.data or {}) and e.type == "message"]
    assert len(started) == 1, [e.message for e in events]
    total = started[0].data["total_steps"]
    # Text packed into 16-token windows, 2 epochs at 2 windows a step: one metrics event a
    # step, numbered 1..total.
    metrics = [e for e in events if e.type == "metrics" and "train_loss" in (e.data or {})]
    assert sorted(m.data["step"] for m in metrics) == list(range(1, total + 1))
    assert all(m.data["train_loss"] > 0 for m in metrics)
    assert any("valid_loss" in (e.data or {}) for e in events)

    cks = oa.fine_tuning.jobs.checkpoints.list(job.id).data
    steps = sorted(c.step_number for c in cks)
    assert steps == sorted(set(range(2, total + 1, 2)) | {total}), steps
    assert all(c.fine_tuning_job_id == job.id for c in cks)

    listed = [j.id for j in oa.fine_tuning.jobs.list(limit=100).data]
    assert job.id in listed

    # The result is served at once under its name: listed, and answering requests.
    assert done.fine_tuned_model in [m.id for m in oa.models.list().data]
    r = oa.completions.create(model=done.fine_tuned_model, prompt="Record 3: the cat", max_tokens=4,
                              temperature=0)
    assert r.model == done.fine_tuned_model
    assert r.usage.completion_tokens >= 1

    # A finished job cannot be cancelled.
    with pytest.raises(openai.BadRequestError):
        oa.fine_tuning.jobs.cancel(job.id)


def test_openai_bad_jobs_are_refused_or_fail_with_the_line(oa, model2):
    with pytest.raises(openai.NotFoundError):
        oa.fine_tuning.jobs.create(model="no-such-model", training_file=upload(oa, text_jsonl(2)))
    with pytest.raises(openai.BadRequestError) as e:
        oa.fine_tuning.jobs.create(model=model2, training_file="file-000000000000000000000000")
    assert "no file" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        oa.fine_tuning.jobs.create(
            model=model2, training_file=upload(oa, text_jsonl(2)),
            hyperparameters={"n_epochs": 0},
        )
    with pytest.raises(openai.BadRequestError):
        oa.fine_tuning.jobs.create(
            model=model2, training_file=upload(oa, text_jsonl(2)),
            method={"type": "reinforcement"},
        )
    with pytest.raises(openai.BadRequestError) as e:
        oa.fine_tuning.jobs.create(
            model=model2, training_file=upload(oa, text_jsonl(2)),
            extra_body={"hyperparameters": {"lora_dropout": 1.0}},
        )
    assert "lora_dropout" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        oa.fine_tuning.jobs.retrieve("ftjob-nope")

    bad = upload(oa, b'{"text": "fine"}\n{"text": oops}\n')
    job = oa.fine_tuning.jobs.create(model=model2, training_file=bad)
    done = wait_final(lambda: oa.fine_tuning.jobs.retrieve(job.id))
    assert done.status == "failed"
    assert "line 2" in done.error.message, done.error.message


def test_openai_cancel_stops_a_job(oa, model2):
    train = upload(oa, text_jsonl(8))
    job = oa.fine_tuning.jobs.create(
        model=model2, training_file=train,
        extra_body={"hyperparameters": {"n_epochs": 500, "batch_size": 1, "seq_len": 16}},
    )
    oa.fine_tuning.jobs.cancel(job.id)
    done = wait_final(lambda: oa.fine_tuning.jobs.retrieve(job.id))
    assert done.status == "cancelled"
    assert done.fine_tuned_model is None


def test_llama_stack_supervised_fine_tune(ls, oa, model2):
    dataset = upload(oa, text_jsonl(6))
    job_uuid = f"ls-{uuid.uuid4().hex[:12]}"
    r = ls.post_training.supervised_fine_tune(
        job_uuid=job_uuid,
        model=model2,
        hyperparam_search_config={},
        logger_config={},
        checkpoint_dir="",
        algorithm_config={
            "type": "LoRA", "rank": 4, "alpha": 8, "lora_attn_modules": ["q_proj", "v_proj"],
            "apply_lora_to_mlp": True, "apply_lora_to_output": False,
        },
        training_config={
            "n_epochs": 1, "max_steps_per_epoch": 2, "gradient_accumulation_steps": 1,
            "data_config": {"dataset_id": dataset, "batch_size": 2, "shuffle": True,
                            "data_format": "instruct", "max_seq_len": 16},
            "optimizer_config": {"optimizer_type": "adamw", "lr": 1e-3, "weight_decay": 0.0,
                                 "num_warmup_steps": 0},
        },
    )
    assert r.job_uuid == job_uuid
    status = wait_final(lambda: ls.post_training.job.status(job_uuid=job_uuid),
                        done=("completed", "failed", "cancelled"))
    assert status.status == "completed", status
    assert status.completed_at is not None
    arts = ls.post_training.job.artifacts(job_uuid=job_uuid)
    assert arts.job_uuid == job_uuid
    assert [c["training_metrics"]["train_loss"] > 0 for c in arts.checkpoints] == [True]
    assert job_uuid in [j.job_uuid for j in ls.post_training.job.list()]
    # The same job under OpenAI's API.
    assert oa.fine_tuning.jobs.retrieve(job_uuid).status == "succeeded"

    # Unknown algorithm: refused before anything runs.
    with pytest.raises(Exception) as e:
        ls.post_training.supervised_fine_tune(
            job_uuid=f"ls-{uuid.uuid4().hex[:12]}", model=model2, hyperparam_search_config={},
            logger_config={}, algorithm_config={"type": "QAT", "quantizer_name": "x", "group_size": 32},
            training_config={"n_epochs": 1, "max_steps_per_epoch": 1, "gradient_accumulation_steps": 1,
                             "data_config": {"dataset_id": dataset, "batch_size": 1, "shuffle": True,
                                             "data_format": "instruct"}},
        )
    assert "400" in str(e.value) or "QAT" in str(e.value)


def test_openai_dpo_job_trains_an_adapter_that_prefers_the_chosen_reply(oa, model2):
    train = upload(oa, pref_jsonl(6))
    job = oa.fine_tuning.jobs.create(
        model=model2, training_file=train, suffix="dpo", seed=3,
        method={"type": "dpo", "dpo": {"hyperparameters": {
            "beta": 0.2, "n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 10.0,
            "seq_len": 32, "lora_rank": 4}}},
    )
    assert job.method.type == "dpo", job.method
    assert job.method.dpo.hyperparameters.beta == 0.2
    done = wait_final(lambda: oa.fine_tuning.jobs.retrieve(job.id))
    assert done.status == "succeeded", done.error
    events = oa.fine_tuning.jobs.list_events(job.id, limit=100).data
    losses = [e.data["train_loss"] for e in sorted(
        (e for e in events if e.type == "metrics" and "train_loss" in (e.data or {})),
        key=lambda e: e.data["step"])]
    # DPO's loss starts at log 2 (the adapter starts as the reference) and falls.
    assert abs(losses[0] - 0.6931) < 1e-3, losses
    assert losses[-1] < losses[0], losses
    assert done.fine_tuned_model in [m.id for m in oa.models.list().data]

    with pytest.raises(openai.BadRequestError) as e:
        oa.fine_tuning.jobs.create(model=model2, training_file=train,
                                   method={"type": "dpo", "dpo": {"hyperparameters": {"beta": -1}}})
    assert "beta" in str(e.value)


def test_llama_stack_preference_optimize(ls, oa, model2):
    dataset = upload(oa, pref_jsonl(4))
    job_uuid = f"ls-dpo-{uuid.uuid4().hex[:12]}"
    training_config = {
        "n_epochs": 1, "max_steps_per_epoch": 2, "gradient_accumulation_steps": 1,
        "data_config": {"dataset_id": dataset, "batch_size": 2, "shuffle": True,
                        "data_format": "instruct", "max_seq_len": 32},
        "optimizer_config": {"optimizer_type": "adamw", "lr": 1e-3, "weight_decay": 0.0,
                             "num_warmup_steps": 0},
    }
    r = ls.post_training.preference_optimize(
        job_uuid=job_uuid, finetuned_model=model2, hyperparam_search_config={}, logger_config={},
        algorithm_config={"reward_scale": 0.1, "reward_clip": 0.0, "epsilon": 0.0, "gamma": 0.0},
        training_config=training_config,
    )
    assert r.job_uuid == job_uuid
    status = wait_final(lambda: ls.post_training.job.status(job_uuid=job_uuid),
                        done=("completed", "failed", "cancelled"))
    assert status.status == "completed", status
    arts = ls.post_training.job.artifacts(job_uuid=job_uuid)
    assert len(arts.checkpoints) == 1
    job = oa.fine_tuning.jobs.retrieve(job_uuid)
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.1

    # A variant this trainer does not run is refused, not silently replaced by plain DPO.
    with pytest.raises(Exception) as e:
        ls.post_training.preference_optimize(
            job_uuid=f"ls-dpo-{uuid.uuid4().hex[:12]}", finetuned_model=model2,
            hyperparam_search_config={}, logger_config={},
            algorithm_config={"reward_scale": 0.1, "reward_clip": 0.0, "epsilon": 0.0, "gamma": 0.5},
            training_config=training_config,
        )
    assert "gamma" in str(e.value)
