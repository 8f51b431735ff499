"""Data parallel: 2 gloo processes with an all-reduced normaliser equal one process on the whole batch."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

from plw.loss import linear_cross_entropy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process(lt, tmp_path):
    hidden, weight, labels, weights, comp = lt.batch(B=4, T=19, d=12, V=41, plw=0.1, seed=21)
    weights[3, :12] = 0.0  # ranks see different denominators
    inputs = {"hidden": hidden.float(), "weight": weight.float(), "labels": labels, "weights": weights,
              "completion": comp}
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)  # spawn passes sys.path on, so the children can import the worker
    import _loss_dp_worker

    mp.spawn(_loss_dp_worker.run, args=(2, _free_port(), str(tmp_path), inputs), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for normalizer in ("weight_sum", "nonzero_tokens", "completion_tokens"):
        h = inputs["hidden"].clone().requires_grad_()
        w = inputs["weight"].clone().requires_grad_()
        loss = linear_cross_entropy(h, w, labels, weights, completion_mask=comp, normalizer=normalizer).loss
        loss.backward()
        r0, r1 = ranks[0][normalizer], ranks[1][normalizer]
        assert abs(float(r0["loss"]) - float(loss.detach())) <= 1e-6 * float(loss.detach())
        assert float(r0["loss"]) == float(r1["loss"])
        assert lt.rel(r0["weight_grad"], w.grad) <= 1e-6 and torch.equal(r0["weight_grad"], r1["weight_grad"])
        assert lt.rel(torch.cat([r0["hidden_grad"], r1["hidden_grad"]]), h.grad) <= 1e-6
