"""linear_cross_entropy(strategy="vocab_blocks") against the fp64 loop reference and the default engine."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from plw.loss import STRATEGIES, linear_cross_entropy, normalizer_value
from plw.loss.vocab_blocks import vocab_block_size

from .test_loss_engine import CountMatmuls, _check, _grads

VB = dict(strategy="vocab_blocks")
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def _ref_grads(lt, hidden, weight, labels, weights, bias=None, **kw):
    """fp64 reference on the same rounded inputs."""
    def fn(h, w, b):
        return lt.ref(h @ w.t() + (b if b is not None else 0), labels, weights, **kw)[0]
    return _grads(fn, hidden.double(), weight.double(), None if bias is None else bias.double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("plw", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("chunk", ["auto", 5])
def test_vocab_blocks_match_fp64_reference(lt, dtype, plw, chunk):
    hidden, weight, labels, weights, comp = lt.batch(B=3, T=17, d=16, V=61, plw=plw, seed=21)
    h, w = hidden.to(dtype), weight.to(dtype)
    ref = _ref_grads(lt, h, w, labels, weights, completion_mask=comp)
    got = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, completion_mask=comp,
                                                      chunk_size=chunk, **VB).loss, h, w)
    assert got[0].dtype == torch.float32 and got[1].dtype == dtype and got[2].dtype == dtype
    _check(lt, got, ref, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("eps,cap,use_bias", [(0.1, None, False), (0.0, 2.0, False), (0.2, 1.5, True),
                                              (0.0, None, True)])
def test_vocab_blocks_smoothing_softcap_bias(lt, dtype, eps, cap, use_bias):
    hidden, weight, labels, weights, comp = lt.batch(plw="random", seed=22, V=53)
    bias = torch.randn(weight.shape[0], dtype=torch.float64).to(dtype) if use_bias else None
    h, w = hidden.to(dtype), weight.to(dtype)
    kw = dict(completion_mask=comp, normalizer="nonzero_tokens", label_smoothing=eps, softcap=cap)
    ref = _ref_grads(lt, h, w, labels, weights, bias, **kw)
    got = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, bias=b, chunk_size=4, **kw,
                                                      **VB).loss, h, w, bias)
    _check(lt, got, ref, TOL[dtype])


def test_vocab_blocks_equal_token_chunks_fp64(lt):
    """Same arithmetic up to summation order: fp64 agreement to 1e-12, logged statistics too."""
    hidden, weight, labels, weights, comp = lt.batch(B=2, T=30, d=12, V=97, plw=0.1, seed=23)
    bias = torch.randn(97, dtype=torch.float64)
    kw = dict(completion_mask=comp, label_smoothing=0.1, softcap=3.0, track_masked_nll=True)
    a = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, bias=b, **kw).loss, hidden, weight,
               bias)
    b = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, bias=b, chunk_size=7, **kw,
                                                    **VB).loss, hidden, weight, bias)
    _check(lt, b, a, 1e-12)
    oa = linear_cross_entropy(hidden, weight, labels, weights, **kw)
    ob = linear_cross_entropy(hidden, weight, labels, weights, **kw, **VB)
    for x, y in zip(oa[1:], ob[1:]):
        torch.testing.assert_close(x, y, equal_nan=True, rtol=1e-12, atol=0)


# The packed / fully masked batch: tests/loss/test_loss_engine.py, parametrised over strategies.


def test_vocab_blocks_nothing_kept_gives_zero_gradients(lt):
    hidden, weight, labels, weights, comp = lt.batch(plw=0.0, seed=25)
    weights.zero_()
    got = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, normalizer=5.0, **VB).loss,
                 hidden.float(), weight.float())
    assert float(got[0]) == 0 and not got[1].any() and not got[2].any()


def test_vocab_blocks_gradient_accumulation(lt):
    hidden, weight, labels, weights, comp = lt.batch(B=6, T=21, d=16, V=53, plw=0.1, seed=26)
    weights[4] = 0.0
    h32, w32 = hidden.float(), weight.float()
    big = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, completion_mask=comp, **VB).loss,
                 h32, w32)
    parts = [slice(0, 1), slice(1, 4), slice(4, 6)]
    z = sum(normalizer_value(labels[s], weights[s], "weight_sum", comp[s]) for s in parts)
    h, w = h32.clone().requires_grad_(), w32.clone().requires_grad_()
    total = 0.0
    for s in parts:
        loss = linear_cross_entropy(h[s], w, labels[s], weights[s], completion_mask=comp[s], normalizer=z,
                                    chunk_size=3, **VB).loss
        loss.backward()
        total += float(loss.detach())
    assert abs(total - float(big[0])) <= 1e-6 * abs(float(big[0]))
    assert lt.rel(h.grad, big[1]) <= 1e-6 and lt.rel(w.grad, big[2]) <= 1e-6


def test_vocab_blocks_frozen_head_and_matmul_count(lt):
    hidden, weight, labels, weights, comp = lt.batch(B=2, T=20, d=8, V=31, plw=0.0, seed=27)
    kept = int(((labels[:, 1:] != -100) & (weights[:, 1:] > 0)).sum())
    chunk = 8
    n_chunks = math.ceil(kept / chunk)
    n_blocks = math.ceil(31 / vocab_block_size(chunk, kept, 31))
    assert n_blocks > 1
    h = hidden.float().requires_grad_()
    w = weight.float()  # frozen
    with CountMatmuls() as c:
        linear_cross_entropy(h, w, labels, weights, chunk_size=chunk, **VB).loss.backward()
    assert w.grad is None
    assert len(c.calls) == n_chunks + 2 * n_blocks  # pass 1 logits; pass 2 logits + dH (no dW)
    ref = _ref_grads(lt, hidden.float(), weight.float(), labels, weights)
    assert lt.rel(h.grad, ref[1]) <= 1e-5
    w.requires_grad_()
    with CountMatmuls() as c:
        linear_cross_entropy(h, w, labels, weights, chunk_size=chunk, **VB).loss.backward()
    assert len(c.calls) == n_chunks + 3 * n_blocks
    with torch.no_grad(), CountMatmuls() as c:
        linear_cross_entropy(h, w, labels, weights, chunk_size=chunk, **VB)
    assert len(c.calls) == n_chunks  # forward only: pass 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vocab_blocks_frozen_head_or_frozen_hidden(lt, dtype):
    """Only one side needs a gradient: each is still right (bias gradient included)."""
    hidden, weight, labels, weights, comp = lt.batch(B=2, T=25, d=16, V=71, plw=0.1, seed=30)
    bias = torch.randn(71, dtype=torch.float64).to(dtype)
    h, w = hidden.to(dtype), weight.to(dtype)
    ref = _ref_grads(lt, h, w, labels, weights, bias, label_smoothing=0.1, softcap=4.0)
    kw = dict(label_smoothing=0.1, softcap=4.0, chunk_size=6, **VB)
    hh = h.clone().requires_grad_()
    linear_cross_entropy(hh, w, labels, weights, bias=bias, **kw).loss.backward()  # frozen head and bias
    assert lt.rel(hh.grad, ref[1]) <= TOL[dtype]
    ww, bb = w.clone().requires_grad_(), bias.clone().requires_grad_()
    linear_cross_entropy(h, ww, labels, weights, bias=bb, **kw).loss.backward()  # frozen hidden
    assert lt.rel(ww.grad, ref[2]) <= TOL[dtype] and lt.rel(bb.grad, ref[3]) <= TOL[dtype]
    assert ww.grad.dtype == dtype and bb.grad.dtype == dtype


class Storages(TorchDispatchMode):
    """Records {(data_ptr, nbytes, dtype)} of the storage behind every tensor produced inside the block."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        r = func(*args, **(kwargs or {}))
        for t in (r if isinstance(r, (tuple, list)) else [r]):
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                self.seen.add((st.data_ptr(), st.nbytes(), t.dtype))
        return r


