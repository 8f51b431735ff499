"""Records -> weighted tokens.

The full text (prompt + completion) is tokenised once; each token's weight comes from its
character offsets:

- completion tokens weigh 1, prompt tokens (template scaffolding included) weigh PLW;
- the EOS appended after the completion is a completion token; the BOS (and any other special
  token the tokenizer puts before a text) is a prompt token. So
  `sum(weights) == N_completion + PLW * N_prompt` with `N_completion = sum(completion_mask)`.
  The first token is never a target after the loss's shift, whatever its weight;
- boundary rule: a token that contains at least one completion character is a completion
  token (a token straddling the prompt/completion boundary weighs 1), so no completion
  character is ever trained below weight 1. A zero-width token (e.g. SentencePiece byte
  fallback before the byte that carries the span) belongs to the side its position is on;
- chat: text inside an assistant turn's span is completion (weight `role_weights["assistant"]`,
  default 1); every other role's span weighs `role_weights.get(role, PLW)`; headers and other
  scaffolding weigh PLW. With `last_turn_only`, earlier assistant turns are prompt (PLW); so is
  an assistant turn with OpenAI's per-message `weight: 0`.
  A token covering text of several weights takes the largest.

Weights are aligned to `input_ids` and NOT shifted: the loss shifts. `labels` equal
`input_ids` (padding gets -100 in `pad_batch`).

Truncation to `max_length` keeps the completion: prompt tokens are removed from the left,
after the leading special tokens (BOS). If the completion itself does not fit, the example is
dropped (`on_long_completion="drop"`, the default) or, with `"truncate"`, cut on the right
like Stanford Alpaca; an example left with no completion token, or with all-zero weights, is
always dropped. Dropped examples are counted per reason in the `TokenizeReport`.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from plw.data.records import ROLES, Record
from plw.data.schema import record_file, record_line
from plw.data.templates import as_messages, chat_spans, check_template, render
from plw.data.tokenizer import encode_with_offsets, prefix_special_ids
from plw.errors import PLWError
from plw.ui import progress_bar

DROP_COMPLETION_TOO_LONG = "completion longer than max_length"
DROP_NO_COMPLETION = "no completion token left"
DROP_ZERO_WEIGHTS = "all weights zero"


@dataclass
class TokenizeReport:
    """Counts from `tokenize_dataset`: what was kept, truncated and dropped (per reason)."""

    template: str = ""
    prompt_loss_weight: float = 0.0
    max_length: int = 0
    n_records: int = 0
    n_examples: int = 0
    n_prompt_truncated: int = 0
    n_completion_truncated: int = 0
    n_tokens: int = 0
    n_completion_tokens: int = 0
    dropped: Counter = field(default_factory=Counter)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def n_prompt_tokens(self) -> int:
        return self.n_tokens - self.n_completion_tokens

    def to_dict(self) -> dict:
        return {"template": self.template, "prompt_loss_weight": self.prompt_loss_weight, "max_length": self.max_length,
                "n_records": self.n_records, "n_examples": self.n_examples, "n_dropped": self.n_dropped,
                "dropped": dict(self.dropped), "n_prompt_truncated": self.n_prompt_truncated,
                "n_completion_truncated": self.n_completion_truncated, "n_tokens": self.n_tokens,
                "n_prompt_tokens": self.n_prompt_tokens, "n_completion_tokens": self.n_completion_tokens}

    def summary(self) -> str:
        text = (f"{self.n_examples} of {self.n_records} examples, {self.n_tokens} tokens "
                f"({self.n_completion_tokens} completion); {self.n_prompt_truncated} prompts truncated")
        if self.n_completion_truncated:
            text += f", {self.n_completion_truncated} completions truncated"
        if self.dropped:
            text += "; dropped " + ", ".join(f"{n} × {r}" for r, n in self.dropped.most_common())
        return text


def weight_argument(prompt_loss_weight: float | None, plw: float | None) -> float:
    """The prompt loss weight given as `prompt_loss_weight=` or the deprecated `plw=`."""
    if plw is not None:
        if prompt_loss_weight is not None:
            raise TypeError("give prompt_loss_weight only (plw is its deprecated name)")
        warnings.warn("plw= is deprecated: use prompt_loss_weight=", FutureWarning, stacklevel=3)
        return plw
    if prompt_loss_weight is None:
        raise TypeError("missing required keyword argument: prompt_loss_weight")
    return prompt_loss_weight


class _Encoder:
    """Holds the per-tokenizer facts (special ids) and the weighting settings."""

    def __init__(self, tokenizer, *, template: str, prompt_loss_weight: float, max_length: int,
                 role_weights: dict | None, last_turn_only: bool, on_long_completion: str):
        if not isinstance(prompt_loss_weight, (int, float)) or not math.isfinite(prompt_loss_weight) \
                or not 0.0 <= prompt_loss_weight <= 1.0:
            raise PLWError(f"must be a number in [0, 1], got {prompt_loss_weight!r}", field="prompt_loss_weight")
        if not isinstance(max_length, int) or max_length < 2:
            raise PLWError(f"must be an integer >= 2, got {max_length!r}", field="max_length")
        if on_long_completion not in ("drop", "truncate"):
            raise PLWError("expected 'drop' or 'truncate'", field="on_long_completion")
        self.role_weights = dict(role_weights or {})
        for role, w in self.role_weights.items():
            if role not in ROLES:
                raise PLWError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}", field="role_weights")
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise PLWError(f"weight for {role!r} must be a finite number >= 0", field="role_weights")
        if tokenizer.eos_token_id is None:
            raise PLWError("the tokenizer has no EOS token", field="tokenizer")
        self.tok = tokenizer
        self.template = template if template == "auto" else check_template(template)
        self.prompt_loss_weight = float(prompt_loss_weight)
        self.max_length = max_length
        self.last_turn_only = last_turn_only
        self.on_long_completion = on_long_completion
        self.prefix = prefix_special_ids(tokenizer)
        self.eos = tokenizer.eos_token_id

    def template_for(self, record: Record) -> str:
        return record.format if self.template == "auto" else self.template

    # ---- alpaca / raw: prompt text + completion text + EOS ----
    def encode_pair(self, prompt: str, ids: list[int], offsets: list[tuple[int, int]]):
        boundary = len(prompt)
        cmask = [int(e > boundary) if e > s else int(s >= boundary) for s, e in offsets]
        n_head = len(self.prefix)
        ids = self.prefix + list(ids) + [self.eos]
        cmask = [0] * n_head + cmask + [1]
        weights = [1.0 if c else self.prompt_loss_weight for c in cmask]
        return self.finish(ids, weights, cmask, n_head)

    # ---- chat: the tokenizer's template, weights per role span ----
    def encode_chat(self, record: Record):
        text, spans = chat_spans(record, self.tok)
        msgs = as_messages(record)
        assistant = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
        n = len(text)
        char_w = [self.prompt_loss_weight] * n
        char_c = [0] * n
        for start, end, i in spans:
            role = msgs[i]["role"]
            trained = msgs[i].get("weight", 1) != 0  # OpenAI's per-message weight 0: context only
            if role == "assistant" and trained and (not self.last_turn_only or i == assistant[-1]):
                w, c = float(self.role_weights.get("assistant", 1.0)), 1
            elif role == "assistant":
                w, c = self.prompt_loss_weight, 0
            else:
                w, c = float(self.role_weights.get(role, self.prompt_loss_weight)), 0
            content = msgs[i]["content"].strip()
            if role in self.role_weights and content and content not in text[start:end]:
                raise PLWError(f"the chat template moves the {role} message into another turn, so a "
                               f"{role} weight cannot be applied", file=record_file(record), line=record_line(record),
                               field=f"messages[{i}]")
            char_w[start:end] = [w] * (end - start)
            char_c[start:end] = [c] * (end - start)
        ids, offsets = encode_with_offsets(self.tok, [text], split_special_tokens=False)[0]
        weights, cmask = [], []
        for s, e in offsets:
            if e <= s:  # zero-width: the character at its position
                s, e = min(s, n - 1), min(s, n - 1) + 1
            weights.append(max(char_w[s:e]))
            cmask.append(max(char_c[s:e]))
        bos = self.tok.bos_token_id
        n_head = 1 if ids and bos is not None and ids[0] == bos else 0
        return self.finish(list(ids), weights, cmask, n_head)

    def finish(self, ids, weights, cmask, n_head):
        """Truncate to max_length keeping the completion; returns (example | None, reason, flags)."""
        flags = set()
        if 1 not in cmask:
            return None, DROP_NO_COMPLETION, flags
        n = len(ids)
        if n > self.max_length:
            # The protected region: the last run of completion tokens, to the end.
            last = n - 1 - cmask[::-1].index(1)
            start = last
            while start > 0 and cmask[start - 1] == 1:
                start -= 1
            cut = n - (self.max_length - n_head)  # drop ids[n_head:cut]
            if cut <= start:
                keep = list(range(n_head)) + list(range(cut, n))
                flags.add("prompt")
            elif self.on_long_completion == "drop":
                return None, DROP_COMPLETION_TOO_LONG, flags
            else:  # Stanford-Alpaca style: cut on the right
                keep = list(range(self.max_length))
                flags.add("completion")
            ids = [ids[i] for i in keep]
            weights = [weights[i] for i in keep]
            cmask = [cmask[i] for i in keep]
            if 1 not in cmask:
                return None, DROP_NO_COMPLETION, flags
        if not any(w > 0 for w in weights[1:]):  # position 0 is never a target
            return None, DROP_ZERO_WEIGHTS, flags
        example = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids),
                   "weights": weights, "completion_mask": cmask}
        return example, None, flags


def encode_record(record: Record, tokenizer, *, template: str = "alpaca", prompt_loss_weight: float | None = None,
                  max_length: int = 512, role_weights: dict | None = None, last_turn_only: bool = False,
                  on_long_completion: str = "drop", plw: float | None = None) -> dict | None:
    """One record -> {input_ids, attention_mask, labels, weights, completion_mask}, or None if dropped."""
    enc = _Encoder(tokenizer, template=template, prompt_loss_weight=weight_argument(prompt_loss_weight, plw),
                   max_length=max_length, role_weights=role_weights,
                   last_turn_only=last_turn_only, on_long_completion=on_long_completion)
    example, _, _ = _encode_many(enc, [record])[0]
    return example


def tokenize_dataset(records: Sequence[Record], tokenizer, *, template: str = "auto",
                     prompt_loss_weight: float | None = None, max_length: int = 512,
                     role_weights: dict | None = None, last_turn_only: bool = False,
                     on_long_completion: str = "drop", progress: bool = False,
                     plw: float | None = None) -> tuple[list[dict], TokenizeReport]:
    """Encode every record (template "auto" = each record's own format); drops are counted, never silent."""
    enc = _Encoder(tokenizer, template=template, prompt_loss_weight=weight_argument(prompt_loss_weight, plw),
                   max_length=max_length, role_weights=role_weights,
                   last_turn_only=last_turn_only, on_long_completion=on_long_completion)
    report = TokenizeReport(template=template, prompt_loss_weight=enc.prompt_loss_weight, max_length=max_length,
                            n_records=len(records))
    examples = []
    chunk = 512
    with progress_bar(progress and len(records) >= 2000, "tokenising", len(records)) as bar:
        for lo in range(0, len(records), chunk):
            for example, reason, flags in _encode_many(enc, records[lo:lo + chunk]):
                if example is None:
                    report.dropped[reason] += 1
                    continue
                examples.append(example)
                report.n_prompt_truncated += "prompt" in flags
                report.n_completion_truncated += "completion" in flags
                report.n_tokens += len(example["input_ids"])
                report.n_completion_tokens += sum(example["completion_mask"])
            bar.advance(len(records[lo:lo + chunk]))
    report.n_examples = len(examples)
    return examples, report


def _encode_many(enc: _Encoder, records: Sequence[Record]):
    """Encode a chunk: alpaca/raw texts go to the tokenizer in one batch."""
    out: list = [None] * len(records)
    pair_idx, prompts, texts = [], [], []
    for i, rec in enumerate(records):
        template = enc.template_for(rec)
        if template == "chat":
            out[i] = enc.encode_chat(rec)
        else:
            prompt, completion = render(rec, template)
            pair_idx.append(i)
            prompts.append(prompt)
            texts.append(prompt + completion)
    if texts:
        for i, prompt, (ids, offsets) in zip(pair_idx, prompts, encode_with_offsets(enc.tok, texts)):
            out[i] = enc.encode_pair(prompt, ids, offsets)
    return out


def pad_batch(examples: Sequence[dict], *, pad_token_id: int, padding_side: str = "right",
              pad_to_multiple_of: int | None = None):
    """Pad encoded examples to one length as torch tensors.

    Padding gets input_ids=pad_token_id, attention_mask=0, labels=-100, weights=0 and
    completion_mask=0: no weight ever lands on padding. With left padding, each row's first real
    token (BOS) also gets labels=-100, weights=0, completion_mask=0: after the loss's shift it
    would be a target predicted from a pad position (as `pack` cuts each example's first token).
    """
    import torch

    if padding_side not in ("right", "left"):
        raise ValueError("padding_side must be 'right' or 'left'")
    length = max(len(e["input_ids"]) for e in examples)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    pads = {"input_ids": pad_token_id, "attention_mask": 0, "labels": -100, "weights": 0.0, "completion_mask": 0}
    batch = {}
    for key, pad in pads.items():
        rows = []
        for e in examples:
            row = list(e[key])
            fill = [pad] * (length - len(row))
            if padding_side == "left" and row and key in ("labels", "weights", "completion_mask"):
                row[0] = pad  # the first real token is never a target (its predecessor is padding)
            rows.append(row + fill if padding_side == "right" else fill + row)
        dtype = torch.float32 if key == "weights" else torch.long
        batch[key] = torch.tensor(rows, dtype=dtype)
    return batch
