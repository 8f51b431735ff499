"""Optional CUDA backends (`pip install plw[gpu]`): per-token losses from CCE or Liger, weighted by us.

Neither library takes per-token weights, but both return per-token losses (`reduction="none"`) whose
backward accepts a per-token upstream gradient, which is exactly w_i / Z. Liger's was wrong before 0.8.2.
Both import lazily so that plw works without them.
"""

from __future__ import annotations

import inspect

import torch

_HINT = "install the GPU extras: pip install 'plw[gpu]'"


def _import_cce():
    try:
        from cut_cross_entropy import linear_cross_entropy
    except ImportError as e:  # also raised when CCE is installed but Triton is not
        raise ImportError(f"backend='cce' needs cut-cross-entropy and triton ({e}); {_HINT}") from e
    return linear_cross_entropy


def _import_liger():
    try:
        import liger_kernel
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
    except ImportError as e:
        raise ImportError(f"backend='liger' needs liger-kernel>=0.8.2 ({e}); {_HINT}") from e
    version = getattr(liger_kernel, "__version__", None)
    if version is None:
        from importlib.metadata import version as _v
        version = _v("liger-kernel")
    if tuple(int(p) for p in version.split(".")[:3] if p.isdigit()) < (0, 8, 2):
        raise ImportError(f"backend='liger' needs liger-kernel>=0.8.2 (per-token backward fix), found {version}")
    return LigerFusedLinearCrossEntropyLoss


def external_per_token_loss(backend: str, hidden: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor | None, rows: torch.Tensor, y: torch.Tensor,
                            label_smoothing: float, softcap: float | None):
    """(differentiable per-row loss, detached per-row NLL) for the kept `rows` of hidden.view(-1, d).

    With Liger and label smoothing the logged "NLL" is Liger's smoothed per-token loss.
    """
    fn = _import_cce() if backend == "cce" else _import_liger()
    if not hidden.is_cuda:
        raise ValueError(f"backend={backend!r} runs on CUDA tensors only; use backend='torch' on {hidden.device}")
    h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)
    if backend == "cce":
        if bias is not None or label_smoothing:
            raise ValueError("backend='cce' supports neither bias nor label_smoothing; use backend='torch'")
        if h.dtype not in (torch.bfloat16, torch.float16):  # CCE's backward asserts it, after the forward
            raise ValueError(f"backend='cce' needs bf16/fp16 hidden states, got {h.dtype}; use backend='torch' "
                             "or train in bf16 (dtype: auto on a bf16 GPU)")
        # filter_eps=None: no gradient filtering, so the result is exact up to the kernel's precision.
        per = fn(h, weight, y, softcap=softcap, reduction="none", filter_eps=None, impl="cce")
    else:
        kwargs = dict(label_smoothing=label_smoothing, reduction="none", softcap=softcap)
        if "accum_dtype" in inspect.signature(fn).parameters:  # newer Liger: fp32 head-gradient sums
            kwargs["accum_dtype"] = torch.float32
        per = fn(**kwargs)(weight, h, y, bias)
        per = per[0] if isinstance(per, tuple) else getattr(per, "loss", per)
    return per, per.detach().float()
