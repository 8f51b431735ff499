"""The hot path is lean: at most one device→host read per micro-batch inside linear_cross_entropy and
none in the trainer's per-step normaliser; `nonzero_tokens` is WIT's (TRL PR #6747) normaliser."""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from plw.loss import linear_cross_entropy, normalizer_value

# Functions that read a tensor's values on the host (a device→host sync on an accelerator).
HOST_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__,
              torch.Tensor.__float__, torch.Tensor.__index__, torch.Tensor.nonzero, torch.nonzero,
              torch.Tensor.numpy, torch.masked_select, torch.Tensor.masked_select, torch.unique}


class CountHostReads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        boolean_index = (func is torch.Tensor.__getitem__ and len(args) > 1
                         and any(torch.is_tensor(i) and i.dtype == torch.bool
                                 for i in (args[1] if isinstance(args[1], tuple) else (args[1],))))
        if func in HOST_READS or boolean_index:
            self.reads.append(getattr(func, "__name__", str(func)))
        return func(*args, **kwargs)


def _batch(seed=0, B=3, T=12, V=50, d=16):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :3] = -100
    comp = torch.zeros(B, T, dtype=torch.bool)
    comp[:, T // 2:] = True
    weights = torch.where(comp, 1.0, 0.2)
    hidden = torch.randn(B, T, d, generator=g, requires_grad=True)
    head = torch.randn(V, d, generator=g, requires_grad=True)
    return hidden, head, labels, weights, comp


def test_one_host_read_per_call():
    hidden, head, labels, weights, comp = _batch()
    for track in (False, True):
        for strategy in ("token_chunks", "vocab_blocks"):
            with CountHostReads() as mode:
                out = linear_cross_entropy(hidden, head, labels, weights, completion_mask=comp, validate=False,
                                           track_masked_nll=track, strategy=strategy, normalizer=torch.tensor(7.0))
                out.loss.backward()
            assert mode.reads == ["tolist"], (track, strategy, mode.reads)
    with CountHostReads() as mode:  # validating costs reads: that is why it happens at data time
        linear_cross_entropy(hidden, head, labels, weights, completion_mask=comp)
    assert len(mode.reads) > 1
    with CountHostReads() as mode:
        normalizer_value(labels, weights, "weight_sum", comp, validate=False)
    assert mode.reads == []


def test_nonzero_tokens_is_the_wit_formula():
    """L = Σ(λp·ℓ_prompt + λr·ℓ_completion) / #{tokens of non-zero weight} (WIT; TRL PR #6747)."""
    hidden, head, labels, _, comp = _batch(seed=1)
    lam_p, lam_r = 0.2, 0.8
    weights = torch.where(comp, lam_r, lam_p)
    weights[1, :4] = 0.0  # some tokens of weight 0 do not count
    got = linear_cross_entropy(hidden, head, labels, weights, completion_mask=comp, normalizer="nonzero_tokens")
    # independent fp64 implementation of the PR's formula, on the shifted targets
    logits = (hidden.double() @ head.double().T)[:, :-1]
    y, c, w = labels[:, 1:], comp[:, 1:], weights[:, 1:].double()
    valid = y != -100
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y.clamp_min(0), reduction="none")
    lam = torch.where(c, lam_r, lam_p).double() * (w > 0)
    wit = (lam * nll * valid).sum() / ((lam > 0) & valid).sum()
    assert abs(float(got.loss) - float(wit)) < 1e-6 * float(wit)
