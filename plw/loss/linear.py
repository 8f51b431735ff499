"""`linear_cross_entropy`: the weighted loss straight from hidden states and the LM head."""

from __future__ import annotations

import torch

from .backends import external_per_token_loss
from .chunked import ChunkedLinearCrossEntropy, auto_chunk_size, default_strategy
from .common import LossOutput, Normalizer, denominator, nll_stats, shift_targets
from .reference import check_options
from .vocab_blocks import VocabBlockLinearCrossEntropy, auto_token_chunk

BACKENDS = ("auto", "torch", "cce", "liger")
STRATEGIES = ("auto", "token_chunks", "vocab_blocks")


def linear_cross_entropy(hidden: torch.Tensor, lm_head_weight: torch.Tensor, labels: torch.Tensor,
                         weights: torch.Tensor, *, completion_mask: torch.Tensor | None = None,
                         bias: torch.Tensor | None = None, normalizer: Normalizer = "weight_sum",
                         label_smoothing: float = 0.0, softcap: float | None = None,
                         chunk_size: int | str = "auto", backend: str = "auto",
                         track_masked_nll: bool = False, strategy: str = "auto",
                         matmul_dtype: torch.dtype | None = None) -> LossOutput:
    """sum_i w_i * l_i / Z with logits = hidden @ lm_head_weightᵀ (+ bias), never materialised whole.

    hidden: [B, T, d] (or [T, d], one possibly packed sequence), unshifted; lm_head_weight: [V, d];
    labels / weights / completion_mask: [B, T] (or [T]). Rows whose target has label -100 or weight 0
    are dropped before any matmul, so their NLL is not logged unless `track_masked_nll=True` (an extra
    forward-only pass over them). backend: "auto"/"torch" = the exact chunked engine; "cce" / "liger"
    = optional CUDA kernels (`pip install plw[gpu]`) giving per-token losses that are weighted here.
    strategy (plain-PyTorch engine only): "auto" = the device's default from `chunked.DEVICE_DEFAULTS`,
    "token_chunks" on every device today; "token_chunks" = 6·N·d·V FLOPs (a bf16/fp16 head
    accumulates its gradient in an fp32 [V, d] buffer); "vocab_blocks" = two passes, logits recomputed
    per vocabulary block (8·N·d·V FLOPs), head gradient written once in its dtype, no [V, d] buffer.
    matmul_dtype: dtype of the two matmul operands, default hidden's. Mixed-precision training (fp32
    master weights under bf16/fp16 autocast) passes the autocast dtype: the matmuls then run in bf16
    like autocast's, while softmax, loss and gradient accumulation stay fp32 and the gradients come
    back in the inputs' dtypes (fp32 head gradient accumulated directly, never rounded to bf16).
    fp16 (inputs or matmul_dtype) is computed in fp32 by the plain-PyTorch engine, and fp16 gradients
    are kept in fp32 until backward has applied the upstream gradient (e.g. a GradScaler's scale).
    """
    check_options(label_smoothing, softcap)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy != "auto" and backend not in ("auto", "torch"):
        raise ValueError(f"strategy={strategy!r} applies to the plain-PyTorch engine, not backend={backend!r}")
    if hidden.dim() == 2:
        hidden = hidden.unsqueeze(0)
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, T, d] or [T, d], got shape {tuple(hidden.shape)}")
    if lm_head_weight.dim() != 2 or lm_head_weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"lm_head_weight must be [V, {hidden.shape[-1]}], got {tuple(lm_head_weight.shape)}")
    if lm_head_weight.dtype != hidden.dtype:
        raise ValueError(f"hidden ({hidden.dtype}) and lm_head_weight ({lm_head_weight.dtype}) dtypes differ")
    if matmul_dtype is not None and (not isinstance(matmul_dtype, torch.dtype)
                                     or not matmul_dtype.is_floating_point):
        raise ValueError(f"matmul_dtype must be a floating-point torch.dtype, got {matmul_dtype!r}")
    mm_dtype = matmul_dtype or hidden.dtype
    if mm_dtype == torch.float16 and backend in ("auto", "torch"):
        # The logit gradient is formed in the forward, before any loss scale reaches it: in fp16 its
        # small entries (c_i·p_v with c_i = w_i / Z) would underflow. fp16 runs are computed in fp32.
        mm_dtype = torch.float32
    V = lm_head_weight.shape[0]
    if bias is not None and bias.shape != (V,):
        raise ValueError(f"bias must be [{V}], got {tuple(bias.shape)}")
    tg = shift_targets(labels, weights, completion_mask)
    if hidden.shape[:2] != (tg.batch, tg.length):
        raise ValueError(f"hidden shape {tuple(hidden.shape)} does not match labels [{tg.batch}, {tg.length}]")
    if tg.valid.any() and int(tg.labels[tg.valid].max()) >= V:
        raise ValueError(f"labels must be < vocabulary size {V}, got {int(tg.labels[tg.valid].max())}")
    z = denominator(tg, normalizer)

    keep = (tg.weights > 0).nonzero().squeeze(1)  # weight > 0 implies a valid label
    rows, y = tg.source_row[keep], tg.labels[keep]
    coef = (tg.weights[keep].double() / z).to(torch.promote_types(mm_dtype, torch.float32))
    tracked = ((tg.weights == 0) & tg.valid).nonzero().squeeze(1) if track_masked_nll else keep[:0]
    grad_enabled = torch.is_grad_enabled()

    if strategy == "auto":
        strategy = default_strategy(hidden.device)
    if chunk_size == "auto" and strategy == "vocab_blocks":
        chunk = auto_token_chunk(max(rows.numel(), tracked.numel(), 1), V, device=hidden.device,
                                 dtype=mm_dtype)
    elif chunk_size == "auto":
        chunk = auto_chunk_size(max(rows.numel(), tracked.numel(), 1), V, device=hidden.device,
                                dtype=mm_dtype, softcap=softcap is not None,
                                hidden_size=hidden.shape[-1])
    elif isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size > 0:
        chunk = chunk_size
    else:
        raise ValueError(f"chunk_size must be a positive int or 'auto', got {chunk_size!r}")

    if backend in ("auto", "torch"):
        engine = VocabBlockLinearCrossEntropy if strategy == "vocab_blocks" else ChunkedLinearCrossEntropy
        loss, nll, nll_tracked = engine.apply(
            hidden, lm_head_weight, bias, rows, y, coef, tg.source_row[tracked], tg.labels[tracked],
            float(label_smoothing), softcap, chunk, grad_enabled, mm_dtype)
    else:
        # The external kernels take one dtype: cast differentiably (autograd returns each input's own).
        h_mm, w_mm = hidden.to(mm_dtype), lm_head_weight.to(mm_dtype)
        b_mm = bias.to(mm_dtype) if bias is not None else None
        per_token, nll = external_per_token_loss(backend, h_mm, w_mm, b_mm, rows, y,
                                                 float(label_smoothing), softcap)
        loss = (coef * per_token.to(coef.dtype)).sum()
        with torch.no_grad():  # tracked rows: forward-only through the exact engine
            nll_tracked = ChunkedLinearCrossEntropy.apply(
                hidden, lm_head_weight, bias, rows[:0], y[:0], coef[:0], tg.source_row[tracked],
                tg.labels[tracked], 0.0, softcap, chunk, False, mm_dtype)[2]

    all_nll = torch.cat([nll.detach().to(nll_tracked.dtype), nll_tracked])
    completion = torch.cat([tg.completion[keep], tg.completion[tracked]])
    stats = nll_stats(all_nll, completion)
    return LossOutput(loss, *stats, tg.weights.sum(dtype=torch.float64))