def test_vocab_blocks_bf16_has_no_vocab_sized_accumulator(lt):
    """Besides dW itself, no storage of the head's size is created (so no fp32 [V, d] accumulator)."""
    hidden, weight, labels, weights, comp = lt.batch(B=2, T=64, d=32, V=1000, plw=0.1, seed=28)
    h, w = hidden.bfloat16().requires_grad_(), weight.bfloat16().requires_grad_()
    head_bytes = w.numel() * w.element_size()
    skip = {w.untyped_storage().data_ptr()}

    def big(mode):
        return sorted({(n, dt) for p, n, dt in mode.seen if p not in skip and n >= head_bytes}, key=str)

    with Storages() as a:  # chunk of 8 x V elements: smaller than the head
        linear_cross_entropy(h, w, labels, weights, chunk_size=8, **VB).loss.backward()
    assert big(a) == [(head_bytes, torch.bfloat16)]  # dW, written in place block by block
    with Storages() as a:  # the token-chunk engine does create the fp32 accumulator
        linear_cross_entropy(h, w, labels, weights, chunk_size=8).loss.backward()
    assert (2 * head_bytes, torch.float32) in big(a)


def test_strategy_validation(lt):
    hidden, weight, labels, weights, comp = lt.batch(seed=29)
    assert STRATEGIES == ("auto", "token_chunks", "vocab_blocks")
    with pytest.raises(ValueError, match="strategy must be one of"):
        linear_cross_entropy(hidden, weight, labels, weights, strategy="vocab")
    with pytest.raises(ValueError, match="plain-PyTorch engine"):
        linear_cross_entropy(hidden, weight, labels, weights, strategy="vocab_blocks", backend="cce")
    a = linear_cross_entropy(hidden, weight, labels, weights)
    b = linear_cross_entropy(hidden, weight, labels, weights, strategy="token_chunks")
    assert float(a.loss) == float(b.loss)


