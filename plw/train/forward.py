"""The PLW loss inside the model's own forward calls: final hidden states → `linear_cross_entropy`.

Why inside `forward` rather than in `Trainer.compute_loss`: DDP, FSDP and DeepSpeed hook module
forward calls (DDP prepares its gradient reducer in the root's; FSDP and ZeRO-3 gather a module's
sharded parameters just before *that module's* forward and reduce its gradients after its
backward). So `attach_plw_loss` gives two modules an extra mode: the causal LM runs the decoder to
the final (normed) hidden states, then calls its output-embedding module (`lm_head`) with a
`LossRequest`; the head computes the PLW loss from its own, gathered weight without ever
building the [tokens, vocab] logits. Without a request both run their original forward
(generation, evaluation, saving are untouched). PEFT reaches the patched module through
`LoraModel.forward` → `self.model(...)`.

The weights, completion mask and normaliser travel inside the request, a plain object: mixed-
precision wrappers (FSDP's `cast_forward_inputs`, DeepSpeed) cast every floating tensor they find
in a forward call's arguments, which would round PLW 0.1 to bf16's 0.10009765625. For the same
reason the logged statistics are read from the request, not from the (possibly cast) outputs.
"""

from __future__ import annotations

import inspect
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


class LossRequest:
    """What the loss needs besides the hidden states; filled with the result by the head's forward.

    Deliberately a plain class (not a dataclass, dict or tuple), so that wrappers that walk and cast
    a forward call's arguments leave its tensors alone.
    """

    def __init__(self, weights, completion_mask=None, normalizer="weight_sum", *, label_smoothing=0.0,
                 track_masked_nll=False, backend="auto", strategy="auto"):
        self.weights = weights
        self.completion_mask = completion_mask
        self.normalizer = normalizer
        self.label_smoothing = label_smoothing
        self.track_masked_nll = track_masked_nll
        self.backend = backend
        self.strategy = strategy
        self.labels = None
        self.factor = 1.0
        self.softcap = None
        self.result = None  # the LossOutput, set by the head's forward
        self.loss_value = None  # detached fp32 copy of the loss, for logging

    def stats(self) -> dict:
        """Loss statistics (detached, full precision) as the model's output dict carries them."""
        r = self.result
        return {"prompt_nll": r.prompt_nll, "completion_nll": r.completion_nll, "n_prompt": r.n_prompt,
                "n_completion": r.n_completion, "weight_sum": r.weight_sum,
                "prompt_nll_sum": r.prompt_nll_sum, "completion_nll_sum": r.completion_nll_sum}


PLWLossRequest = LossRequest  # its old name, kept importable


class _PatchedForward:
    """`module.forward` replaced by `fn(module, original_forward, ...)`.

    A picklable callable (a bound method of a module-level function in `__dict__` is not) that
    carries the original forward's signature, so transformers' introspection (e.g. whether the model
    takes `logits_to_keep` when generating) still sees the model's own forward.
    """

    def __init__(self, module, fn, original):
        self.module, self.fn = module, fn
        # The class's own forward is looked up at call time (nothing bound to pickle); anything else
        # (a forward someone patched before us) is kept as it was.
        own = getattr(original, "__func__", None) is type(module).forward
        self.original = None if own else original
        try:
            self.__signature__ = inspect.signature(original)
        except (TypeError, ValueError):
            pass

    def original_forward(self):
        return self.original or type(self.module).forward.__get__(self.module)

    def __call__(self, *args, **kwargs):
        return self.fn(self.module, self.original_forward(), *args, **kwargs)


def _patch(module, fn) -> None:
    # A flag rather than a type check: accelerate may wrap our forward in its own (autocast).
    if "_plw_patched" not in module.__dict__:
        module.forward = _PatchedForward(module, fn, module.forward)
        module._plw_patched = True


def _unpatch(module) -> None:
    if module is None or "_plw_patched" not in module.__dict__:
        return
    patched = module.__dict__.get("forward")
    if isinstance(patched, _PatchedForward):  # not when someone wrapped it since: leave both then
        del module.forward
        if patched.original is not None:
            module.forward = patched.original
        del module._plw_patched


def attach_plw_loss(model):
    """Give the causal LM inside `model` and its head a PLW-loss mode (idempotent); returns `model`."""
    lm = causal_lm_module(model)
    logit_factor(lm.config)  # refuse an unknown logit transform before training starts
    head = lm.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise PLWError(f"{type(lm).__name__} has no output-embedding layer with a weight; plw's loss "
                       "needs the LM head", field="model")
    if hasattr(head, "base_layer") and hasattr(head, "lora_A"):
        # The loss uses the head's weight directly: a LoRA delta on the head would never be trained.
        raise PLWError("LoRA on the LM head is not supported by plw's fused loss (its adapter would get "
                       "no gradient); leave lm_head out of target_modules, or use "
                       "modules_to_save=['lm_head'] to train the head fully", field="lora.target_modules")
    _patch(lm, _plw_forward)
    _patch(head, _plw_head_forward)
    return model


