"""Local data and one-call training runs for the TRL integration tests (tiny model, CPU, fp32)."""

from __future__ import annotations

import random


def _sentence(rng, n):
    words = "hello world this is text number of the test".split()
    return " ".join(rng.choice(words) for _ in range(n))


def prompt_completion(n: int = 24, seed: int = 0, long_prompts: int = 0) -> list[dict]:
    """Standard prompt-completion rows; `long_prompts` of them have prompts of ~40 words."""
    rng = random.Random(seed)
    rows = [{"prompt": _sentence(rng, rng.randint(3, 12)), "completion": " " + _sentence(rng, rng.randint(2, 8))}
            for _ in range(n)]
    for i in range(long_prompts):
        rows[3 * i + 1]["prompt"] = _sentence(rng, 40)
    return rows


def conversational(n: int = 24, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": [{"role": "user", "content": _sentence(rng, rng.randint(3, 9))}],
             "completion": [{"role": "assistant", "content": _sentence(rng, rng.randint(2, 6))}]}
            for _ in range(n)]


def messages(n: int = 24, seed: int = 2) -> list[dict]:
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": _sentence(rng, 5)},
                          {"role": "assistant", "content": _sentence(rng, rng.randint(2, 6))},
                          {"role": "user", "content": _sentence(rng, 3)},
                          {"role": "assistant", "content": _sentence(rng, 2)}]} for _ in range(n)]


def config_kwargs(out, per_device=4, accum=2, steps=3, **kw) -> dict:
    return dict(output_dir=str(out), per_device_train_batch_size=per_device, gradient_accumulation_steps=accum,
                max_steps=steps, learning_rate=0.05, optim="sgd", max_grad_norm=0, lr_scheduler_type="constant",
                warmup_steps=0, report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
                disable_tqdm=True, train_sampling_strategy="sequential", seed=0, dataset_num_proc=None,
                bf16=False, **kw)  # fp32: TRL defaults to bf16 autocast, even on the CPU


def run(kind: str, rows, out, *, plw=None, trl_completion_only=None, **kw):
    """Train the tiny model with TRL's SFTTrainer (plw=None) or PLWSFTTrainer; returns (model, trainer)."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from plw.integrations.trl import PLWSFTConfig, PLWSFTTrainer
    from plw.train.tiny import tiny_llama
    from train_helpers import tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=0, hidden_size=32)
    ds = datasets.Dataset.from_list(rows)
    if plw is None:
        args = SFTConfig(**config_kwargs(out, **kw), completion_only_loss=trl_completion_only)
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    else:
        args = PLWSFTConfig(**config_kwargs(out, **kw), prompt_loss_weight=plw)
        trainer = PLWSFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    trainer.train()
    return model, trainer


def losses(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]
