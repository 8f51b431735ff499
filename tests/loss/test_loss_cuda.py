"""Both strategies of the engine on a CUDA GPU in bf16 against an fp64 reference (same rounded inputs).

Marked `cuda`: skipped without a GPU; `bench/gpu_check.sh` runs them on one. The CCE / Liger
comparison is `test_loss_engine.py::test_gpu_backends_equal_engine`.
"""

from __future__ import annotations

import pytest
import torch

from plw.loss import linear_cross_entropy, weighted_cross_entropy

from .test_loss_engine import _check, _grads

pytestmark = pytest.mark.cuda
BF16_TOL = 1e-2  # bf16 operands, fp32 accumulation: between 1e-3 and 1e-2 (norm-wise)


def _inputs(n_seq, seq, d, v, seed, plw="random"):
    g = torch.Generator(device="cuda").manual_seed(seed)
    hidden = torch.randn(n_seq, seq, d, device="cuda", generator=g)
    weight = torch.randn(v, d, device="cuda", generator=g) * (3 / d ** 0.5)
    labels = torch.randint(0, v, (n_seq, seq), device="cuda", generator=g)
    labels[-1, seq // 2:] = -100  # padding
    if plw == "random":
        weights = torch.rand(n_seq, seq, device="cuda", generator=g)
        weights[weights < 0.2] = 0.0  # some dropped rows
    else:
        weights = torch.ones(n_seq, seq, device="cuda")
        weights[:, : seq // 4] = plw
    return hidden, weight, labels, weights


def _reference(h, w, labels, weights):
    """fp64 gradients at the (possibly bf16-rounded) operands, from materialised logits."""
    return _grads(lambda h, w, b: weighted_cross_entropy(h @ w.t(), labels, weights).loss, h.double(), w.double())


@pytest.mark.parametrize("strategy", ["token_chunks", "vocab_blocks"])
@pytest.mark.parametrize("chunk", ["auto", 96])
@pytest.mark.parametrize("params", ["bf16", "fp32+autocast"])
def test_strategies_bf16_match_fp64(lt, strategy, chunk, params):
    hidden, weight, labels, weights = _inputs(3, 1025, 512, 50257, seed=1)
    h16, w16 = hidden.bfloat16(), weight.bfloat16()
    ref = _reference(h16, w16, labels, weights)
    if params == "bf16":
        got = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, strategy=strategy,
                                                          chunk_size=chunk).loss, h16, w16)
        assert got[1].dtype == got[2].dtype == torch.bfloat16
    else:  # fp32 master weights, bf16 matmuls (what PLWTrainer does under bf16 autocast)
        got = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, strategy=strategy,
                                                          chunk_size=chunk, matmul_dtype=torch.bfloat16).loss,
                     h16.float(), w16.float())
        assert got[1].dtype == got[2].dtype == torch.float32
    assert all(bool(torch.isfinite(t).all()) for t in got)
    _check(lt, got, ref, BF16_TOL)


@pytest.mark.parametrize("strategy", ["token_chunks", "vocab_blocks"])
def test_strategies_at_the_benchmark_shape(lt, strategy):
    """N = 4096 tokens, d = 4096, V = 128256 (Llama-3's head), bf16, PLW 0.1 on a quarter of each row."""
    hidden, weight, labels, weights = _inputs(8, 512, 4096, 128256, seed=2, plw=0.1)
    h16, w16 = hidden.bfloat16(), weight.bfloat16()
    del hidden, weight
    got = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, strategy=strategy).loss, h16, w16)
    ref = _reference(h16, w16, labels, weights)
    _check(lt, got, ref, BF16_TOL)


def test_auto_strategy_on_cuda_is_the_table_default(lt):
    from plw.loss.chunked import DEVICE_DEFAULTS

    hidden, weight, labels, weights = _inputs(2, 65, 64, 1000, seed=3)
    auto = linear_cross_entropy(hidden, weight, labels, weights).loss
    named = linear_cross_entropy(hidden, weight, labels, weights,
                                 strategy=DEVICE_DEFAULTS["cuda"]["strategy"]).loss
    assert float(auto) == float(named)