def detach_plw_loss(model):
    lm = causal_lm_module(model)
    _unpatch(lm)
    _unpatch(lm.get_output_embeddings())
    return model


def _plw_forward(self, original, *args, loss_request: LossRequest | None = None, plw_weights=None,
                 plw_completion_mask=None, plw_normalizer="weight_sum", plw_label_smoothing: float = 0.0,
                 plw_track_masked_nll: bool = False, plw_backend: str = "auto",
                 plw_strategy: str = "auto", plw: LossRequest | None = None, **kwargs: Any):
    """`loss_request=LossRequest(...)` (what the trainer passes; `plw=` is its deprecated name) or
    the `plw_*` keywords (a convenience that builds one) switch to the loss mode, which takes keyword
    arguments only; the returned dict has the loss and its statistics. Otherwise the model's own
    forward runs, arguments untouched."""
    req = loss_request if loss_request is not None else plw
    if req is None and plw_weights is not None:
        req = LossRequest(plw_weights, plw_completion_mask, plw_normalizer,
                          label_smoothing=plw_label_smoothing, track_masked_nll=plw_track_masked_nll,
                          backend=plw_backend, strategy=plw_strategy)
    if req is None:
        return original(*args, **kwargs)
    if args:
        raise TypeError("the PLW loss mode takes keyword arguments only (input_ids=..., labels=...)")
    input_ids, attention_mask = kwargs.pop("input_ids", None), kwargs.pop("attention_mask", None)
    position_ids, labels = kwargs.pop("position_ids", None), kwargs.pop("labels", None)
    decoder = self.get_decoder()
    # use_cache=False: no KV cache in training, and transformers only detects packed sequences
    # (block-diagonal mask from position_ids) when there is no cache and no attention_mask.
    out = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                  use_cache=False, **kwargs)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    req.labels = labels
    req.factor = logit_factor(self.config)
    req.softcap = getattr(self.config, "final_logit_softcapping", None)
    # Through the head module's own call, so that FSDP / ZeRO-3 gather its weight (tied or not) and
    # reduce its gradient as for any layer.
    loss = self.get_output_embeddings()(hidden, loss_request=req)
    # A plain dict: DDP/accelerate walk it for tensors; no logits are returned.
    return {"loss": loss, **req.stats()}


def _plw_head_forward(self, original, *args, loss_request: LossRequest | None = None, **kwargs):
    if loss_request is None:  # generation, evaluation, PEFT's extra keywords: the head as it was
        return original(*args, **kwargs)
    (hidden,) = args
    import torch

    from plw.loss import linear_cross_entropy

    req = loss_request
    # Under autocast with fp32 master weights the final hidden states are fp32 (the residual stream),
    # while HF's own head would run in the autocast dtype: ask the engine for those low-precision
    # matmuls, with fp32 softmax and an fp32 head gradient. Left in fp32 they would be several times
    # slower on a GPU (no TF32 by default).
    dev_type = hidden.device.type
    matmul_dtype = torch.get_autocast_dtype(dev_type) if torch.is_autocast_enabled(dev_type) else None
    # A head whose dtype differs from the hidden states (rare): cast it, differentiably.
    weight = self.weight if self.weight.dtype == hidden.dtype else self.weight.to(hidden.dtype)
    bias = getattr(self, "bias", None)
    if bias is not None and bias.dtype != hidden.dtype:
        bias = bias.to(hidden.dtype)
    if req.factor != 1.0:  # logits·s = (hidden·s) Wᵀ + b·s: exact, no [tokens, vocab] tensor
        hidden = hidden * req.factor
        bias = bias * req.factor if bias is not None else None
    # The engine has its own autograd Function with explicit dtypes: run it outside autocast.
    with torch.autocast(device_type=dev_type, enabled=False):
        res = linear_cross_entropy(
            hidden, weight, req.labels, req.weights,
            completion_mask=req.completion_mask,
            bias=bias,
            normalizer=req.normalizer,
            label_smoothing=req.label_smoothing,
            softcap=req.softcap,
            backend=req.backend,
            strategy=req.strategy,
            track_masked_nll=req.track_masked_nll,
            matmul_dtype=matmul_dtype,
        )
    req.result = res
    req.loss_value = res.loss.detach().float()
    return res.loss
