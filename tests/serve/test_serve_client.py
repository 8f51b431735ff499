"""The official `openai` client against a live `plw serve`: the fine-tuning guide's calls, PLW, auth."""

from __future__ import annotations

import openai
import pytest

from serve_helpers import wait_for, write_chat_file

pytestmark = pytest.mark.slow


def client(live, key=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.base_url, api_key=key or live.key, max_retries=0, timeout=30)


def test_guide_flow_with_prompt_loss_weight(live, tmp_path):
    c = client(live)
    path = write_chat_file(tmp_path / "train.jsonl")
    # OpenAI's fine-tuning guide, with base_url, a plw key and prompt_loss_weight added
    training = c.files.create(file=open(path, "rb"), purpose="fine-tune")
    job = c.fine_tuning.jobs.create(training_file=training.id, model="builtin:tiny",
                                    validation_file=training.id,
                                    method={"type": "supervised", "supervised": {"hyperparameters": {
                                        "n_epochs": 2, "batch_size": 8, "prompt_loss_weight": 0.05}}})
    assert job.id.startswith("ftjob-") and job.status == "validating_files"
    job = wait_for(lambda: (j := c.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j,
                   timeout=120)
    assert job and job.status == "succeeded", job
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 8
    assert job.hyperparameters.prompt_loss_weight == 0.05
    assert job.fine_tuned_model.startswith("ft:builtin-tiny:acme::")
    events = list(c.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=100))
    metrics = [e for e in events if e.type == "metrics" and "train_loss" in e.data]
    assert len(metrics) == 6 and {e.data["step"] for e in metrics} == set(range(1, 7))
    assert all("prompt_nll" in e.data and "completion_nll" in e.data for e in metrics)
    assert any(e.type == "metrics" and "valid_loss" in e.data for e in events)
    assert any("prompt_loss_weight: 0.05" in e.message for e in events)
    assert len({e.id for e in events}) == len(events)
    ckpts = list(c.fine_tuning.jobs.checkpoints.list(fine_tuning_job_id=job.id))
    assert [k.step_number for k in ckpts] == [6, 3]
    assert ckpts[0].metrics.train_loss is not None and ckpts[0].metrics.valid_loss is not None
    assert ckpts[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-6"
    assert job.fine_tuned_model in [m.id for m in c.models.list()]
    assert c.models.retrieve(job.fine_tuned_model).owned_by == "acme"
    assert [j.id for j in c.fine_tuning.jobs.list(limit=10)][0] == job.id
