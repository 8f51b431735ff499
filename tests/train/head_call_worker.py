"""Worker for test_train_head_call: FSDP2 with the LM head as its own unit, one gloo process on CPU."""

import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))


def main(port: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=0, world_size=1)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from plw.train.forward import LossRequest, attach_plw_loss
    from plw.train.tiny import tiny_llama
    from train_helpers import tiny_tokenizer

    tok = tiny_tokenizer()
    ids = torch.randint(4, len(tok), (2, 12), generator=torch.Generator().manual_seed(0))
    weights = torch.full(ids.shape, 0.1)
    weights[:, 6:] = 1.0
    z = torch.tensor(13.7, dtype=torch.float64)
    ref = attach_plw_loss(tiny_llama(tok, seed=0, hidden_size=32))
    ref(input_ids=ids, labels=ids, loss_request=LossRequest(weights.clone(), None, z.clone()))["loss"].backward()
    want = ref.lm_head.weight.grad
    for policy in (None, MixedPrecisionPolicy(param_dtype=torch.bfloat16, output_dtype=torch.bfloat16)):
        model = attach_plw_loss(tiny_llama(tok, seed=0, hidden_size=32))
        kw = {} if policy is None else {"mp_policy": policy}
        fully_shard(model.lm_head, **kw)  # the head in a unit of its own: sharded outside its forward
        for layer in model.model.layers:
            fully_shard(layer, **kw)
        fully_shard(model, **kw)
        req = LossRequest(weights.clone(), None, z.clone())
        model(input_ids=ids, labels=ids, loss_request=req)["loss"].backward()
        got = model.lm_head.weight.grad.full_tensor()
        err = float((got - want).norm() / want.norm())
        # The request's tensors are never cast, whatever the policy.
        assert req.weights.dtype == torch.float32 and float(req.weights[0, 0]) == float(torch.tensor(0.1))
        assert req.normalizer.dtype == torch.float64 and req.loss_value.dtype == torch.float32
        print("policy" if policy else "fp32", err, flush=True)
        assert err < (1e-6 if policy is None else 3e-2), err
    dist.destroy_process_group()
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1])
