"""The reference weighted cross-entropy on materialised logits (plain autograd, fp32 accumulation).

Memory-hungry by design (it holds [tokens, vocab] logits and their log-softmax): use it to check the
fused engine, or when the model already returns logits. See `common.py` for the conventions.
"""

from __future__ import annotations

import torch

from .common import LossOutput, Normalizer, denominator, nll_stats, shift_targets


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, *,
                           completion_mask: torch.Tensor | None = None,
                           normalizer: Normalizer = "weight_sum", label_smoothing: float = 0.0,
                           softcap: float | None = None) -> LossOutput:
    """sum_i w_i * l_i / Z over the shifted targets of unshifted `logits` [B, T, V] (or [T, V]).

    Computed in fp32 (fp64 when the logits are fp64); `softcap` applies s * tanh(x / s) to the logits first.
    """
    check_options(label_smoothing, softcap)
    if logits.dim() == 2:
        logits = logits.unsqueeze(0)
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, T, V] or [T, V], got shape {tuple(logits.shape)}")
    tg = shift_targets(labels, weights, completion_mask)
    if logits.shape[:2] != (tg.batch, tg.length):
        raise ValueError(f"logits shape {tuple(logits.shape)} does not match labels [{tg.batch}, {tg.length}]")
    z = denominator(tg, normalizer)
    V = logits.shape[-1]
    if tg.valid.any() and int(tg.labels[tg.valid].max()) >= V:
        raise ValueError(f"labels must be < vocabulary size {V}, got {int(tg.labels[tg.valid].max())}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    x = logits[:, :-1].reshape(-1, V).to(dtype)
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    logp = torch.log_softmax(x, dim=-1)
    y = tg.labels.clamp_min(0)
    nll = -logp.gather(1, y[:, None]).squeeze(1)
    per_token = nll
    if label_smoothing:
        per_token = (1 - label_smoothing) * nll - label_smoothing * logp.mean(-1)
    w = tg.weights.to(dtype)
    loss = (w * torch.where(tg.valid, per_token, 0.0)).sum() / z.to(dtype)
    stats = nll_stats(nll[tg.valid], tg.completion[tg.valid])
    return LossOutput(loss, *stats, tg.weights.sum(dtype=torch.float64))


def check_options(label_smoothing: float, softcap: float | None) -> None:
    """Shared by every engine: label smoothing in [0, 1), softcap positive or None."""
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if softcap is not None and not float(softcap) > 0:
        raise ValueError(f"softcap must be > 0 or None, got {softcap}")
