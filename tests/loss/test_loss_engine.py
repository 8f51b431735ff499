"""linear_cross_entropy (the chunked engine) against the fp64 loop reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from plw.loss import linear_cross_entropy, normalizer_value, weighted_cross_entropy

MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.mm.out, torch.ops.aten.addmm.default,
           torch.ops.aten.addmm.out, torch.ops.aten.addmm_.default}


class CountMatmuls(TorchDispatchMode):
    """Records (op, shapes) of every matmul dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in MATMULS:
            self.calls.append((func, [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


def _grads(loss_fn, hidden, weight, bias=None, upstream=lambda l: l):
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    b = None if bias is None else bias.clone().requires_grad_()
    loss = loss_fn(h, w, b)
    upstream(loss).backward()
    return [loss.detach(), h.grad, w.grad] + ([b.grad] if b is not None else [])


def _check(lt, got, ref, tol):
    for g, r in zip(got, ref):
        assert lt.rel(g, r) <= tol, (lt.rel(g, r), tol)


@pytest.mark.parametrize("plw", [0.0, 1e-4, 0.1, 1.0, "random"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("chunk", ["auto", 5])
def test_engine_matches_fp64_reference(lt, plw, dtype, tol, chunk):
    hidden, weight, labels, weights, comp = lt.batch(plw=plw, seed=1)
    ref = _grads(lambda h, w, b: lt.ref(h @ w.t(), labels, weights, completion_mask=comp)[0],
                 hidden.double(), weight.to(dtype).double())
    got = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, completion_mask=comp,
                                                      chunk_size=chunk).loss, hidden.to(dtype), weight.to(dtype))
    assert got[0].dtype == dtype
    _check(lt, got, ref, tol)


@pytest.mark.parametrize("eps,cap,use_bias", [(0.1, None, False), (0.0, 2.0, False), (0.2, 1.5, True),
                                              (0.0, None, True)])
@pytest.mark.parametrize("normalizer", ["weight_sum", "nonzero_tokens", "completion_tokens", 9.0])
def test_smoothing_softcap_bias_normalizers(lt, eps, cap, use_bias, normalizer):
    hidden, weight, labels, weights, comp = lt.batch(plw="random", seed=2)
    bias = torch.randn(weight.shape[0], dtype=torch.float64) if use_bias else None
    kw = dict(completion_mask=comp, normalizer=normalizer, label_smoothing=eps, softcap=cap)

    def ref_fn(h, w, b):
        logits = h @ w.t() + (b if b is not None else 0)
        return lt.ref(logits, labels, weights, **kw)[0]

    def fn(h, w, b):
        return linear_cross_entropy(h, w, labels, weights, bias=b, chunk_size=4, **kw).loss

    _check(lt, _grads(fn, hidden.float(), weight.float(), None if bias is None else bias.float()),
           _grads(ref_fn, hidden, weight.float().double(), bias), 1e-5)


@pytest.mark.parametrize("strategy", ["auto", "vocab_blocks"])
@pytest.mark.parametrize("chunk", [1, 3, 16, 10_000])
def test_chunks_fully_masked_rows_and_packed_boundaries(lt, chunk, strategy):
    """A packed batch of one: example boundaries are label -100 / weight 0, a whole example is masked,
    and chunk boundaries fall inside examples."""
    g = torch.Generator().manual_seed(4)
    T, d, V = 40, 8, 23
    hidden = torch.randn(T, d, generator=g, dtype=torch.float64)
    weight = torch.randn(V, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, V, (T,), generator=g)
    weights = torch.ones(T, dtype=torch.float64)
    comp = torch.ones(T, dtype=torch.bool)
    for start in (0, 13, 29):  # three packed examples; their first token predicts nothing
        labels[start] = -100
        weights[start + 1:start + 4] = 0.05
        comp[start:start + 4] = False
    weights[13:29] = 0.0  # the middle example contributes nothing (e.g. all prompt at PLW 0)
    ref = _grads(lambda h, w, b: lt.ref(h @ w.t(), labels, weights, completion_mask=comp)[0], hidden, weight)
    got = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, completion_mask=comp,
                                                      chunk_size=chunk, strategy=strategy).loss,
                 hidden, weight)
    _check(lt, got, ref, 1e-12)
    assert torch.all(got[1][12:29] == 0)  # masked rows, and the row before a boundary, get no gradient
    assert torch.all(got[1][-1] == 0)  # the last position predicts nothing


def test_non_uniform_upstream_gradient_in_bigger_graph(lt):
    """The loss feeds a larger graph (scaled, squared, mixed with another term) and hidden comes from a
    layer, so the upstream gradient is neither 1 nor the same for every use."""
    hidden, weight, labels, weights, comp = lt.batch(plw=0.1, seed=6)
    proj = torch.randn(hidden.shape[-1], hidden.shape[-1], dtype=torch.float64) / 4

    def run(loss_fn):
        x = hidden.clone().requires_grad_()
        p = proj.clone().requires_grad_()
        w = weight.clone().requires_grad_()
        h = torch.tanh(x @ p)
        loss = loss_fn(h, w)
        total = 3.7 * loss + loss ** 2 - 0.5 * loss * h.pow(2).mean()
        total.backward()
        return [total.detach(), x.grad, p.grad, w.grad]

    ref = run(lambda h, w: lt.ref(h @ w.t(), labels, weights)[0])
    got = run(lambda h, w: linear_cross_entropy(h, w, labels, weights, chunk_size=7).loss)
    _check(lt, got, ref, 1e-12)
    got32 = run(lambda h, w: linear_cross_entropy(h.float(), w.float(), labels, weights, chunk_size=7).loss)
    _check(lt, got32, ref, 1e-5)


def test_bf16_within_tolerance(lt):
    hidden, weight, labels, weights, comp = lt.batch(B=4, T=33, d=32, V=257, plw=0.1, seed=7)
    h16, w16 = hidden.bfloat16(), weight.bfloat16()
    ref = _grads(lambda h, w, b: lt.ref(h @ w.t(), labels, weights)[0], h16.double(), w16.double())
    got = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, chunk_size=16).loss, h16, w16)
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.bfloat16 and got[2].dtype == torch.bfloat16
    _check(lt, got, ref, 1e-2)


