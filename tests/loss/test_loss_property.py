"""Property test: engine == fp64 loop reference over random shapes, weights, chunks and options."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from plw.loss import linear_cross_entropy


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(2, 12), d=st.integers(1, 6), V=st.integers(2, 9),
       chunk=st.integers(1, 40), eps=st.sampled_from([0.0, 0.1]), cap=st.sampled_from([None, 2.0]),
       normalizer=st.sampled_from(["weight_sum", "nonzero_tokens", 3.0]), seed=st.integers(0, 10_000))
def test_engine_equals_reference(lt, B, T, d, V, chunk, eps, cap, normalizer, seed):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, d, generator=g, dtype=torch.float64)
    weight = torch.randn(V, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < 0.2] = -100
    weights = torch.rand(B, T, generator=g, dtype=torch.float64)
    weights[torch.rand(B, T, generator=g) < 0.3] = 0.0
    weights[0, 1] = 0.5
    labels[0, 1] = 0  # at least one target with weight > 0
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    out = linear_cross_entropy(h, w, labels, weights, normalizer=normalizer, label_smoothing=eps,
                               softcap=cap, chunk_size=chunk)
    out.loss.backward()
    h2 = hidden.clone().requires_grad_()
    w2 = weight.clone().requires_grad_()
    ref, stats = lt.ref(h2 @ w2.t(), labels, weights, normalizer=normalizer, label_smoothing=eps, softcap=cap)
    ref.backward()
    assert abs(float(out.loss.detach()) - float(ref.detach())) <= 1e-12 * max(1.0, abs(float(ref.detach())))
    assert torch.allclose(h.grad, h2.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(w.grad, w2.grad, rtol=1e-10, atol=1e-12)
    assert int(out.n_completion) == int(((labels[:, 1:] != -100) & (weights[:, 1:] >= 1)).sum())
