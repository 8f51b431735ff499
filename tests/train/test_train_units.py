"""Collator, diagnostics and regularizers against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from plw.loss import weighted_cross_entropy
from plw.train.collator import PLWCollator
from plw.train.diagnostics import loss_rsd, tensor_group, weight_distances
from plw.train.forward import attach_plw_loss
from plw.train.regularizers import minkowski_penalty, set_dropout
from plw.train.tiny import tiny_llama

from train_helpers import synthetic_rows, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_pad_right_and_pack_layout(tok):
    rows = synthetic_rows(tok, 3, plw=0.2)
    pad = PLWCollator(tok.pad_token_id)(rows)
    n = max(len(r["input_ids"]) for r in rows)
    assert pad["input_ids"].shape == (3, n)
    k = len(rows[0]["input_ids"])
    assert pad["attention_mask"][0, :k].all() and not pad["attention_mask"][0, k:].any()
    assert (pad["labels"][0, k:] == -100).all() and (pad["weights"][0, k:] == 0).all()
    assert pad["weights"][0, :k].tolist() == pytest.approx(rows[0]["weights"])
    pack = PLWCollator(tok.pad_token_id, packing=True)(rows)
    lens = [len(r["input_ids"]) for r in rows]
    assert pack["input_ids"].shape == (1, sum(lens)) and "attention_mask" not in pack
    assert pack["position_ids"][0].tolist() == sum((list(range(m)) for m in lens), [])
    starts = np.cumsum([0] + lens[:-1])
    assert all(pack["labels"][0, s] == -100 and pack["weights"][0, s] == 0 for s in starts)


def test_packing_equals_padding_loss_and_hidden_states(tok):
    """Packed (block-diagonal attention, cut boundary targets) == padded, against full-logit reference."""
    model = tiny_llama(tok, seed=1, hidden_size=32).double()
    attach_plw_loss(model)
    rows = synthetic_rows(tok, 4, plw=0.3, seed=3)
    pad = PLWCollator(tok.pad_token_id)(rows)
    pack = PLWCollator(tok.pad_token_id, packing=True)(rows)
    ref = weighted_cross_entropy(model(input_ids=pad["input_ids"], attention_mask=pad["attention_mask"]).logits,
                                 pad["labels"], pad["weights"].double())
    out = {}
    for name, b in (("pad", pad), ("pack", pack)):
        out[name] = model(input_ids=b["input_ids"], attention_mask=b.get("attention_mask"),
                          position_ids=b.get("position_ids"), labels=b["labels"],
                          plw_weights=b["weights"].double(), plw_completion_mask=b["completion_mask"])
    assert float(out["pad"]["loss"]) == pytest.approx(float(ref.loss), rel=1e-12)
    assert float(out["pack"]["loss"]) == pytest.approx(float(ref.loss), rel=1e-12)
    assert float(out["pack"]["weight_sum"]) == pytest.approx(float(ref.weight_sum), rel=1e-12)
    # A wrong mask (attention across examples) would change the packed hidden states: check them.
    h_pack = model.model(input_ids=pack["input_ids"], position_ids=pack["position_ids"], use_cache=False)[0][0]
    h_pad = model.model(input_ids=pad["input_ids"], attention_mask=pad["attention_mask"])[0]
    pos = 0
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        torch.testing.assert_close(h_pack[pos:pos + k], h_pad[i, :k], rtol=1e-10, atol=1e-10)
        pos += k


def test_loss_rsd_matches_numpy():
    rng = np.random.default_rng(0)
    xs = rng.uniform(1, 3, size=23)
    expect = np.mean([xs[i:i + 5].std() / xs[i:i + 5].mean() for i in range(0, 20, 5)])
    assert loss_rsd(xs.tolist(), 5) == pytest.approx(expect, rel=1e-12)
    assert math.isnan(loss_rsd([1.0, 2.0], 5))


def test_weight_distances_independent():
    rng = np.random.default_rng(1)
    init = {"model.layers.0.self_attn.q_proj.weight": rng.normal(size=(4, 4)),
            "model.layers.0.mlp.up_proj.weight": rng.normal(size=(8, 4)),
            "model.embed_tokens.weight": rng.normal(size=(10, 4))}
    cur = {k: v + rng.normal(scale=0.1, size=v.shape) for k, v in init.items()}
    d = weight_distances({k: torch.tensor(v) for k, v in init.items()},
                         {k: torch.tensor(v) for k, v in cur.items()}, p=1.5)
    diffs = {k: (cur[k] - init[k]).ravel() for k in init}
    alld = np.concatenate(list(diffs.values()))
    assert d["weight_l2"] == pytest.approx(np.linalg.norm(alld), rel=1e-12)
    assert d["weight_minkowski"] == pytest.approx(np.sum(np.abs(alld) ** 1.5) ** (1 / 1.5), rel=1e-12)
    assert d["weight_l2/attention"] == pytest.approx(np.linalg.norm(diffs["model.layers.0.self_attn.q_proj.weight"]))
    assert d["weight_minkowski_mean"] == pytest.approx(
        np.mean([np.sum(np.abs(v) ** 1.5) ** (1 / 1.5) for v in diffs.values()]), rel=1e-12)
    assert tensor_group("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight") == "lora"
    assert tensor_group("lm_head.weight") == "lm_head" and tensor_group("model.norm.weight") == "norm"


def test_minkowski_penalty_value_and_gradient():
    init = {"a": torch.zeros(3), "b": torch.ones(2, 2)}
    a = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.0]))
    b = torch.nn.Parameter(torch.ones(2, 2) + 0.5)
    pen = minkowski_penalty([("a", a), ("b", b)], init, p=1.0)
    assert float(pen) == pytest.approx((3.0 + 2.0) / 2)  # mean over tensors of L1 distance
    pen.backward()
    assert a.grad.tolist() == [0.5, -0.5, 0.0]  # subgradient 0 at zero distance
    assert torch.allclose(b.grad, torch.full((2, 2), 0.5))


def test_dropout_settings(tok):
    model = tiny_llama(tok, seed=0, hidden_size=32)
    hooks = set_dropout(model, attention=0.2, hidden=0.3)
    assert model.config.attention_dropout == 0.2
    assert model.model.layers[0].self_attn.attention_dropout == 0.2
    assert len(hooks) == len(model.model.layers)  # Llama has no hidden-dropout setting: hooks
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    model.eval()
    a, b = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(input_ids=ids).logits, a)


def test_metrics_json_is_strict():
    import json

    from plw.io import json_safe

    text = json.dumps(json_safe({"loss_rsd": float("nan"), "x": [1.0, float("inf")], "y": {"z": 2.0}}),
                      allow_nan=False)
    assert json.loads(text) == {"loss_rsd": None, "x": [1.0, None], "y": {"z": 2.0}}
