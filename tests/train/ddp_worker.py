"""Worker for the 2-process gloo test: `torchrun --nproc_per_node N ddp_worker.py OUT PER_DEVICE GA`.

Trains the tiny model on fixed synthetic rows with PLWTrainer and saves the final weights and the
per-step losses (rank 0) to OUT. Run with N=1 and N=2 at the same global batch and compare.
"""

import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from train_helpers import synthetic_rows, tiny_tokenizer  # noqa: E402


def main(out: str, per_device: int, grad_accum: int) -> None:
    from transformers import TrainingArguments
    from safetensors.torch import save_file

    from plw.train.collator import PLWCollator
    from plw.train.run import _ListDataset
    from plw.train.tiny import tiny_llama
    from plw.train.trainer import PLWTrainer

    tok = tiny_tokenizer()
    rows = synthetic_rows(tok, 32, plw=0.3)
    model = tiny_llama(tok, seed=0, hidden_size=32)
    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=per_device, gradient_accumulation_steps=grad_accum,
        learning_rate=1e-2, max_steps=3, optim="sgd", remove_unused_columns=False, report_to="none",
        use_cpu=True, disable_tqdm=True, train_sampling_strategy="sequential", save_strategy="no",
        logging_steps=1, max_grad_norm=0, ddp_find_unused_parameters=False, ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", 1)) > 1 else None)
    trainer = PLWTrainer(model=model, args=args, train_dataset=_ListDataset(rows),
                         data_collator=PLWCollator(tok.pad_token_id))
    trainer.train()
    if trainer.accelerator.is_main_process:
        state = {k: v.detach().contiguous() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}
        save_file(state, os.path.join(out, "weights.safetensors"))
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        with open(os.path.join(out, "losses.json"), "w") as fh:
            json.dump({"losses": losses, "world": trainer.accelerator.num_processes}, fh)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
