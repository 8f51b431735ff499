"""`torchrun --nproc_per_node N trl_ddp_worker.py OUT PER_DEVICE GA PLW[,PLW...]`: for each PLW,
PLWSFTTrainer (or TRL's SFTTrainer with completion_only_loss for "trl") on local prompt-completion
data, 3 steps; rank 0 saves the final weights and the per-step losses to OUT/PLW/ (one launch)."""

import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "train")]


def main(out: str, per_device: int, accum: int, plws: str) -> None:
    for plw in plws.split(","):
        os.makedirs(os.path.join(out, plw), exist_ok=True)
        train_one(os.path.join(out, plw), per_device, accum, plw)


def train_one(out: str, per_device: int, accum: int, plw: str) -> None:
    from safetensors.torch import save_file

    from trl_helpers import losses, prompt_completion, run

    world = int(os.environ.get("WORLD_SIZE", 1))
    kw = dict(per_device=per_device, accum=accum, ddp_backend="gloo" if world > 1 else None,
              ddp_find_unused_parameters=False)
    if plw == "trl":
        model, trainer = run("pc", prompt_completion(32), out, trl_completion_only=True, **kw)
    else:
        model, trainer = run("pc", prompt_completion(32), out, plw=float(plw), **kw)
    if trainer.accelerator.is_main_process:
        state = {k: v.detach().contiguous() for k, v in trainer.accelerator.unwrap_model(model).state_dict().items()}
        save_file(state, os.path.join(out, "weights.safetensors"))
        with open(os.path.join(out, "losses.json"), "w") as fh:
            json.dump({"losses": losses(trainer), "world": trainer.accelerator.num_processes}, fh)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
