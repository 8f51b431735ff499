"""The official `openai` client against a live `plw serve`: the fine-tuning guide's calls, PLW, auth."""

from __future__ import annotations

import subprocess
import sys

import openai
import pytest

from serve_helpers import REPO, env, wait_for, write_chat_file

pytestmark = pytest.mark.slow


def client(live, key=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.base_url, api_key=key or live.key, max_retries=0, timeout=30)


def run_docs_snippet(live, tmp_path) -> subprocess.Popen:
    """docs/serve.md's copy of OpenAI's guide snippets, as written (base_url and key from the env)."""
    doc = (REPO / "docs" / "serve.md").read_text()
    snippet = doc.split("<!-- guide-snippet -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    work = tmp_path / "snippet"
    work.mkdir()
    write_chat_file(work / "mydata.jsonl", seed=3)
    return subprocess.Popen([sys.executable, "-c", snippet], cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**env(), "OPENAI_BASE_URL": live.base_url, "OPENAI_API_KEY": live.key})


def test_guide_flow_with_prompt_loss_weight(live, tmp_path):
    """The guide's calls with prompt_loss_weight; docs/serve.md's snippet runs unchanged beside it
    (the server has two workers, so both jobs train at once)."""
    snippet = run_docs_snippet(live, tmp_path)
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
    assert job.id in [j.id for j in c.fine_tuning.jobs.list(limit=10)]
    out, err = snippet.communicate(timeout=240)
    assert snippet.returncode == 0, err
    assert out.startswith("succeeded ft:builtin-tiny:acme::"), out
    assert "The job has successfully completed" in out


def test_auth_and_isolation(live, tmp_path):
    with pytest.raises(openai.AuthenticationError):
        client(live, "plw-not-a-key").files.list()
    import httpx

    r = httpx.get(f"{live.base_url}/fine_tuning/jobs")
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    mine, theirs = client(live), client(live, live.other_key)
    f = mine.files.create(file=open(write_chat_file(tmp_path / "a.jsonl"), "rb"), purpose="fine-tune")
    job = mine.fine_tuning.jobs.create(training_file=f.id, model="builtin:tiny")
    for call in (lambda: theirs.files.retrieve(f.id), lambda: theirs.files.content(f.id),
                 lambda: theirs.files.delete(f.id), lambda: theirs.fine_tuning.jobs.retrieve(job.id),
                 lambda: theirs.fine_tuning.jobs.cancel(job.id),
                 lambda: theirs.fine_tuning.jobs.list_events(job.id),
                 lambda: theirs.fine_tuning.jobs.create(training_file=f.id, model="builtin:tiny")):
        with pytest.raises(openai.NotFoundError):
            call()
    assert f.id not in [x.id for x in theirs.files.list()]
    assert job.id not in [x.id for x in theirs.fine_tuning.jobs.list()]
    assert mine.fine_tuning.jobs.cancel(job.id).status == "cancelled"


def test_bad_file_fails_at_validation_naming_line_and_field(live, tmp_path):
    c = client(live)
    path = write_chat_file(tmp_path / "bad.jsonl", n=12)
    lines = path.read_text().splitlines()
    lines[6] = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}'
    path.write_text("\n".join(lines) + "\n")
    f = c.files.create(file=open(path, "rb"), purpose="fine-tune")
    job = c.fine_tuning.jobs.create(training_file=f.id, model="builtin:tiny")
    job = wait_for(lambda: (j := c.fine_tuning.jobs.retrieve(job.id)).status != "validating_files" and j, 30)
    assert job.status == "failed"
    assert job.error.message == f"{f.id}: line 7: messages[1].content: missing"
    assert job.error.param == "training_file" and job.error.code == "invalid_training_file"
    assert not (live.data_dir / "jobs" / job.id / "run").exists()  # nothing trained


def test_auto_plw_cancel_and_legacy(live, tmp_path):
    """"auto" measures R_g and records plw's recommendation; cancel stops the run within seconds."""
    import json
    import time

    import httpx

    c = client(live)
    f = c.files.create(file=open(write_chat_file(tmp_path / "t.jsonl", n=40), "rb"), purpose="fine-tune")
    job = c.fine_tuning.jobs.create(training_file=f.id, model="builtin:tiny",
                                    hyperparameters={"n_epochs": 50, "batch_size": 2},
                                    extra_body={"prompt_loss_weight": "auto"})
    metrics = live.data_dir / "jobs" / job.id / "run" / "metrics.jsonl"
    assert wait_for(lambda: metrics.is_file() and metrics.read_text().count("step_loss") >= 2, 90)
    job = c.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "running"
    events = list(c.fine_tuning.jobs.list_events(job.id, limit=100))
    auto = [e for e in events if e.message.startswith("prompt_loss_weight auto")]
    assert len(auto) == 1 and auto[0].data["source"] == "paper" and auto[0].data["ratio"] < 1
    assert job.hyperparameters.prompt_loss_weight == auto[0].data["prompt_loss_weight"] > 0
    t0 = time.time()
    assert c.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    # the run stops: metrics.jsonl stops growing within seconds
    def stopped():
        before = metrics.read_text()
        time.sleep(1.5)
        return metrics.read_text() == before
    assert wait_for(stopped, 15, every=0)
    assert time.time() - t0 < 15
    assert c.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        c.fine_tuning.jobs.cancel(job.id)
    # the retired API, with its top-level prompt_loss_weight
    r = httpx.post(f"{live.base_url}/fine-tunes", headers={"Authorization": f"Bearer {live.key}"},
                   json={"training_file": f.id, "model": "builtin:tiny", "prompt_loss_weight": 0.3, "n_epochs": 1})
    assert r.status_code == 200, r.text
    legacy = r.json()
    assert legacy["object"] == "fine_tuning.job" and legacy["hyperparameters"]["prompt_loss_weight"] == 0.3
    c.fine_tuning.jobs.cancel(legacy["id"])
    saved = json.dumps(c.fine_tuning.jobs.retrieve(legacy["id"]).hyperparameters.model_dump())
    assert '"prompt_loss_weight": 0.3' in saved

