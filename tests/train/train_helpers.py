"""Shared helpers of the plw.train tests: a tiny tokenizer and hand-built weighted rows.

Hand-built rows (random ids, a prompt/completion split) test the trainer's arithmetic without the
data package; the end-to-end tests go through `plw.data` as users do.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def tiny_tokenizer():
    from plw.data.tokenizer import train_tokenizer

    return train_tokenizer([f"hello world this is text number {i} of the test" for i in range(200)],
                           vocab_size=300)


def synthetic_rows(tok, n: int, *, plw: float, seed: int = 0, min_len: int = 6, max_len: int = 20,
                   prompt_labels_masked: bool = False) -> list[dict]:
    """n examples: random ids, first part prompt (weight plw), rest completion (weight 1)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        k = int(torch.randint(min_len, max_len, (1,), generator=g))
        p = int(torch.randint(2, k - 2, (1,), generator=g))
        ids = torch.randint(4, len(tok), (k,), generator=g).tolist()
        comp = [False] * p + [True] * (k - p)
        labels = [(-100 if (prompt_labels_masked and not c) else t) for t, c in zip(ids, comp)]
        rows.append({"input_ids": ids, "attention_mask": [1] * k, "labels": labels,
                     "weights": [1.0 if c else plw for c in comp], "completion_mask": comp})
    return rows


def run_train_groups(argv: list[str]) -> int:
    """`plw train` once per group of arguments separated by `--next` (one launch, several runs)."""
    from plw.cli import main as plw_main

    groups: list[list[str]] = [[]]
    for arg in argv:
        if arg == "--next":
            groups.append([])
        else:
            groups[-1].append(arg)
    for group in groups:
        rc = plw_main(["train", *group])
        if rc:
            return rc
    return 0


def assert_like_one_process(out, one, ref: dict, tag: str, *, lora: bool) -> list[dict]:
    """A sharded run's outputs in `out` equal the one-process run in `one` (metrics `ref`), 3 steps.

    Checks metrics.json (losses, validation NLL, tokens, every weight distance), the step numbers in
    metrics.jsonl and the saved weights (same keys and dtypes, equal values). Returns the run's
    metrics.jsonl rows for the caller's own checks.
    """
    import json

    import pytest
    import torch
    from safetensors.torch import load_file

    from plw.train.callbacks import read_metrics

    got = json.loads((out / "metrics.json").read_text())
    assert got["global_step"] == 3, tag
    assert got["step_losses"] == pytest.approx(ref["step_losses"], rel=1e-6), tag
    assert got["val_completion_nll"] == pytest.approx(ref["val_completion_nll"], rel=1e-6), tag
    assert got["train_tokens"] == ref["train_tokens"], tag
    # diagnostics: distance of the gathered final weights from the gathered initial snapshot
    diag = {k: v for k, v in ref.items() if k.startswith("weight_")}
    assert diag["weight_l2"] > 0 and sorted(diag) == sorted(k for k in got if k.startswith("weight_")), tag
    for key, value in diag.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-9), (tag, key)
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if "step_loss" in r] == [1, 2, 3], tag
    assert [r["step"] for r in rows if "eval_completion_nll" in r] == [2, 3], tag
    weights = "adapter_model.safetensors" if lora else "model.safetensors"
    w1, w2 = load_file(one / weights), load_file(out / weights)
    assert sorted(w2) == sorted(w1), tag  # tied: no second copy of the embeddings as lm_head.weight
    for name in w1:
        assert w2[name].dtype == w1[name].dtype, (tag, name)
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-5, atol=1e-7, msg=f"{tag}: {name}")
    return rows
