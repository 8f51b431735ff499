"""matmul_dtype: fp32 master weights with bf16 matmuls (mixed precision), as `plw train` uses under autocast.

The contract: the matmuls see exactly the operands a pure-bf16 run would, so loss and hidden-state
gradient agree bit for bit with it; the head gradient is the same fp32 sum *before* its final rounding
to bf16; and every gradient comes back in its input's dtype (fp32).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from plw.loss import linear_cross_entropy

MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.mm.out, torch.ops.aten.addmm.default,
           torch.ops.aten.addmm.out, torch.ops.aten.addmm_.default}


class MatmulDtypes(TorchDispatchMode):
    """Records the dtypes of the operands of every matmul dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.dtypes = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in MATMULS:
            self.dtypes.update(a.dtype for a in args if isinstance(a, torch.Tensor) and a.dim() == 2)
        return func(*args, **(kwargs or {}))


def _run(hidden, weight, labels, weights, **kw):
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    out = linear_cross_entropy(h, w, labels, weights, chunk_size=16, **kw)
    out.loss.backward()
    return out, h.grad, w.grad


@pytest.mark.parametrize("strategy", ["token_chunks", "vocab_blocks"])
def test_mixed_precision_equals_pure_bf16_before_rounding(lt, strategy):
    hidden, weight, labels, weights, comp = lt.batch(B=4, T=33, d=32, V=257, plw=0.1, seed=21)
    h32, w32 = hidden.float(), weight.float()
    mixed, dh, dw = _run(h32, w32, labels, weights, matmul_dtype=torch.bfloat16, strategy=strategy)
    pure, dh16, dw16 = _run(h32.bfloat16(), w32.bfloat16(), labels, weights, strategy=strategy)
    assert mixed.loss.dtype == dh.dtype == dw.dtype == torch.float32
    assert torch.equal(mixed.loss, pure.loss)
    assert torch.equal(mixed.completion_nll, pure.completion_nll)
    if strategy == "token_chunks":  # dH: one bf16 matmul per row; dW: fp32 sum over the chunks
        assert torch.equal(dh, dh16.float())
        assert torch.equal(dw.bfloat16(), dw16)
        assert not torch.equal(dw, dw.bfloat16().float())  # really kept in fp32, not rounded
    else:  # dH: fp32 sum over vocab blocks; dW: one bf16 matmul per block
        assert torch.equal(dh.bfloat16(), dh16)
        assert not torch.equal(dh, dh.bfloat16().float())
        assert torch.equal(dw, dw16.float())


@pytest.mark.parametrize("strategy", ["token_chunks", "vocab_blocks"])
def test_mixed_precision_within_bf16_tolerance_of_fp64(lt, strategy):
    hidden, weight, labels, weights, comp = lt.batch(B=3, T=29, d=24, V=131, plw="random", seed=22)
    bias = torch.randn(131, dtype=torch.float64) * 0.1
    h, w, b = (t.clone().float().requires_grad_() for t in (hidden, weight, bias))
    loss = linear_cross_entropy(h, w, labels, weights, bias=b, softcap=3.0, label_smoothing=0.1,
                                chunk_size=8, strategy=strategy, matmul_dtype=torch.bfloat16).loss
    loss.backward()
    hr, wr, br = (t.clone().requires_grad_() for t in (hidden, weight, bias))
    ref = lt.ref(hr @ wr.t() + br, labels, weights, softcap=3.0, label_smoothing=0.1)[0]
    ref.backward()
    assert b.grad.dtype == torch.float32
    for got, want in [(loss, ref), (h.grad, hr.grad), (w.grad, wr.grad), (b.grad, br.grad)]:
        assert lt.rel(got.detach(), want.detach()) <= 1e-2


@pytest.mark.parametrize("strategy", ["token_chunks", "vocab_blocks"])
def test_matmuls_run_in_the_matmul_dtype(lt, strategy):
    hidden, weight, labels, weights, comp = lt.batch(B=2, T=17, d=16, V=61, plw=0.1, seed=23)
    for mm, expect in [(torch.bfloat16, {torch.bfloat16}), (None, {torch.float32})]:
        with MatmulDtypes() as seen:
            _run(hidden.float(), weight.float(), labels, weights, matmul_dtype=mm, strategy=strategy)
        assert seen.dtypes == expect


def test_matmul_dtype_must_be_a_float_dtype(lt):
    hidden, weight, labels, weights, comp = lt.batch(seed=24)
    for bad in (torch.int64, "bfloat16"):
        with pytest.raises(ValueError, match="matmul_dtype"):
            linear_cross_entropy(hidden, weight, labels, weights, matmul_dtype=bad)


@pytest.mark.parametrize("strategy", ["token_chunks", "vocab_blocks"])
@pytest.mark.parametrize("mixed", [False, True])
def test_fp16_survives_a_large_normaliser_and_a_loss_scale(lt, strategy, mixed):
    """fp16 (pure, or fp32 weights under fp16 autocast): gradients formed in the forward would
    underflow (entries ~ p / Z) and a GradScaler's 65536 overflows fp16 if applied in fp16."""
    hidden, weight, labels, weights, comp = lt.batch(B=4, T=33, d=32, V=257, plw=0.1, seed=25)
    z, scale = 1e6, 65536.0
    h, w = hidden.half(), weight.half()
    if mixed:
        h, w = h.float(), w.float()
    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss = linear_cross_entropy(h, w, labels, weights, normalizer=z, chunk_size=16, strategy=strategy,
                                matmul_dtype=torch.float16 if mixed else None).loss
    (loss * scale).backward()
    hr, wr = (t.half().double().requires_grad_() for t in (hidden, weight))
    (lt.ref(hr @ wr.t(), labels, weights, normalizer=z)[0] * scale).backward()
    assert h.grad.dtype == w.grad.dtype == (torch.float32 if mixed else torch.float16)
    for got, want in [(h.grad, hr.grad), (w.grad, wr.grad)]:
        assert bool(torch.isfinite(got).all())
        assert lt.rel(got, want) <= 1e-2, lt.rel(got, want)
