"""The loss runs inside the LM head's own forward call, with its inputs in a plain request object.

FSDP and DeepSpeed ZeRO-3 gather a module's sharded weight just before that module's forward and
reduce its gradient after; mixed-precision wrappers cast floating tensors found in a forward call's
arguments. Both hold only if the head is *called* and the weights travel in a non-container object.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plw.errors import PLWError
from plw.train.forward import LossRequest, attach_plw_loss, detach_plw_loss
from plw.train.tiny import tiny_llama
from train_helpers import tiny_tokenizer


def test_head_module_is_called_with_the_request():
    tok = tiny_tokenizer()
    model = attach_plw_loss(tiny_llama(tok, seed=0, hidden_size=32))
    seen = []
    handle = model.lm_head.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs.get("loss_request")), with_kwargs=True)
    ids = torch.randint(4, len(tok), (2, 9), generator=torch.Generator().manual_seed(1))
    req = LossRequest(torch.ones(ids.shape))
    out = model(input_ids=ids, labels=ids, loss_request=req)
    assert seen == [req] and req.result is not None
    assert torch.equal(out["loss"].detach().float(), req.loss_value)
    # Without a request the head is a plain linear layer again (generation, evaluation).
    logits = model(input_ids=ids).logits
    assert logits.shape == (2, 9, len(tok)) and seen[-1] is None
    handle.remove()
    detach_plw_loss(model)
    assert "forward" not in model.lm_head.__dict__ and "forward" not in model.__dict__


def test_fsdp2_head_in_its_own_unit_and_bf16_policy():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    worker = Path(__file__).with_name("head_call_worker.py")
    res = subprocess.run([sys.executable, str(worker), port], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout[-2000:] + res.stderr[-3000:]


def test_patched_model_pickles_keeps_signature_and_passes_extra_keywords():
    import inspect
    import pickle

    tok = tiny_tokenizer()
    model = attach_plw_loss(tiny_llama(tok, seed=0, hidden_size=32))
    # transformers inspects forward's signature (e.g. logits_to_keep when generating)
    assert "logits_to_keep" in inspect.signature(model.forward).parameters
    ids = torch.randint(4, len(tok), (1, 7), generator=torch.Generator().manual_seed(2))
    assert model(input_ids=ids, logits_to_keep=1).logits.shape == (1, 1, len(tok))
    clone = pickle.loads(pickle.dumps(model))
    req = LossRequest(torch.ones(ids.shape))
    a = clone(input_ids=ids, labels=ids, loss_request=req)["loss"]
    b = model(input_ids=ids, labels=ids, loss_request=LossRequest(torch.ones(ids.shape)))["loss"]
    assert torch.equal(a, b)
    attach_plw_loss(model)  # idempotent
    assert model.forward.module is model


def test_lora_on_the_head_is_refused():
    from peft import LoraConfig, get_peft_model

    tok = tiny_tokenizer()
    model = get_peft_model(tiny_llama(tok, seed=0, hidden_size=32),
                           LoraConfig(r=2, target_modules=["q_proj", "lm_head"]))
    with pytest.raises(PLWError) as err:
        attach_plw_loss(model)
    assert err.value.field == "lora.target_modules"
    # modules_to_save trains the head itself: allowed, and the loss equals the model's own.
    model = get_peft_model(tiny_llama(tok, seed=0, hidden_size=32),
                           LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"]))
    ids = torch.randint(4, len(tok), (2, 8), generator=torch.Generator().manual_seed(3))
    model.eval()
    want = model(input_ids=ids, labels=ids).loss
    mixed = model(input_ids=ids, adapter_names=["default", "__base__"]).logits
    attach_plw_loss(model)
    got = model(input_ids=ids, labels=ids, plw_weights=torch.ones(ids.shape))["loss"]
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    # PEFT passes extra keywords to the head (mixed-adapter batches): still the head as it was.
    assert torch.equal(model(input_ids=ids, adapter_names=["default", "__base__"]).logits, mixed)