def test_auto_strategy_follows_the_device_table(lt, monkeypatch):
    """strategy="auto" is whatever DEVICE_DEFAULTS names for the device (the one place GPU numbers set)."""
    import plw.loss.chunked as chunked_mod
    from plw.loss.chunked import ChunkedLinearCrossEntropy
    from plw.loss.vocab_blocks import VocabBlockLinearCrossEntropy

    hidden, weight, labels, weights, comp = lt.batch(seed=30)
    used = []
    for cls in (ChunkedLinearCrossEntropy, VocabBlockLinearCrossEntropy):
        monkeypatch.setattr(cls, "apply", lambda *a, _c=cls, _f=cls.apply: used.append(_c) or _f(*a))
    linear_cross_entropy(hidden, weight, labels, weights)
    monkeypatch.setitem(chunked_mod.DEVICE_DEFAULTS, "cpu", {"strategy": "vocab_blocks", "chunk_mb": 64})
    linear_cross_entropy(hidden, weight, labels, weights)
    assert used == [ChunkedLinearCrossEntropy, VocabBlockLinearCrossEntropy]
    assert chunked_mod.default_strategy(torch.device("meta")) == "vocab_blocks"  # unnamed device: CPU's row


@pytest.mark.parametrize("tile_bytes", [4 * 8 * 3, 1 << 40])  # 3-row tiles; one tile (as on a GPU)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_vocab_blocks_row_tiles(lt, monkeypatch, tile_bytes, dtype):
    """Pass 2's row tiling (and its sync-free one-hot term) does not change the result."""
    import plw.loss.vocab_blocks as vb_mod

    hidden, weight, labels, weights, comp = lt.batch(B=2, T=30, d=12, V=97, plw=0.1, seed=26)
    h, w = hidden.to(dtype), weight.to(dtype)
    kw = dict(completion_mask=comp, label_smoothing=0.1, chunk_size=7, **VB)
    want = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, **kw).loss, h, w)
    monkeypatch.setattr(vb_mod, "TILE_BYTES", tile_bytes)
    got = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, **kw).loss, h, w)
    _check(lt, got, want, 1e-12 if dtype == torch.float64 else 1e-2)
    ref = _ref_grads(lt, h, w, labels, weights, completion_mask=comp, label_smoothing=0.1)
    _check(lt, got, ref, 1e-12 if dtype == torch.float64 else 1e-2)
