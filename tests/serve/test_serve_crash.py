"""`kill -9` of the server in the middle of a job, then a restart: the job resumes and succeeds."""

from __future__ import annotations

import os
from collections import Counter

import openai
import pytest

from serve_helpers import Server, create_key, wait_for, write_chat_file

pytestmark = pytest.mark.slow


def train_processes(job_id: str) -> list[int]:
    """Live `plw train` processes of this job (by their command line)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if job_id in cmd and "train" in cmd:
                pids.append(int(entry))
    return pids


def test_kill9_mid_job_then_restart(tmp_path):
    data = tmp_path / "data"
    key = create_key(data, "acme")
    server = Server(data, "--lease-seconds", "3").start()
    try:
        c = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        f = c.files.create(file=open(write_chat_file(tmp_path / "t.jsonl", n=30), "rb"), purpose="fine-tune")
        other = c.files.create(file=open(write_chat_file(tmp_path / "u.jsonl", n=12, seed=1), "rb"),
                               purpose="fine-tune")
        files_before = sorted((x.id, x.bytes, x.filename) for x in c.files.list())
        job = c.fine_tuning.jobs.create(training_file=f.id, model="builtin:tiny",
                                        hyperparameters={"n_epochs": 12, "batch_size": 3, "prompt_loss_weight": 0.1})
        # 120 steps: still running on a fast machine when the first per-epoch checkpoint (step 10)
        # shows; then kill the server hard
        assert wait_for(lambda: any(k.step_number == 10 for k in c.fine_tuning.jobs.checkpoints.list(job.id)), 120)
        assert train_processes(job.id)
        server.kill9()
        # the training subprocess dies with its worker (no orphan keeps writing the job folder)
        assert wait_for(lambda: not train_processes(job.id), 10)
        server = Server(data, "--lease-seconds", "3").start()
        c = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        job = wait_for(lambda: (j := c.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j,
                       180)
        assert job and job.status == "succeeded", job
        assert sorted((x.id, x.bytes, x.filename) for x in c.files.list()) == files_before
        events = list(c.fine_tuning.jobs.list_events(job.id, limit=1000))
        assert any(e.message.startswith("Resuming the job") for e in events)
        steps = Counter(e.data["step"] for e in events if e.type == "metrics" and "train_loss" in e.data)
        assert sorted(steps) == list(range(1, 121)) and max(steps.values()) == 1  # every step once
        messages = Counter(e.message for e in events if e.type == "message")
        assert messages["The job has successfully completed"] == 1
        assert messages["Fine-tuning job started"] == 1
        ckpts = [k.step_number for k in c.fine_tuning.jobs.checkpoints.list(job.id, limit=100)]
        assert len(ckpts) == len(set(ckpts)) and 10 in ckpts and 120 in ckpts
        assert job.fine_tuned_model in [m.id for m in c.models.list()]
        assert other.id in [x.id for x in c.files.list()]
    finally:
        server.stop()
