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

import torch

from plw.train.forward import PLWLossRequest, attach_plw_loss, detach_plw_loss
from plw.train.tiny import tiny_llama
from train_helpers import tiny_tokenizer


def test_head_module_is_called_with_the_request():
    tok = tiny_tokenizer()
    model = attach_plw_loss(tiny_llama(tok, seed=0, hidden_size=32))
    seen = []
    handle = model.lm_head.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs.get("plw_request")), with_kwargs=True)
    ids = torch.randint(4, len(tok), (2, 9), generator=torch.Generator().manual_seed(1))
    req = PLWLossRequest(torch.ones(ids.shape))
    out = model(input_ids=ids, labels=ids, plw=req)
    assert seen == [req] and req.result is not None
    assert torch.equal(out["loss"].detach().float(), req.loss_value)
    # Without a request the head is a plain linear layer again (generation, evaluation).
    logits = model(input_ids=ids).logits
    assert logits.shape == (2, 9, len(tok)) and seen[-1] is None
    handle.remove()
    detach_plw_loss(model)
    assert "_plw_original_forward" not in model.lm_head.__dict__


def test_fsdp2_head_in_its_own_unit_and_bf16_policy():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    worker = Path(__file__).with_name("head_call_worker.py")
    res = subprocess.run([sys.executable, str(worker), port], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout[-2000:] + res.stderr[-3000:]
