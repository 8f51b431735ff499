"""Two `plw serve` replicas on one database and one data dir (docs/serve.md, "Several replicas"):
each claims its own job, both answer for every job, and when one is killed the other finishes its
job. SQLite here; PostgreSQL when PLW_TEST_POSTGRES names a server (serve_helpers.db_args)."""

from __future__ import annotations

from collections import Counter

import openai
import pytest

from serve_helpers import Server, create_key, wait_for, write_chat_file

pytestmark = pytest.mark.slow


def _steps(client, job_id: str) -> Counter:
    events = client.fine_tuning.jobs.list_events(job_id, limit=1000)
    return Counter(e.data["step"] for e in events if e.type == "metrics" and "train_loss" in e.data)


def test_two_replicas_share_jobs_and_take_over_after_a_kill(tmp_path):
    data = tmp_path / "data"
    key = create_key(data, "acme")
    a = Server(data, "--workers", "1", "--lease-seconds", "3").start()
    b = Server(data, "--workers", "1", "--lease-seconds", "3").start()
    try:
        ca = openai.OpenAI(base_url=a.base_url, api_key=key, max_retries=0)
        cb = openai.OpenAI(base_url=b.base_url, api_key=key, max_retries=0)
        f = ca.files.create(file=open(write_chat_file(tmp_path / "t.jsonl", n=30), "rb"), purpose="fine-tune")
        hp = {"n_epochs": 12, "batch_size": 3, "prompt_loss_weight": 0.1}  # 120 steps each
        jobs = [ca.fine_tuning.jobs.create(training_file=f.id, model="builtin:tiny", hyperparameters=hp)
                for _ in range(2)]
        # one training slot per replica: both jobs running at once means each replica claimed one
        assert wait_for(lambda: all(cb.fine_tuning.jobs.retrieve(j.id).status == "running" for j in jobs), 120)
        assert sorted(j.id for j in cb.fine_tuning.jobs.list()) == sorted(j.id for j in jobs)
        assert wait_for(lambda: all(_steps(cb, j.id) for j in jobs), 120)
        a.kill9()
        for j in jobs:  # b finishes its own job, then takes over a's once its lease has run out
            done = wait_for(lambda: (x := cb.fine_tuning.jobs.retrieve(j.id)).status in
                            ("succeeded", "failed", "cancelled") and x, 300)
            assert done and done.status == "succeeded", done
            steps = _steps(cb, j.id)
            assert sorted(steps) == list(range(1, 121)) and max(steps.values()) == 1  # every step once
            started = [e for e in cb.fine_tuning.jobs.list_events(j.id, limit=1000)
                       if e.message == "Fine-tuning job started"]
            assert len(started) == 1
        resumed = [j for j in jobs if any(e.message.startswith("Resuming the job")
                                          for e in cb.fine_tuning.jobs.list_events(j.id, limit=1000))]
        assert len(resumed) == 1  # the killed replica's job, and only it
        assert {m.id for m in cb.models.list()} >= {cb.fine_tuning.jobs.retrieve(j.id).fine_tuned_model
                                                  for j in jobs}
    finally:
        for server in (a, b):
            server.stop()
