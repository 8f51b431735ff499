"""2 CPU processes (torchrun, gloo) == 1 process with the same global batch: losses and final weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _run(out: Path, nproc: int, per_device: int, accum: int, port: int) -> dict:
    out.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(port),
           str(HERE / "ddp_worker.py"), str(out), str(per_device), str(accum)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((out / "losses.json").read_text())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(tmp_path):
    from safetensors.torch import load_file
    import torch

    from ddp_worker import main as worker

    (tmp_path / "one").mkdir()
    worker(str(tmp_path / "one"), 8, 1)  # the 1-process baseline runs in this process
    one = json.loads((tmp_path / "one" / "losses.json").read_text())
    two = _run(tmp_path / "two", 2, 2, 2, _free_port())  # 2 ranks × 2 per device × 2 accumulation = 8
    assert one["world"] == 1 and two["world"] == 2
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-6)
    w1 = load_file(tmp_path / "one" / "weights.safetensors")
    w2 = load_file(tmp_path / "two" / "weights.safetensors")
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-5, atol=1e-7, msg=name)
    assert len(one["losses"]) == 3 and one["losses"][0] != one["losses"][-1]


@pytest.mark.slow
def test_fsdp2_two_cpu_processes_equal_one_process(tmp_path):
    """The shipped FSDP2 config (on 2 CPU processes) through `accelerate launch -m plw.cli train`."""
    import yaml
    from safetensors.torch import load_file
    import torch

    from plw.train import load_config, train

    cfg = yaml.safe_load((HERE.parents[1] / "examples" / "accelerate" / "fsdp.yaml").read_text())
    cfg.update(num_processes=2, use_cpu=True, mixed_precision="no", main_process_port=_free_port())
    cfg["fsdp_config"]["fsdp_cpu_ram_efficient_loading"] = False
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump(cfg))
    sets = {"data": "builtin:short?n=48", "max_steps": 3, "tiny.hidden_size": 32, "tiny.vocab_size": 400,
            "global_batch_size": 8, "seed": 3}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "fsdp.yaml"),
           "-m", "plw.cli", "train", "--no-progress", "--output", str(tmp_path / "fsdp"),
           "--set", "per_device_batch_size=4", *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    # the same built-in preset and overrides, in this process, one process with the whole batch
    one = load_config(None, [f"{k}={v}" for k, v in sets.items()]
                      + ["per_device_batch_size=8", f"output_dir={tmp_path / 'one'}"])
    ref = train(one, progress=False).metrics
    got = json.loads((tmp_path / "fsdp" / "metrics.json").read_text())
    assert got["step_losses"] == pytest.approx(ref["step_losses"], rel=1e-6)
    assert got["val_completion_nll"] == pytest.approx(ref["val_completion_nll"], rel=1e-6)
    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "fsdp" / "model.safetensors")
    assert sorted(w1) == sorted(w2)
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-5, atol=1e-7, msg=name)
