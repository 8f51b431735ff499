"""Alternative regularizers of paper §6.1 (weight decay is AdamW's; label smoothing is in the loss).

- `minkowski_penalty`: mean over weight tensors of the Minkowski-p distance between current and
  initial weights (the paper: "the mean of the p = 1 Minkowski distance between each pair of weight
  tensors"), added to the loss times a coefficient.
- `set_dropout`: attention dropout through the model config (LlamaAttention reads
  `config.attention_dropout`); hidden dropout through the config where the architecture has one,
  otherwise (Llama has none) as dropout on each decoder layer's output hidden states.
"""

from __future__ import annotations

from typing import Mapping

_ATTENTION_KEYS = ("attention_dropout", "attn_pdrop", "attention_probs_dropout_prob")
_HIDDEN_KEYS = ("hidden_dropout", "resid_pdrop", "hidden_dropout_prob")


def minkowski_penalty(named_params, initial: Mapping[str, "object"], p: float = 1.0):
    """Mean over the tensors in `initial` of ||θ - θ₀||_p (a differentiable scalar tensor)."""
    import torch

    terms = []
    for name, param in named_params:
        ref = initial.get(name)
        if ref is None:
            continue
        diff = param - ref.to(device=param.device, dtype=param.dtype)
        # vector_norm's gradient at 0 is 0 (subgradient), which keeps the first step finite.
        terms.append(torch.linalg.vector_norm(diff.float(), ord=p))
    if not terms:
        raise ValueError("minkowski_penalty: no parameter matched the initial weights")
    return torch.stack(terms).mean()


def set_dropout(model, *, attention: float = 0.0, hidden: float = 0.0) -> list:
    """Apply attention/hidden dropout; returns the forward hooks added (empty when config sufficed)."""
    import torch.nn.functional as F

    config = model.config
    modules = list(model.modules())
    hooks: list = []
    if attention:
        keys = [k for k in _ATTENTION_KEYS if hasattr(config, k)]
        if not keys:
            raise ValueError(f"{type(model).__name__} has no attention-dropout setting")
        for k in keys:
            setattr(config, k, attention)
        # Attention modules cache the rate at construction (e.g. LlamaAttention.attention_dropout).
        for m in modules:
            if hasattr(m, "attention_dropout") and isinstance(m.attention_dropout, float):
                m.attention_dropout = attention
    if hidden:
        keys = [k for k in _HIDDEN_KEYS if hasattr(config, k)]
        if keys:
            for k in keys:
                setattr(config, k, hidden)
        else:
            layers = _decoder_layers(model)

            def drop(module, args, output):
                if not module.training:
                    return output
                if isinstance(output, tuple):
                    return (F.dropout(output[0], hidden, True),) + output[1:]
                return F.dropout(output, hidden, True)

            hooks = [layer.register_forward_hook(drop) for layer in layers]
    return hooks


def _decoder_layers(model):
    import torch.nn as nn

    for m in model.modules():
        layers = getattr(m, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers):
            return list(layers)
    raise ValueError(f"{type(model).__name__}: cannot find decoder layers for hidden dropout")
