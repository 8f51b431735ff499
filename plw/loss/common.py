"""Shared pieces of the loss engine: the output tuple, the target shift and the normalisers.

Conventions (both loss functions):
- inputs are *unshifted* and token-aligned: position t's logits / hidden state predict labels[t+1],
  which carries weight weights[t+1] and completion flag completion_mask[t+1];
- a target is *valid* when its label is not -100; invalid targets weigh nothing whatever their weight;
- per-token loss  l_i = (1 - eps) * nll_i + eps * mean_v(-log p_v)   (eps = label smoothing);
- loss = sum_i w_i * l_i / Z, where Z is the normaliser (see `denominator`).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Union

import torch

IGNORE_INDEX = -100
NORMALIZERS = ("weight_sum", "nonzero_tokens", "completion_tokens")
Normalizer = Union[str, float, int, torch.Tensor]


class LossOutput(NamedTuple):
    """What both loss functions return.

    loss            scalar, differentiable: sum_i w_i * l_i / Z (fp32, or fp64 for fp64 inputs).
    prompt_nll      detached fp32 mean of the *unweighted, unsmoothed* NLL over the prompt targets that
                    were computed (n_prompt of them); NaN exactly when n_prompt == 0.
    completion_nll  the same over completion targets; NaN exactly when n_completion == 0.
    n_prompt        int64 0-d tensor: prompt targets inside prompt_nll. The fused engine drops rows of
                    weight 0 before any matmul, so at PLW = 0 this is 0 unless track_masked_nll=True.
    n_completion    int64 0-d tensor: completion targets inside completion_nll.
    weight_sum      fp64 0-d tensor: sum of the weights of all valid targets (the "weight_sum" normaliser).
    """

    loss: torch.Tensor
    prompt_nll: torch.Tensor
    completion_nll: torch.Tensor
    n_prompt: torch.Tensor
    n_completion: torch.Tensor
    weight_sum: torch.Tensor

    # Sums aggregate across micro-batches without NaN handling: 0 when the count is 0.
    @property
    def prompt_nll_sum(self) -> torch.Tensor:
        return torch.nan_to_num(self.prompt_nll.double() * self.n_prompt, nan=0.0)

    @property
    def completion_nll_sum(self) -> torch.Tensor:
        return torch.nan_to_num(self.completion_nll.double() * self.n_completion, nan=0.0)


class Targets(NamedTuple):
    """Shifted, flattened targets of a [B, T] batch: M = B * (T - 1) entries."""

    labels: torch.Tensor      # int64 [M], -100 where invalid
    weights: torch.Tensor     # float [M], 0 where invalid
    valid: torch.Tensor       # bool [M]
    completion: torch.Tensor  # bool [M], False where invalid
    source_row: torch.Tensor  # int64 [M]: row of the flattened [B*T] inputs that predicts this target
    batch: int
    length: int


def as_batch(labels: torch.Tensor, name: str = "labels") -> torch.Tensor:
    if labels.dim() == 1:
        return labels.unsqueeze(0)
    if labels.dim() != 2:
        raise ValueError(f"{name} must be [B, T] or [T], got shape {tuple(labels.shape)}")
    return labels


def shift_targets(labels: torch.Tensor, weights: torch.Tensor,
                  completion_mask: torch.Tensor | None = None, *, validate: bool = True) -> Targets:
    """Validate and shift: entry (b, t) of the result is the target predicted from position (b, t).

    Shapes and dtypes are always checked (free). The value checks (finite, non-negative weights,
    labels >= 0) read the tensors on the host: on an accelerator each is a device→host sync, so the
    trainer does them once at data time (`check_values` in the collators) and passes validate=False.
    """
    labels = as_batch(labels)
    weights = as_batch(weights, "weights")
    if weights.shape != labels.shape:
        raise ValueError(f"weights shape {tuple(weights.shape)} != labels shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if not weights.dtype.is_floating_point:
        raise ValueError(f"weights must be a floating-point tensor, got {weights.dtype}")
    if completion_mask is not None:
        completion_mask = as_batch(completion_mask, "completion_mask")
        if completion_mask.shape != labels.shape:
            raise ValueError(f"completion_mask shape {tuple(completion_mask.shape)} != labels shape "
                             f"{tuple(labels.shape)}")
    B, T = labels.shape
    y = labels[:, 1:].reshape(-1).long()
    w = weights[:, 1:].reshape(-1)
    valid = y != IGNORE_INDEX
    if validate:
        check_values(y, w)
    w = torch.where(valid, w, torch.zeros((), dtype=w.dtype, device=w.device))
    if completion_mask is None:
        completion = w >= 1  # documented default: weight >= 1 marks a completion token
    else:
        completion = completion_mask[:, 1:].reshape(-1).bool()
    completion = completion & valid
    # target j = (b, t) with t < T-1 is predicted by flat input row b*T + t = j + b.
    j = torch.arange(B * (T - 1), device=y.device)
    source_row = j + torch.div(j, max(T - 1, 1), rounding_mode="floor")
    return Targets(y, w, valid, completion, source_row, B, T)


def check_values(labels: torch.Tensor, weights: torch.Tensor, vocab_size: int | None = None) -> None:
    """Raise ValueError unless weights are finite and >= 0 and labels are -100 or in [0, vocab_size).

    Reads the values on the host: call it where the tensors are still on the CPU (a collator), or
    accept the device→host syncs.
    """
    if weights.numel() and not bool(torch.isfinite(weights).all()):
        raise ValueError("weights contain NaN or infinity")
    if weights.numel() and bool((weights < 0).any()):
        raise ValueError(f"weights must be >= 0, got min {float(weights.min()):g}")
    valid = labels != IGNORE_INDEX
    if not bool(valid.any()):
        return
    if bool((labels[valid] < 0).any()):
        raise ValueError(f"labels must be >= 0 or {IGNORE_INDEX}, got {int(labels[valid].min())}")
    if vocab_size is not None and int(labels[valid].max()) >= vocab_size:
        raise ValueError(f"labels must be < vocabulary size {vocab_size}, got {int(labels[valid].max())}")


def _count_or_sum(tg: Targets, normalizer: str) -> torch.Tensor:
    if normalizer == "weight_sum":
        return tg.weights.sum(dtype=torch.float64)
    if normalizer == "nonzero_tokens":
        return (tg.weights > 0).sum().to(torch.float64)
    if normalizer == "completion_tokens":
        return tg.completion.sum().to(torch.float64)
    raise ValueError(f"normalizer must be one of {NORMALIZERS} or a positive number, got {normalizer!r}")


def normalizer_value(labels: torch.Tensor, weights: torch.Tensor, normalizer: Normalizer = "weight_sum",
                     completion_mask: torch.Tensor | None = None, *, validate: bool = True) -> torch.Tensor:
    """The denominator one micro-batch contributes (fp64 0-d tensor; may be 0 for one micro-batch).

    Sum it over the micro-batches of an optimizer step (and all-reduce over data-parallel ranks), then
    pass the total as `normalizer=` to every micro-batch: the summed losses and gradients then equal one
    big batch. A number passes through unchanged. validate=False: no device→host sync (see shift_targets).
    """
    if isinstance(normalizer, str):
        return _count_or_sum(shift_targets(labels, weights, completion_mask, validate=validate), normalizer)
    return _explicit(normalizer, labels.device)


def _explicit(normalizer: Normalizer, device) -> torch.Tensor:
    if isinstance(normalizer, bool):
        raise ValueError(f"normalizer must be a string or a positive number, got {normalizer!r}")
    z = torch.as_tensor(normalizer, dtype=torch.float64, device=device).detach()
    if z.numel() != 1:
        raise ValueError(f"an explicit normalizer must be one number, got shape {tuple(z.shape)}")
    return z.reshape(())


def denominator(tg: Targets, normalizer: Normalizer, *, check: bool = True) -> torch.Tensor:
    """Z (fp64 0-d tensor), checked to be finite and > 0 (unless check=False: the caller checks it).

    weight_sum         Z = sum_i w_i                   (PLW 0 = Alpaca masking, PLW 1 = unmasked; continuous)
    nonzero_tokens     Z = #{i : w_i > 0}              (TRL's weighted-instruction-tuning proposal)
    completion_tokens  Z = #{i : completion_i}         (completion gradient scale independent of PLW)
    number / tensor    Z = that number                 (shared over micro-batches and ranks)
    """
    if isinstance(normalizer, str):
        z = _count_or_sum(tg, normalizer)
    else:
        z = _explicit(normalizer, tg.labels.device)
    if check:
        check_denominator(float(z), normalizer)
    return z


def check_denominator(z: float, normalizer: Normalizer) -> None:
    """Raise ValueError unless the loss denominator `z` (read on the host) is finite and > 0."""
    if not math.isfinite(z) or z <= 0:
        what = f"normalizer={normalizer!r}" if isinstance(normalizer, str) else "the explicit normalizer"
        hint = (" (every target has label -100 or weight 0)" if isinstance(normalizer, str) else "")
        raise ValueError(f"loss denominator is {z:g} under {what}{hint}; it must be finite and > 0")


def nll_stats(nll: torch.Tensor, completion: torch.Tensor):
    """(prompt_nll, completion_nll, n_prompt, n_completion) from per-target NLL and completion flags."""
    nll = nll.detach().double()
    completion = completion.bool()
    n_c = completion.sum()
    n_p = completion.numel() - n_c
    s_c = torch.where(completion, nll, 0.0).sum()
    s_p = torch.where(completion, 0.0, nll).sum()
    # 0/0 = NaN is the documented "no such targets" value.
    return ((s_p / n_p).float(), (s_c / n_c).float(), n_p.to(torch.int64).reshape(()),
            n_c.to(torch.int64).reshape(()))