def test_gradient_accumulation_equals_one_big_batch(lt):
    """k micro-batches sharing the step's normaliser == one big batch (loss and every gradient)."""
    hidden, weight, labels, weights, comp = lt.batch(B=6, T=21, d=16, V=53, plw=0.1, seed=8)
    weights[4] = 0.0  # a micro-batch row that is entirely masked
    for normalizer in ("weight_sum", "nonzero_tokens", "completion_tokens"):
        big = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, completion_mask=comp,
                                                          normalizer=normalizer).loss,
                     hidden.float(), weight.float())
        parts = [slice(0, 1), slice(1, 4), slice(4, 6)]
        z = sum(normalizer_value(labels[s], weights[s], normalizer, comp[s]) for s in parts)
        h = hidden.float().clone().requires_grad_()
        w = weight.float().clone().requires_grad_()
        total = 0.0
        for s in parts:
            loss = linear_cross_entropy(h[s], w, labels[s], weights[s], completion_mask=comp[s],
                                        normalizer=z).loss
            loss.backward()
            total += float(loss.detach())
        assert abs(total - float(big[0])) <= 1e-6 * abs(float(big[0]))
        assert lt.rel(h.grad, big[1]) <= 1e-6 and lt.rel(w.grad, big[2]) <= 1e-6
        # elementwise too, on the entries that matter
        torch.testing.assert_close(w.grad, big[2], rtol=1e-6, atol=1e-6 * float(big[2].abs().max()))


def test_frozen_head_skips_weight_gradient_and_masked_rows_skip_matmuls(lt):
    hidden, weight, labels, weights, comp = lt.batch(B=2, T=20, d=8, V=31, plw=0.0, seed=9)
    kept = int(((labels[:, 1:] != -100) & (weights[:, 1:] > 0)).sum())
    chunk = 8
    n_chunks = math.ceil(kept / chunk)

    h = hidden.float().requires_grad_()
    w = weight.float()  # frozen: requires_grad False (e.g. LoRA)
    with CountMatmuls() as c:
        loss = linear_cross_entropy(h, w, labels, weights, chunk_size=chunk).loss
        loss.backward()
    assert len(c.calls) == 2 * n_chunks  # logits and dH per chunk, no dW
    assert sum(s[0][0] for _, s in c.calls[::2]) == kept  # only kept rows reach a matmul
    ref = weighted_cross_entropy(hidden.double().requires_grad_() @ weight.t(), labels, weights)
    assert w.grad is None

    w.requires_grad_()
    with CountMatmuls() as c:
        linear_cross_entropy(h, w, labels, weights, chunk_size=chunk).loss.backward()
    assert len(c.calls) == 3 * n_chunks
    with torch.no_grad(), CountMatmuls() as c:
        out = linear_cross_entropy(h, w, labels, weights, chunk_size=chunk)
    assert len(c.calls) == n_chunks and not out.loss.requires_grad
    assert float(out.loss) == pytest.approx(float(ref.loss.detach()), rel=1e-5)


