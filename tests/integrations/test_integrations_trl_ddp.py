"""2 gloo processes: PLWSFTTrainer at PLW 0 == TRL's completion-only SFTTrainer, and at PLW 0.3 == one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, plw: str) -> None:
    out.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(HERE / "trl_ddp_worker.py"), str(out), "2", "2", plw]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.slow
def test_two_processes(tmp_path):
    import torch
    from safetensors.torch import load_file

    from trl_ddp_worker import main as worker

    worker(str(tmp_path / "one"), 8, 1, "0.3")  # 1 process, the same global batch of 8
    _launch(tmp_path / "two", "0.3,0,trl")  # 2 processes × 2 per device × 2 accumulation steps

    def read(*parts):
        got = json.loads(tmp_path.joinpath(*parts, "losses.json").read_text())
        return got, load_file(tmp_path.joinpath(*parts, "weights.safetensors"))

    (one, w_one), (two, w_two) = read("one", "0.3"), read("two", "0.3")
    (plw0, w_plw0), (trl, w_trl) = read("two", "0"), read("two", "trl")
    assert two["world"] == 2 and one["world"] == 1
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-6)
    assert plw0["losses"] == pytest.approx(trl["losses"], rel=1e-5)
    for tag, wa, wb in (("1 vs 2 processes", w_one, w_two), ("TRL vs PLW 0", w_trl, w_plw0)):
        for name in wa:
            torch.testing.assert_close(wb[name], wa[name], rtol=1e-5, atol=1e-7, msg=f"{tag}: {name}")
