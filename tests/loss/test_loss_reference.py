"""weighted_cross_entropy (materialised logits) against the fp64 loop reference and PyTorch's CE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from plw.loss import normalizer_value, weighted_cross_entropy


def _logits(lt, seed=0, plw=0.1, **kw):
    h, w, labels, weights, comp = lt.batch(seed=seed, plw=plw, **kw)
    return h @ w.t(), labels, weights, comp


@pytest.mark.parametrize("plw", [0.0, 1e-4, 0.1, 1.0, "random"])
@pytest.mark.parametrize("normalizer", ["weight_sum", "nonzero_tokens", "completion_tokens", 7.5])
def test_matches_loop_reference(lt, plw, normalizer):
    logits, labels, weights, comp = _logits(lt, plw=plw)
    out = weighted_cross_entropy(logits, labels, weights, completion_mask=comp, normalizer=normalizer)
    ref, stats = lt.ref(logits, labels, weights, completion_mask=comp, normalizer=normalizer)
    assert out.loss.dtype == torch.float64
    assert abs(float(out.loss) - float(ref)) <= 1e-12 * abs(float(ref))
    assert out.n_prompt == stats["n_prompt"] and out.n_completion == stats["n_completion"]
    assert float(out.prompt_nll) == pytest.approx(stats["prompt_nll"], rel=1e-6)
    assert float(out.completion_nll) == pytest.approx(stats["completion_nll"], rel=1e-6)
    assert float(out.weight_sum) == pytest.approx(stats["weight_sum"], rel=1e-12)


@pytest.mark.parametrize("eps,cap", [(0.1, None), (0.0, 2.5), (0.3, 1.5)])
def test_label_smoothing_and_softcap(lt, eps, cap):
    logits, labels, weights, comp = _logits(lt, plw="random", seed=3)
    out = weighted_cross_entropy(logits, labels, weights, label_smoothing=eps, softcap=cap)
    ref, _ = lt.ref(logits, labels, weights, label_smoothing=eps, softcap=cap)
    assert abs(float(out.loss) - float(ref)) <= 1e-12 * abs(float(ref))


def test_plw_endpoints_equal_masking_and_unmasked_training(lt):
    """weight_sum at PLW 0 is Alpaca's prompt masking; at PLW 1 it is plain unmasked mean CE."""
    logits, labels, _, comp = _logits(lt)
    V = logits.shape[-1]
    flat = logits[:, :-1].reshape(-1, V)
    w0 = torch.where(comp, 1.0, 0.0).double()
    masked = torch.where(comp, labels, -100)
    alpaca = F.cross_entropy(flat, masked[:, 1:].reshape(-1))
    assert float(weighted_cross_entropy(logits, labels, w0).loss) == pytest.approx(float(alpaca), rel=1e-12)
    unmasked = F.cross_entropy(flat, labels[:, 1:].reshape(-1))
    w1 = torch.ones_like(w0)
    assert float(weighted_cross_entropy(logits, labels, w1).loss) == pytest.approx(float(unmasked), rel=1e-12)
    smooth = F.cross_entropy(flat, labels[:, 1:].reshape(-1), label_smoothing=0.2)
    assert float(weighted_cross_entropy(logits, labels, w1, label_smoothing=0.2).loss) == \
        pytest.approx(float(smooth), rel=1e-12)


def test_weight_sum_is_continuous_in_plw(lt):
    logits, labels, _, comp = _logits(lt)
    losses = [float(weighted_cross_entropy(logits, labels, torch.where(comp, 1.0, p).double()).loss)
              for p in (0.0, 1e-9, 1e-6)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-8) and losses[2] == pytest.approx(losses[0], rel=1e-5)


