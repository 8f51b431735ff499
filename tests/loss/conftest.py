"""An independent fp64 reference for the loss tests, written from the formulas, row by row."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch


def reference_loss(logits, labels, weights, *, completion_mask=None, normalizer="weight_sum",
                   label_smoothing=0.0, softcap=None):
    """Σ_i w_i l_i / Z in fp64 with Python loops over the shifted targets; returns (loss, stats dict)."""
    logits = logits.double()
    if logits.dim() == 2:
        logits, labels, weights = logits[None], labels[None], weights[None]
        completion_mask = None if completion_mask is None else completion_mask[None]
    B, T, V = logits.shape
    num = logits.new_zeros(())
    wsum, nonzero, ncomp = 0.0, 0, 0
    nll_p, nll_c = [], []
    for b in range(B):
        for t in range(T - 1):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            w = float(weights[b, t + 1])
            comp = bool(completion_mask[b, t + 1]) if completion_mask is not None else w >= 1
            x = logits[b, t]
            if softcap is not None:
                x = softcap * torch.tanh(x / softcap)
            lse = torch.logsumexp(x, 0)
            nll = lse - x[y]
            smooth = (lse - x).mean()
            num = num + w * ((1 - label_smoothing) * nll + label_smoothing * smooth)
            wsum += w
            nonzero += w > 0
            ncomp += comp
            (nll_c if comp else nll_p).append(float(nll.detach()))
    z = {"weight_sum": wsum, "nonzero_tokens": nonzero, "completion_tokens": ncomp}.get(normalizer, normalizer)
    stats = {"prompt_nll": sum(nll_p) / len(nll_p) if nll_p else float("nan"),
             "completion_nll": sum(nll_c) / len(nll_c) if nll_c else float("nan"),
             "n_prompt": len(nll_p), "n_completion": len(nll_c), "weight_sum": wsum}
    return num / float(z), stats


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative error of a against b (b != 0)."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def make_batch(B=3, T=17, d=16, V=37, plw=0.1, seed=0, dtype=torch.float64, prompt_len=6):
    """Random hidden / head, labels with -100 padding at the end of row 1, prompt prefix of weight plw."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, d, generator=g, dtype=torch.float64).to(dtype)
    weight = (torch.randn(V, d, generator=g, dtype=torch.float64) / d ** 0.5 * 3).to(dtype)
    labels = torch.randint(0, V, (B, T), generator=g)
    completion = torch.ones(B, T, dtype=torch.bool)
    completion[:, :prompt_len] = False
    if B > 1:
        labels[1, T - 4:] = -100  # padding
    weights = torch.where(completion, 1.0, float(plw)).double() if plw != "random" else \
        torch.rand(B, T, generator=g, dtype=torch.float64)
    return hidden, weight, labels, weights, completion


@pytest.fixture(scope="session")
def lt():
    """Loss-test helpers: lt.ref (fp64 loop reference), lt.rel (relative error), lt.batch (inputs)."""
    return SimpleNamespace(ref=reference_loss, rel=rel_err, batch=make_batch)
