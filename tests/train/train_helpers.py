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
