"""Mechanism diagnostics of paper §5.3: training-loss stability and weight distance.

- `loss_rsd`: relative standard deviation (std / mean) of the training loss in consecutive,
  non-overlapping windows of 5 optimizer steps, averaged over windows (the paper's "mean RSD";
  it does not say whether windows overlap or which std; we use non-overlapping windows and the
  population std, and drop a last partial window).
- `weight_distances`: distance of trained from initial weights, L2 and Minkowski-p, overall and
  per tensor group (embeddings, attention, mlp, norm, lm_head, lora, other).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterable, Mapping


def loss_rsd(losses: Iterable[float], window: int = 5) -> float:
    """Mean over full `window`-step windows of std/mean of the step losses; nan if no full window."""
    xs = [float(x) for x in losses]
    rsds = []
    for start in range(0, len(xs) - window + 1, window):
        w = xs[start:start + window]
        mean = sum(w) / window
        std = math.sqrt(sum((x - mean) ** 2 for x in w) / window)
        rsds.append(std / mean if mean != 0 else float("nan"))
    return sum(rsds) / len(rsds) if rsds else float("nan")


def mean_train_loss(step_losses: list[float]) -> float:
    """`train_loss` everywhere (metrics.json, metrics.jsonl's end-of-run line, the CLI): the mean of
    the per-step training losses (the PLW-weighted objective) over all optimizer steps of the run,
    the steps before a resume included."""
    return float(sum(step_losses) / len(step_losses)) if step_losses else float("nan")


def tensor_group(name: str) -> str:
    """Coarse group of a parameter by its name (Llama-style names and common aliases)."""
    n = name.lower()
    if "lora_" in n:
        return "lora"
    if "embed" in n or "wte" in n or "wpe" in n:
        return "embeddings"
    if "lm_head" in n or "output_layer" in n:
        return "lm_head"
    if "norm" in n or ".ln_" in n:
        return "norm"
    if "attn" in n or "attention" in n:
        return "attention"
    if "mlp" in n or "feed_forward" in n or "ffn" in n:
        return "mlp"
    return "other"


def snapshot(model, *, trainable_only: bool = True, keep: bool = True) -> dict:
    """fp32 CPU copies of the (trainable) parameters, by name: the reference for distances.

    Under DeepSpeed ZeRO-3 a model loaded inside `zero.Init` holds empty placeholders (shape [0],
    the data in `ds_tensor` shards): copying those gave an empty snapshot that no final weight
    matched. Such parameters are gathered here one at a time (peak memory: one whole tensor). The
    gather is a collective, so under ZeRO-3 every process must call this; `keep=False` takes part
    in the gathers without keeping the copies (and returns {}).
    """
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad or not trainable_only]
    out = {}
    for name, p in params:
        with _gathered(p):
            if keep:
                out[name] = p.detach().float().cpu().clone()
    return out


def _gathered(p):
    """Context in which `p` is whole: DeepSpeed ZeRO-3 gathers a partitioned parameter (`ds_id`)."""
    if not hasattr(p, "ds_id"):
        return contextlib.nullcontext()
    import deepspeed  # only here: a partitioned parameter means DeepSpeed is installed and running

    return deepspeed.zero.GatheredParameters([p], modifier_rank=None)


def weight_distances(initial: Mapping[str, "object"], current: Mapping[str, "object"], *,
                     p: float = 1.0) -> dict[str, float]:
    """L2 and Minkowski-p distance of `current` from `initial` (tensors by name), overall and per group.

    `current` may have extra names (e.g. frozen weights); only names in `initial` are compared.
    Keys: `weight_l2`, `weight_minkowski`, `weight_l2/<group>`, `weight_minkowski/<group>`, and
    `weight_minkowski_mean` (mean over tensors of each tensor's distance: the §6.1 penalty form).
    """
    import torch

    sq: dict[str, float] = {}
    pw: dict[str, float] = {}
    per_tensor = []
    for name, ref in initial.items():
        cur = current.get(name)
        if cur is None:
            cur = current.get(_strip(name))
        if cur is None:
            continue
        d = cur.detach().to(torch.float64).cpu() - ref.to(torch.float64)
        g = tensor_group(name)
        sq[g] = sq.get(g, 0.0) + float(d.pow(2).sum())
        pw[g] = pw.get(g, 0.0) + float(d.abs().pow(p).sum())
        per_tensor.append(float(d.abs().pow(p).sum()) ** (1.0 / p))
    out = {"weight_l2": math.sqrt(sum(sq.values())),
           "weight_minkowski": sum(pw.values()) ** (1.0 / p),
           "weight_minkowski_mean": sum(per_tensor) / len(per_tensor) if per_tensor else float("nan"),
           "weight_distance_p": p}
    for g in sorted(sq):
        out[f"weight_l2/{g}"] = math.sqrt(sq[g])
        out[f"weight_minkowski/{g}"] = pw[g] ** (1.0 / p)
    return out


def _strip(name: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name
