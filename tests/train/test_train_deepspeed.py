"""DeepSpeed ZeRO and plw's initial-weight snapshot.

`plw train` builds TrainingArguments before loading, so under a ZeRO-3 accelerate config
`from_pretrained` runs inside DeepSpeed's `zero.Init`: parameters come out as empty placeholders
(shape [0], data sharded in `ds_tensor`). `plw.train.diagnostics.snapshot` gathers them (a
collective every process joins) for the end-of-run weight distances.

The first tests need no DeepSpeed (CI has none): a plain model's snapshot is what it always was, and
the gathering path runs against a stand-in `deepspeed` module. The last one launches the shipped
`examples/accelerate/deepspeed_zero{3,2}.yaml` on 2 CPU processes (DeepSpeed's CPU accelerator, gloo)
with a model loaded from a directory, and compares with one process; it runs only where deepspeed is
importable (`pip install deepspeed`; `DS_BUILD_OPS=0` is enough, see docs/training.md "Scale-out").
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _model():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    model[1].weight.requires_grad_(False)
    return model


def test_snapshot_of_a_plain_model_is_unchanged(monkeypatch):
    import torch

    from plw.train.diagnostics import snapshot

    monkeypatch.setitem(sys.modules, "deepspeed", None)  # plain parameters must not import deepspeed
    model = _model()
    snap = snapshot(model)
    assert list(snap) == ["0.weight", "0.bias", "1.bias"]  # trainable only, in named_parameters order
    for name, p in model.named_parameters():
        if name in snap:
            assert snap[name].dtype == torch.float32 and snap[name].device.type == "cpu"
            assert torch.equal(snap[name], p.detach()) and snap[name].data_ptr() != p.data_ptr()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(snap["0.weight"], model[0].weight)  # a copy, not a view
    assert list(snapshot(model, trainable_only=False)) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert snapshot(model, keep=False) == {}
    half = _model().to(torch.bfloat16)
    assert all(t.dtype == torch.float32 for t in snapshot(half).values())


def _fake_deepspeed(calls: list):
    """A stand-in `deepspeed` whose GatheredParameters fills a ZeRO-3 placeholder for its block."""
    import torch

    @contextlib.contextmanager
    def GatheredParameters(params, modifier_rank=None):
        calls.append(([p.ds_id for p in params], modifier_rank))
        for p in params:
            p.data = p.ds_full.clone()
        try:
            yield
        finally:
            for p in params:
                p.data = torch.empty(0, dtype=p.dtype)

    return types.SimpleNamespace(zero=types.SimpleNamespace(GatheredParameters=GatheredParameters))


def _partition(model) -> dict:
    """Turn `model`'s parameters into ZeRO-3-like placeholders; return their full values by name."""
    import torch

    full = {}
    for i, (name, p) in enumerate(model.named_parameters()):
        full[name] = p.detach().clone()
        p.ds_id, p.ds_numel, p.ds_shape, p.ds_full = i, p.numel(), p.shape, full[name]
        p.data = torch.empty(0, dtype=p.dtype)
    return full


def test_snapshot_gathers_zero3_partitioned_parameters(monkeypatch):
    import torch

    from plw.train.diagnostics import snapshot, weight_distances

    calls: list = []
    monkeypatch.setitem(sys.modules, "deepspeed", _fake_deepspeed(calls))
    model = _model()
    full = _partition(model)
    snap = snapshot(model)
    assert list(snap) == ["0.weight", "0.bias", "1.bias"]
    for name, t in snap.items():
        assert torch.equal(t, full[name])  # whole tensors, not the [0] placeholders
    assert calls == [([0], None), ([1], None), ([3], None)]  # one tensor at a time, every rank reads
    assert all(p.numel() == 0 for p in model.parameters())  # released again after the copy
    assert weight_distances(snap, full)["weight_l2"] == 0.0
    # A process that keeps no copy still takes part in every gather (a collective), in the same order.
    calls.clear()
    assert snapshot(model, keep=False) == {}
    assert calls == [([0], None), ([1], None), ([3], None)]


# ---------------------------------------------------------------------------------------------
# The real thing: 2 CPU processes under DeepSpeed == 1 process with the same global batch.

