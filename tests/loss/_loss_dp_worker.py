"""Worker for test_loss_dp.py: one gloo rank computes its shard's loss with the global normaliser."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def run(rank: int, world: int, port: int, out_dir: str, inputs: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from plw.loss import linear_cross_entropy, normalizer_value

        shard = slice(rank * inputs["labels"].shape[0] // world, (rank + 1) * inputs["labels"].shape[0] // world)
        labels, weights, comp = (inputs[k][shard] for k in ("labels", "weights", "completion"))
        results = {}
        for normalizer in ("weight_sum", "nonzero_tokens", "completion_tokens"):
            # The trainer's recipe: local denominator, all-reduced (sum) once per optimizer step.
            z = normalizer_value(labels, weights, normalizer, comp).clone()
            dist.all_reduce(z)
            h = inputs["hidden"][shard].clone().requires_grad_()
            w = inputs["weight"].clone().requires_grad_()
            loss = linear_cross_entropy(h, w, labels, weights, completion_mask=comp, normalizer=z,
                                        chunk_size=5).loss
            loss.backward()
            total = loss.detach().clone()
            dist.all_reduce(total)
            dist.all_reduce(w.grad)  # what DDP does (sum; DDP then divides by world: see docs/loss.md)
            results[normalizer] = {"loss": total, "hidden_grad": h.grad, "weight_grad": w.grad}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