def test_track_masked_nll(lt):
    hidden, weight, labels, weights, comp = lt.batch(plw=0.0, seed=10)
    ref = weighted_cross_entropy(hidden @ weight.t(), labels, weights, completion_mask=comp)
    plain = linear_cross_entropy(hidden, weight, labels, weights, completion_mask=comp)
    assert int(plain.n_prompt) == 0 and math.isnan(float(plain.prompt_nll))
    assert float(plain.completion_nll) == pytest.approx(float(ref.completion_nll), rel=1e-6)
    h = hidden.clone().requires_grad_()
    with CountMatmuls() as c:
        tracked = linear_cross_entropy(h, weight, labels, weights, completion_mask=comp, track_masked_nll=True,
                                       chunk_size=1000)
    assert len(c.calls) == 3  # kept rows: logits + dH; tracked rows: one forward-only matmul
    assert int(tracked.n_prompt) == int(ref.n_prompt) > 0
    assert float(tracked.prompt_nll) == pytest.approx(float(ref.prompt_nll), rel=1e-6)
    assert float(tracked.loss.detach()) == pytest.approx(float(ref.loss), rel=1e-12)
    assert float(tracked.weight_sum) == pytest.approx(float(ref.weight_sum))


def test_two_dim_hidden_is_one_sequence(lt):
    hidden, weight, labels, weights, comp = lt.batch(B=1, plw=0.1, seed=11)
    a = linear_cross_entropy(hidden[0], weight, labels[0], weights[0], completion_mask=comp[0])
    b = linear_cross_entropy(hidden, weight, labels, weights, completion_mask=comp)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, equal_nan=True)


def test_non_contiguous_hidden(lt):
    hidden, weight, labels, weights, comp = lt.batch(plw=0.1, seed=16)
    base = hidden.transpose(0, 1).contiguous().requires_grad_()  # [T, B, d] storage
    linear_cross_entropy(base.transpose(0, 1), weight, labels, weights, chunk_size=4).loss.backward()
    h = hidden.clone().requires_grad_()
    lt.ref(h @ weight.t(), labels, weights)[0].backward()
    assert lt.rel(base.grad.transpose(0, 1), h.grad) < 1e-12


def test_backward_twice_is_a_clear_error(lt):
    hidden, weight, labels, weights, comp = lt.batch(seed=12)
    h = hidden.clone().requires_grad_()
    loss = linear_cross_entropy(h, weight, labels, weights).loss
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        loss.backward()


@pytest.mark.parametrize("bad,match", [
    (dict(weights="zeros"), "denominator is 0"),
    (dict(normalizer=-1.0), "denominator is -1"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(backend="triton"), "backend must be one of"),
    (dict(lm_head_weight="wrong_d"), "lm_head_weight must be"),
    (dict(lm_head_weight="float32"), "dtypes differ"),
    (dict(bias="wrong"), "bias must be"),
])
def test_engine_bad_input(lt, bad, match):
    hidden, weight, labels, weights, comp = lt.batch(seed=13)
    kw = {k: v for k, v in bad.items() if k not in ("weights", "lm_head_weight", "bias")}
    if bad.get("weights") == "zeros":
        weights = torch.zeros_like(weights)
    if bad.get("lm_head_weight") == "wrong_d":
        weight = weight[:, :-1]
    elif bad.get("lm_head_weight") == "float32":
        weight = weight.float()
    if bad.get("bias") == "wrong":
        kw["bias"] = torch.zeros(3, dtype=hidden.dtype)
    with pytest.raises(ValueError, match=match):
        linear_cross_entropy(hidden, weight, labels, weights, **kw)


def test_optional_backends_fail_clearly_when_absent(lt, monkeypatch):
    import sys
    hidden, weight, labels, weights, comp = lt.batch(seed=14)
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # as if not installed
    with pytest.raises(ImportError, match=r"plw\[gpu\]"):
        linear_cross_entropy(hidden, weight, labels, weights, backend="liger")
    monkeypatch.setitem(sys.modules, "cut_cross_entropy", None)
    with pytest.raises(ImportError, match=r"plw\[gpu\]"):
        linear_cross_entropy(hidden, weight, labels, weights, backend="cce")


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cce", "liger"])
@pytest.mark.parametrize("plw", [0.1, "random"])
def test_gpu_backends_equal_engine(lt, backend, plw):
    """CCE / Liger per-token losses weighted by plw: the engine's loss and gradients, both within bf16
    precision of an fp64 reference on the same rounded inputs (CCE's kernel takes bf16 only)."""
    pytest.importorskip({"cce": "cut_cross_entropy", "liger": "liger_kernel"}[backend])
    from plw.loss import weighted_cross_entropy

    hidden, weight, labels, weights, comp = lt.batch(B=4, T=257, d=256, V=32003, plw=plw, seed=15)
    labels, weights = labels.cuda(), weights.cuda()
    args = [t.cuda().to(torch.bfloat16) for t in (hidden, weight)]
    ref = _grads(lambda h, w, b: weighted_cross_entropy(h @ w.t(), labels, weights).loss,
                 *[a.double() for a in args])
    engine = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights).loss, *args)
    got = _grads(lambda h, w, b: linear_cross_entropy(h, w, labels, weights, backend=backend).loss, *args)
    assert got[1].dtype == got[2].dtype == torch.bfloat16
    _check(lt, engine, ref, 1e-2)
    _check(lt, got, ref, 1e-2)
    _check(lt, got, engine, 2e-2)
