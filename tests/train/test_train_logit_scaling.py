"""Models that scale or transform logits (Granite, Cohere): PLW 1 equals HF's own loss; an unknown
transform is refused."""

from __future__ import annotations

import pytest
import torch

from plw.errors import PLWError

def _tiny(kind: str):
    from transformers import CohereConfig, CohereForCausalLM, GraniteConfig, GraniteForCausalLM

    common = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    torch.manual_seed(0)
    if kind == "granite":
        model = GraniteForCausalLM(GraniteConfig(logits_scaling=4.0, **common))
    else:
        model = CohereForCausalLM(CohereConfig(logit_scale=0.25, **common))
    return model.double().eval()


@pytest.mark.parametrize("kind", ["granite", "cohere"])
def test_scaled_logits_plw1_equals_hf_loss(kind):
    from plw.train.forward import attach_plw_loss, detach_plw_loss

    model = _tiny(kind)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        attach_plw_loss(model)
        ours = model(input_ids=ids, attention_mask=mask, labels=ids, plw_weights=torch.ones_like(ids, dtype=torch.float64),
                     plw_completion_mask=torch.ones_like(ids, dtype=torch.bool))["loss"]
        detach_plw_loss(model)
    assert float(ours) == pytest.approx(float(ref), rel=1e-6)  # HF computes its loss in fp32


def test_unknown_logit_transform_is_refused():
    from plw.train.forward import attach_plw_loss, logit_factor
    from plw.train.tiny import tiny_llama
    from train_helpers import tiny_tokenizer

    model = tiny_llama(tiny_tokenizer(), seed=0, hidden_size=32)
    assert logit_factor(model.config) == 1.0
    model.config.logits_scaling = 2.0  # e.g. a remote-code model that scales its logits
    with pytest.raises(PLWError, match="logits_scaling"):
        attach_plw_loss(model)
    cfg = _tiny("granite").config
    assert logit_factor(cfg) == 0.25 and logit_factor(_tiny("cohere").config) == 0.25
