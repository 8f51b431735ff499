"""FSDP2 (the shipped examples/accelerate/fsdp.yaml) on 2 CPU processes == 1 process with the same global batch.

accelerate enables FSDP on GPUs only (on CPU an FSDP config would train with DDP, which plw refuses), so
the launched worker (`fsdp_worker.py`) promotes accelerate's CPU state to FSDP the way accelerate does for
GPUs; parameters are then real FSDP2 shards (DTensors) on gloo. One launch runs three `plw train`s: the
built-in tiny Llama (untied head: FSDP groups the final norm with `lm_head`), a tied-embeddings model,
and LoRA (the head is its own FSDP unit, gathered only through its own forward call).
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

COMMON = {"data": "builtin:short?n=48", "max_steps": 3, "global_batch_size": 8, "seed": 3,
          "tiny.hidden_size": 32, "tiny.vocab_size": 400, "eval_steps": 2}
RUNS = {
    "full": {},
    "tied": {"learning_rate": 1e-3},  # + model: a local tied-embeddings Llama (built in the test)
    "lora": {"lora.enabled": True, "lora.dropout": 0.0},  # no dropout: ranks draw different masks
}


def _fsdp_on_cpu_unavailable() -> str | None:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        return "torch.distributed with gloo is not available"
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401  FSDP2
        from accelerate.state import AcceleratorState
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model  # noqa: F401
    except ImportError as err:
        return f"FSDP2 not available: {err}"
    if "fsdp_plugin" not in inspect.signature(AcceleratorState.__init__).parameters:
        return "accelerate's AcceleratorState takes no fsdp_plugin (the CPU emulation hooks it)"
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sets(run: str, tied_model: Path) -> list[str]:
    values = {**COMMON, **RUNS[run], **({"model": str(tied_model)} if run == "tied" else {})}
    return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()]


def _tied_model(path: Path) -> Path:
    from train_helpers import tiny_tokenizer

    from plw.train.tiny import tiny_llama

    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=0, hidden_size=32, tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.slow
def test_fsdp2_two_cpu_processes_equal_one_process(tmp_path):
    reason = _fsdp_on_cpu_unavailable()
    if reason:
        pytest.skip(reason)
    import torch
    import yaml
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from plw.train import load_config, train
    from train_helpers import assert_like_one_process

    tied = _tied_model(tmp_path / "tied-init")
    cfg = yaml.safe_load((REPO / "examples" / "accelerate" / "fsdp.yaml").read_text())
    assert cfg["distributed_type"] == "FSDP" and cfg["fsdp_config"]["fsdp_version"] == 2
    cfg.update(num_processes=2, mixed_precision="no", main_process_port=_free_port())
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump(cfg))
    args: list[str] = []
    for run in RUNS:
        args += ["--next"] if args else []
        args += ["--no-progress", "--output", str(tmp_path / "fsdp" / run), "--set", "per_device_batch_size=4"]
        args += [a for s in _sets(run, tied) for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "fsdp.yaml"),
           str(HERE / "fsdp_worker.py"), *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("saved to") == len(RUNS)  # the main process reports, once per run

    for run in RUNS:
        one = train(load_config(None, _sets(run, tied) + ["per_device_batch_size=8",
                                                          f"output_dir={tmp_path / 'one' / run}"]), progress=False)
        out = tmp_path / "fsdp" / run
        rows = assert_like_one_process(out, tmp_path / "one" / run, one.metrics, run, lora=run == "lora")
        assert all("prompt_nll" in r and "completion_nll" in r for r in rows if "loss" in r), run
        # really FSDP: the Trainer wrote an FSDP checkpoint; the output itself is one plain safetensors file
        assert any("fsdp" in p.name for p in (out / "checkpoint-3").iterdir()), run
        assert not [p.name for p in out.iterdir() if "fsdp" in p.name or p.name.endswith(".index.json")], run
    # the saved models load as they were trained (tied stays tied)
    full = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "full")
    torch.testing.assert_close(full.lm_head.weight, load_file(tmp_path / "one" / "full" / "model.safetensors")["lm_head.weight"])
    tied_out = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "tied")
    assert tied_out.lm_head.weight is tied_out.model.embed_tokens.weight


def test_fsdp_config_that_accelerate_would_run_as_ddp_is_refused(monkeypatch):
    """On CPU accelerate keeps an FSDP config's processes MULTI_CPU (DDP): plw says so instead."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from plw.errors import PLWError
    from plw.train import TrainConfig
    from plw.train.run import check_sharding

    def trainer(kind, fsdp=False):
        return SimpleNamespace(is_fsdp_enabled=fsdp, is_deepspeed_enabled=False, accelerator=SimpleNamespace(
            distributed_type=kind, state=SimpleNamespace(deepspeed_plugin=None)))

    config = TrainConfig()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(PLWError, match="accelerate config: FSDP asked for.*MULTI_CPU.*ddp_cpu.yaml"):
        check_sharding(trainer(DistributedType.MULTI_CPU), config)
    check_sharding(trainer(DistributedType.FSDP, fsdp=True), config)
    penalty = TrainConfig.model_validate({"regularizers": {"minkowski_coef": 0.1}})
    with pytest.raises(PLWError, match="regularizers.minkowski_coef: .*FSDP shards"):
        check_sharding(trainer(DistributedType.FSDP, fsdp=True), penalty)
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    check_sharding(trainer(DistributedType.MULTI_CPU), penalty)  # DDP: the penalty is fine


def test_drop_tied_copies():
    import torch

    from plw.train.run import drop_tied_copies

    from types import SimpleNamespace

    model = SimpleNamespace(all_tied_weights_keys={"lm_head.weight": "model.embed_tokens.weight"})
    emb = torch.randn(5, 3)
    state = {"model.embed_tokens.weight": emb, "lm_head.weight": emb.clone(), "x": torch.ones(2)}
    assert sorted(drop_tied_copies(state, model)) == ["model.embed_tokens.weight", "x"]
    state["lm_head.weight"] = emb + 1  # equal-named but different values: keep it
    assert drop_tied_copies(state, model) is state
    assert drop_tied_copies(state, object()) is state
