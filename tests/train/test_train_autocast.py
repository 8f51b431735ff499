"""Mixed precision (fp32 parameters under bf16 autocast, what `plw train` does on a bf16 GPU).

The final hidden states are fp32 there (the residual stream), but the head matmuls must run in bf16
as HF's own head would under autocast; the head gradient must still be fp32, never rounded.
CPU autocast has the same dtype rules as CUDA's, so this is checked on CPU.
"""

from __future__ import annotations

import pytest
import torch

import plw.loss
from plw.train.forward import attach_plw_loss, detach_plw_loss
from plw.train.tiny import tiny_llama
from train_helpers import tiny_tokenizer


def test_autocast_runs_the_head_in_bf16_with_fp32_gradients(monkeypatch):
    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=0, hidden_size=32)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(4, len(tok), (2, 12), generator=g)
    weights = torch.ones(ids.shape)
    seen = {}
    real = plw.loss.linear_cross_entropy

    def spy(hidden, weight, *args, **kwargs):
        seen.update(hidden=hidden.dtype, weight=weight.dtype, matmul=kwargs.get("matmul_dtype"))
        return real(hidden, weight, *args, **kwargs)

    monkeypatch.setattr(plw.loss, "linear_cross_entropy", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hf = model(input_ids=ids, labels=ids).loss  # bf16 logits, as autocast computes them
        attach_plw_loss(model)
        try:
            ours = model(input_ids=ids, labels=ids, plw_weights=weights)["loss"]
        finally:
            detach_plw_loss(model)
    assert seen == {"hidden": torch.float32, "weight": torch.float32, "matmul": torch.bfloat16}
    assert float(ours.detach()) == pytest.approx(float(hf.detach()), rel=1e-2)
    ours.backward()
    head = model.get_output_embeddings().weight
    assert head.grad is not None and head.grad.dtype == torch.float32
    assert bool(torch.isfinite(head.grad).all())

    # Outside autocast nothing changes: fp32 matmuls.
    seen.clear()
    attach_plw_loss(model)
    try:
        model(input_ids=ids, labels=ids, plw_weights=weights)
    finally:
        detach_plw_loss(model)
    assert seen["matmul"] is None