def test_gradients_match_reference(lt):
    logits, labels, weights, comp = _logits(lt, plw="random", seed=5)
    a = logits.clone().requires_grad_()
    weighted_cross_entropy(a, labels, weights, label_smoothing=0.1, softcap=3.0).loss.backward()
    b = logits.clone().requires_grad_()
    lt.ref(b, labels, weights, label_smoothing=0.1, softcap=3.0)[0].backward()
    assert lt.rel(a.grad, b.grad) < 1e-12


def test_fp32_logits_accumulate_in_fp32_and_bf16_is_upcast(lt):
    logits, labels, weights, _ = _logits(lt, plw=0.1)
    ref, _ = lt.ref(logits, labels, weights)
    out32 = weighted_cross_entropy(logits.float(), labels, weights)
    assert out32.loss.dtype == torch.float32
    assert abs(float(out32.loss) / float(ref) - 1) < 1e-6
    bf = logits.bfloat16()
    out16 = weighted_cross_entropy(bf, labels, weights)
    ref16, _ = lt.ref(bf.double(), labels, weights)
    assert out16.loss.dtype == torch.float32
    assert abs(float(out16.loss) / float(ref16) - 1) < 1e-6


def test_normalizer_value_formulas(lt):
    _, labels, weights, comp = _logits(lt, plw=0.25)
    valid = labels[:, 1:] != -100
    w = weights[:, 1:]
    assert float(normalizer_value(labels, weights)) == pytest.approx(float(w[valid].sum()), rel=1e-12)
    assert int(normalizer_value(labels, weights, "nonzero_tokens")) == int((valid & (w > 0)).sum())
    assert int(normalizer_value(labels, weights, "completion_tokens", comp)) == int((valid & comp[:, 1:]).sum())
    assert float(normalizer_value(labels, weights, 12.5)) == 12.5
    # One micro-batch may legitimately contribute 0 (it is summed with others before use).
    assert float(normalizer_value(labels, torch.zeros_like(weights))) == 0.0


def test_stats_nan_only_when_count_is_zero(lt):
    logits, labels, _, comp = _logits(lt)
    out = weighted_cross_entropy(logits, labels, torch.ones(labels.shape, dtype=torch.float64))
    # completion_mask=None: weight >= 1 marks completion, so every target is completion here.
    assert int(out.n_prompt) == 0 and math.isnan(float(out.prompt_nll))
    assert float(out.prompt_nll_sum) == 0.0
    assert float(out.completion_nll_sum) == pytest.approx(float(out.completion_nll) * int(out.n_completion))


@pytest.mark.parametrize("bad,match", [
    (dict(weights="zeros"), "denominator is 0"),
    (dict(normalizer=0.0), "denominator is 0"),
    (dict(normalizer="tokens"), "normalizer must be one of"),
    (dict(weights="negative"), ">= 0"),
    (dict(weights="nan"), "NaN"),
    (dict(labels="big"), "vocabulary size"),
    (dict(labels="float"), "integer"),
    (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(softcap=0.0), "softcap"),
])
def test_bad_input_raises_clear_value_error(lt, bad, match):
    logits, labels, weights, _ = _logits(lt)
    kw = {k: v for k, v in bad.items() if k not in ("weights", "labels")}
    if bad.get("weights") == "zeros":
        weights = torch.zeros_like(weights)
    elif bad.get("weights") == "negative":
        weights = weights.clone(); weights[0, 3] = -0.5
    elif bad.get("weights") == "nan":
        weights = weights.clone(); weights[0, 3] = float("nan")
    if bad.get("labels") == "big":
        labels = labels.clone(); labels[0, 5] = logits.shape[-1]
    elif bad.get("labels") == "float":
        labels = labels.double()
    with pytest.raises(ValueError, match=match):
        weighted_cross_entropy(logits, labels, weights, **kw)


def test_all_ignored_labels_raise_not_nan(lt):
    logits, labels, weights, _ = _logits(lt)
    with pytest.raises(ValueError, match="label -100 or weight 0"):
        weighted_cross_entropy(logits, torch.full_like(labels, -100), weights)
