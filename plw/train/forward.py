"""The PLW loss inside the causal LM's own forward: final hidden states → `linear_cross_entropy`.

Why inside `forward` rather than in `Trainer.compute_loss`: DDP, FSDP and DeepSpeed hook the
model's forward call (DDP prepares its gradient reducer there; FSDP and ZeRO-3 gather sharded
parameters there). Calling the decoder and reading `lm_head.weight` from outside that call would
skip gradient sync or see a parameter shard. So `attach_plw_loss` gives the causal-LM module an
extra mode: when `plw_weights` is passed, it runs the decoder to the final (normed) hidden states,
never builds the [tokens, vocab] logits, and returns the PLW loss from the head weight. Without
`plw_weights` the original forward runs (generation, evaluation, saving are untouched). PEFT
wrappers reach the patched module through `LoraModel.forward` → `self.model(...)`.
"""

from __future__ import annotations

import types
from typing import Any

from plw.errors import PLWError

# Architectures whose head multiplies or divides the logits by a config factor. Logits are linear
# in the hidden states, so the loss applies the factor to the hidden states (and the head's bias):
# exactly the model's own logits. (model_type: (config attribute, "mul" | "div"))
LOGIT_SCALES = {
    "granite": ("logits_scaling", "div"), "granite_swa": ("logits_scaling", "div"),
    "granitemoe": ("logits_scaling", "div"), "granitemoe_swa": ("logits_scaling", "div"),
    "granitemoehybrid": ("logits_scaling", "div"), "granitemoeshared": ("logits_scaling", "div"),
    "minicpm3": ("logits_scaling", "div"),  # divides the hidden states before the head
    "hyperclovax": ("logits_scaling", "mul"),
    "cohere": ("logit_scale", "mul"), "cohere2": ("logit_scale", "mul"),
    "cohere2_moe": ("logit_scale", "mul"), "cohere_compass": ("logit_scale", "mul"),
}
# Config attributes that transform the logits in some architecture. On a model_type not in
# LOGIT_SCALES they are refused: the loss would silently train a different objective.
LOGIT_TRANSFORM_ATTRS = ("logits_scaling", "logit_scale", "logit_scaling", "logits_scale",
                         "logit_multiplier", "output_multiplier", "lm_head_multiplier",
                         "logits_soft_cap", "unpadded_vocab_size")


def logit_factor(config) -> float:
    """The factor the model's forward multiplies its logits by (1.0 for most models).

    Raises PLWError for a config with a logit-transforming attribute plw does not know.
    `final_logit_softcapping` (Gemma 2/3) is applied by the loss itself.
    """
    model_type = getattr(config, "model_type", None)
    if model_type in LOGIT_SCALES:
        attr, op = LOGIT_SCALES[model_type]
        value = getattr(config, attr, None)
        if value is None:
            return 1.0
        value = float(value)
        return value if op == "mul" else 1.0 / value
    for cfg in (config, getattr(config, "text_config", None)):
        for attr in LOGIT_TRANSFORM_ATTRS:
            if cfg is not None and getattr(cfg, attr, None) is not None:
                raise PLWError(f"model_type {model_type!r} has `{attr}` in its config, which transforms the "
                               "logits in a way plw's loss does not implement; training it would optimise "
                               "a different objective", field="model")
    return 1.0


def causal_lm_module(model):
    """The `*ForCausalLM` module inside PEFT / DDP / FSDP wrappers."""
    m = model
    while True:
        if hasattr(m, "module") and not hasattr(m, "get_output_embeddings"):
            m = m.module  # DDP / DeepSpeed engine
            continue
        if hasattr(m, "get_base_model"):
            m = m.get_base_model()  # PEFT
            continue
        return m


def attach_plw_loss(model):
    """Give the causal LM inside `model` a PLW-loss forward mode (idempotent); returns `model`."""
    lm = causal_lm_module(model)
    logit_factor(lm.config)  # refuse an unknown logit transform before training starts
    if "_plw_original_forward" not in lm.__dict__:
        lm._plw_original_forward = lm.forward
        lm.forward = types.MethodType(_plw_forward, lm)
    return model


def detach_plw_loss(model):
    lm = causal_lm_module(model)
    if "_plw_original_forward" in lm.__dict__:
        lm.forward = lm.__dict__.pop("_plw_original_forward")
    return model


def _plw_forward(self, input_ids=None, attention_mask=None, position_ids=None, labels=None, *,
                 plw_weights=None, plw_completion_mask=None, plw_normalizer="weight_sum",
                 plw_label_smoothing: float = 0.0, plw_track_masked_nll: bool = False,
                 plw_backend: str = "auto", plw_strategy: str = "auto", **kwargs: Any):
    if plw_weights is None:
        return self._plw_original_forward(input_ids=input_ids, attention_mask=attention_mask,
                                          position_ids=position_ids, labels=labels, **kwargs)
    import torch

    from plw.loss import linear_cross_entropy

    decoder = self.get_decoder()
    # use_cache=False: no KV cache in training, and transformers only detects packed sequences
    # (block-diagonal mask from position_ids) when there is no cache and no attention_mask.
    out = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                  use_cache=False, **kwargs)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    factor = logit_factor(self.config)
    head = self.get_output_embeddings()
    # Under autocast with fp32 master weights the final hidden states are fp32 (the residual stream),
    # while HF's own head would run in the autocast dtype: ask the engine for those low-precision
    # matmuls, with fp32 softmax and an fp32 head gradient. Left in fp32 they would be several times
    # slower on a GPU (no TF32 by default).
    dev_type = hidden.device.type
    matmul_dtype = torch.get_autocast_dtype(dev_type) if torch.is_autocast_enabled(dev_type) else None
    # A head whose dtype differs from the hidden states (rare): cast it, differentiably.
    weight = head.weight if head.weight.dtype == hidden.dtype else head.weight.to(hidden.dtype)
    bias = getattr(head, "bias", None)
    if bias is not None and bias.dtype != hidden.dtype:
        bias = bias.to(hidden.dtype)
    if factor != 1.0:  # logits·s = (hidden·s) Wᵀ + b·s: exact, no [tokens, vocab] tensor
        hidden = hidden * factor
        bias = bias * factor if bias is not None else None
    # The engine has its own autograd Function with explicit dtypes: run it outside autocast.
    with torch.autocast(device_type=dev_type, enabled=False):
        res = linear_cross_entropy(
            hidden, weight, labels, plw_weights,
            completion_mask=plw_completion_mask,
            bias=bias,
            normalizer=plw_normalizer,
            label_smoothing=plw_label_smoothing,
            softcap=getattr(self.config, "final_logit_softcapping", None),
            backend=plw_backend,
            strategy=plw_strategy,
            track_masked_nll=plw_track_masked_nll,
            matmul_dtype=matmul_dtype,
        )
    # A plain dict: DDP/accelerate walk it for tensors; no logits are returned.
    return {"loss": res.loss, "prompt_nll": res.prompt_nll, "completion_nll": res.completion_nll,
            "n_prompt": res.n_prompt, "n_completion": res.n_completion, "weight_sum": res.weight_sum,
            "prompt_nll_sum": res.prompt_nll_sum, "completion_nll_sum": res.completion_nll_sum}