COMMON = {"data": "builtin:short?n=48", "max_steps": 3, "global_batch_size": 8, "seed": 3, "eval_steps": 2}
RUNS = {  # + model: a local directory (built in the test), so that ZeRO-3 loads it inside zero.Init
    "full": {},
    "tied": {"learning_rate": 1e-3},  # tied embeddings (model dir "tied")
    "lora": {"lora.enabled": True, "lora.dropout": 0.0},  # no dropout: ranks draw different masks
}
LAUNCHES = {"zero3": ["full", "tied", "lora"], "zero2": ["full"]}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _save_model(path: Path, *, tied: bool) -> Path:
    from train_helpers import tiny_tokenizer

    from plw.train.tiny import tiny_llama

    tok = tiny_tokenizer()
    tiny_llama(tok, seed=0, hidden_size=32, tie_word_embeddings=tied).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _sets(run: str, models: dict) -> list[str]:
    values = {**COMMON, **RUNS[run], "model": str(models["tied" if run == "tied" else "untied"])}
    return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()]


@pytest.mark.slow
def test_deepspeed_zero3_and_zero2_two_cpu_processes_equal_one_process(tmp_path):
    pytest.importorskip("deepspeed")
    import torch.distributed as dist
    import yaml

    from plw.train import load_config, train
    from plw.train.callbacks import read_metrics
    from train_helpers import assert_like_one_process

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    models = {"untied": _save_model(tmp_path / "init", tied=False),
              "tied": _save_model(tmp_path / "tied-init", tied=True)}
    # CPU only, in the launched processes: DeepSpeed's CPU accelerator and gloo.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "",
           "DS_ACCELERATOR": "cpu"}
    loaded: dict[str, list] = {}
    for launch, runs in LAUNCHES.items():
        cfg = yaml.safe_load((REPO / "examples" / "accelerate" / f"deepspeed_{launch}.yaml").read_text())
        assert cfg["distributed_type"] == "DEEPSPEED" and cfg["deepspeed_config"]["zero_stage"] == int(launch[-1])
        cfg.update(num_processes=2, mixed_precision="no", main_process_port=_free_port())
        (tmp_path / f"{launch}.yaml").write_text(yaml.safe_dump(cfg))
        args: list[str] = []
        for run in runs:
            args += ["--next"] if args else []
            args += ["--no-progress", "--output", str(tmp_path / launch / run), "--set", "per_device_batch_size=4"]
            args += [a for s in _sets(run, models) for a in ("--set", s)]
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / f"{launch}.yaml"),
               str(HERE / "deepspeed_worker.py"), *args]
        report = tmp_path / f"{launch}-loaded"
        res = subprocess.run(cmd, env={**env, "PLW_LOAD_REPORT": str(report)}, capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        assert res.stdout.count("saved to") == len(runs)  # the main process reports, once per run
        loaded[launch] = [json.loads(line) for rank in (0, 1)
                          for line in Path(f"{report}.{rank}").read_text().splitlines()]

    # Loading: ZeRO-3 partitions every parameter inside from_pretrained (zero.Init); ZeRO-2 does not.
    assert len(loaded["zero3"]) == 2 * len(LAUNCHES["zero3"]) and len(loaded["zero2"]) == 2
    for row in loaded["zero3"]:
        assert row["partitioned"] == row["params"] and row["numel_held"] == 0 and row["numel_full"] > 0, row
    for row in loaded["zero2"]:
        assert row["partitioned"] == 0 and row["numel_held"] == row["numel_full"], row

    refs = {}
    for run in RUNS:
        refs[run] = train(load_config(None, _sets(run, models) + ["per_device_batch_size=8",
                                                                  f"output_dir={tmp_path / 'one' / run}"]),
                          progress=False).metrics
    for launch, runs in LAUNCHES.items():
        for run in runs:
            ref, out, tag = refs[run], tmp_path / launch / run, f"{launch}/{run}"
            rows = assert_like_one_process(out, tmp_path / "one" / run, ref, tag, lora=run == "lora")
            ref_rows = read_metrics(tmp_path / "one" / run / "metrics.jsonl")
            for r, r1 in zip(rows, ref_rows):
                assert sorted(r) == sorted(r1), tag
                for key in ("loss", "step_loss", "grad_norm", "prompt_nll", "completion_nll", "eval_completion_nll"):
                    if key in r1:
                        assert r[key] == pytest.approx(r1[key], rel=1e-5), (tag, r["step"], key)
            # really DeepSpeed ZeRO: per-rank partitions in the checkpoint; the output is what one process writes
            assert (out / "checkpoint-3" / "global_step3" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").exists(), tag
            assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "one" / run).iterdir()), tag
