"""`accelerate launch --config_file FSDP.yaml fsdp_worker.py ARGS [--next ARGS ...]`: `plw train ARGS` under
FSDP on CPU, once per `--next`-separated group, in the same processes (one launch, several runs).

accelerate (1.x) enables FSDP on GPU-type devices only: `AcceleratorState.__init__` promotes MULTI_GPU,
MULTI_XPU, ... to FSDP when an FSDP plugin is given, but leaves MULTI_CPU (gloo) alone, so on CPU an FSDP
config trains with DDP (plw refuses that: `plw.train.run.check_sharding`). torch's FSDP2 (`fully_shard`)
itself runs on CPU with gloo. This worker promotes MULTI_CPU to FSDP the way accelerate promotes
MULTI_GPU and then runs the real `plw train` command, so everything plw and the Trainer do under FSDP
(sharded DTensor parameters, the head's gather, gradient reduce-scatter, FSDP checkpoints and the
full-state-dict save) runs on CPU.
"""

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")


def emulate_fsdp_on_cpu() -> None:
    import accelerate.state as state
    from accelerate.utils import DistributedType

    original = state.AcceleratorState.__init__

    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    state.AcceleratorState.__init__ = __init__


def main(argv: list[str]) -> int:
    emulate_fsdp_on_cpu()
    from train_helpers import run_train_groups

    return run_train_groups(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
