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
