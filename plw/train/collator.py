"""Batching weighted examples: right padding, or padding-free packing.

Examples are dicts from `plw.data.tokenize_dataset`: `input_ids`, `attention_mask`, `labels`,
`weights` (float, token-aligned, unshifted) and `completion_mask`. The weight columns travel with
the batch; the loss shifts them.

Packing concatenates a micro-batch into one row with `position_ids` restarting at 0 for each
example and no `attention_mask`: transformers then builds a block-diagonal causal mask from the
position ids (dense for SDPA; flash-attention's varlen kernels, `attn_implementation:
flash_attention_2`, take the boundaries from the position ids), so no token attends across an example. The first token of every example gets label -100 and weight 0, so the last token of one
example never predicts the next example: the loss equals the padded batch's, token for token.
"""

from __future__ import annotations

from typing import Any, Sequence

IGNORE = -100


class PLWCollator:
    """Collate tokenised PLW examples. `packing=True` gives one padding-free row per micro-batch."""

    def __init__(self, pad_token_id: int, *, packing: bool = False, pad_to_multiple_of: int | None = None):
        self.pad_token_id = int(pad_token_id)
        self.packing = packing
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        from plw.loss import check_values

        batch = self.pack(examples) if self.packing else self.pad(examples)
        # Checked here, on the CPU, once: the loss then needs no device→host syncs to validate.
        check_values(batch["labels"], batch["weights"])
        return batch

    def pad(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(e["input_ids"]) for e in examples)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        n = len(examples)
        ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((n, longest), dtype=torch.long)
        labels = torch.full((n, longest), IGNORE, dtype=torch.long)
        weights = torch.zeros((n, longest), dtype=torch.float32)
        comp = torch.zeros((n, longest), dtype=torch.bool)
        for i, e in enumerate(examples):
            k = len(e["input_ids"])
            ids[i, :k] = torch.as_tensor(e["input_ids"], dtype=torch.long)
            attn[i, :k] = torch.as_tensor(e.get("attention_mask", [1] * k), dtype=torch.long)
            labels[i, :k] = torch.as_tensor(e["labels"], dtype=torch.long)
            weights[i, :k] = torch.as_tensor(e["weights"], dtype=torch.float32)
            comp[i, :k] = torch.as_tensor(e["completion_mask"], dtype=torch.bool)
        return {"input_ids": ids, "attention_mask": attn, "labels": labels, "weights": weights,
                "completion_mask": comp}

    def pack(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids, pos, labels, weights, comp = [], [], [], [], []
        for e in examples:
            k = len(e["input_ids"])
            ids.append(torch.as_tensor(e["input_ids"], dtype=torch.long))
            pos.append(torch.arange(k, dtype=torch.long))
            lab = torch.as_tensor(e["labels"], dtype=torch.long).clone()
            w = torch.as_tensor(e["weights"], dtype=torch.float32).clone()
            c = torch.as_tensor(e["completion_mask"], dtype=torch.bool).clone()
            # Cut the cross-example target: the previous example's last token would predict this one.
            lab[0], w[0], c[0] = IGNORE, 0.0, False
            labels.append(lab), weights.append(w), comp.append(c)
        return {"input_ids": torch.cat(ids)[None], "position_ids": torch.cat(pos)[None],
                "labels": torch.cat(labels)[None], "weights": torch.cat(weights)[None],
                "completion_mask": torch.cat(comp)[None]}
