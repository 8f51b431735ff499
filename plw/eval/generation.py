"""Generation metrics (paper §5.3): generation length and training-data memorisation.

- `generate`: greedy, batched, left-padded completions of prompts; deterministic (no sampling,
  results independent of batch size and order up to float rounding).
- `generation_lengths`: tokens generated (up to, excluding, EOS) on an evaluation prompt set,
  by default the 805 AlpacaEval instructions rendered with the Alpaca template.
- `memorization_bleu`: sacreBLEU corpus BLEU (signature `nrefs:1|case:mixed|eff:no|tok:13a|
  smooth:exp`) of greedy completions of N sampled unique training prompts against their
  reference completions.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Sequence

from plw.errors import PLWError
from plw.ui import progress_bar

BLEU_SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp"


@dataclass(frozen=True)
class Generation:
    text: str
    n_tokens: int        # generated tokens before EOS (EOS and padding excluded)
    stopped: bool        # True when the model emitted EOS within the token budget


def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 256,
             batch_size: int = 8, add_special_tokens: bool = True, progress: bool = True,
             description: str = "generating") -> list[Generation]:
    """Greedy completions of `prompts`, batched with left padding, in the input order.

    Prompts are batched by length (longest first) to waste little padding; each row is
    decoded independently, so a batch's composition does not change a row's tokens beyond
    float rounding. `add_special_tokens=False` for prompts that already hold the BOS text
    (chat-template renderings).
    """
    import torch

    if max_new_tokens < 1:
        raise PLWError("must be at least 1", field="max_new_tokens")
    if batch_size < 1:
        raise PLWError("must be at least 1", field="batch_size")
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    results: list[Generation | None] = [None] * len(prompts)

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with progress_bar(progress, description, len(prompts)) as bar, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                width = max(len(encoded[i]) for i in idx)
                ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):  # left padding: prompts end where generation starts
                    ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                    mask[row, width - len(encoded[i]):] = 1
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                     max_new_tokens=max_new_tokens, do_sample=False,
                                     num_beams=1, eos_token_id=eos_id, pad_token_id=pad_id)
                for row, i in enumerate(idx):
                    new = out[row, width:].tolist()
                    stopped = eos_id in new
                    if stopped:
                        new = new[:new.index(eos_id)]
                    results[i] = Generation(tokenizer.decode(new, skip_special_tokens=True),
                                            len(new), stopped)
                bar.advance(len(idx))
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def _render_prompts(records, template: str, tokenizer) -> list[tuple[str, str]]:
    from plw.data.templates import render

    return [render(r, template, tokenizer) for r in records]


# --------------------------------------------------------------------------- lengths

@dataclass(frozen=True)
class GenerationReport:
    """Completions of an evaluation prompt set (reusable as the judge's model outputs)."""

    instructions: list[str]
    outputs: list[str]
    lengths: list[int]
    n_unstopped: int = 0  # generations cut by max_new_tokens (no EOS)

    @property
    def mean_length(self) -> float:
        return statistics.fmean(self.lengths) if self.lengths else float("nan")

    @property
    def median_length(self) -> float:
        return statistics.median(self.lengths) if self.lengths else float("nan")


def generation_lengths(model, tokenizer, instructions: Sequence[str] | None = None, *,
                       template: str = "alpaca", limit: int | None = None,
                       reference_file=None, max_new_tokens: int = 512, batch_size: int = 8,
                       progress: bool = True) -> GenerationReport:
    """Greedy completions of evaluation instructions and their lengths in tokens.

    `instructions` defaults to the AlpacaEval set (`reference_file`, by default
    `../shared/data/alpaca_eval/text_davinci_003_model_outputs.json` when present).
    `limit` keeps the first N instructions.
    """
    from plw.data.records import Record

    if instructions is None:
        from plw.eval.alpaca_eval import load_alpaca_eval

        instructions = load_alpaca_eval(reference_file).instructions
    instructions = list(instructions)[:limit] if limit is not None else list(instructions)
    if not instructions:
        raise PLWError("no evaluation instructions", field="instructions")
    records = [Record(instruction=i, input="", output="") for i in instructions]
    prompts = [p for p, _ in _render_prompts(records, template, tokenizer)]
    gens = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                    batch_size=batch_size, add_special_tokens=template != "chat",
                    progress=progress, description="generation length")
    return GenerationReport(instructions, [g.text for g in gens], [g.n_tokens for g in gens],
                            sum(not g.stopped for g in gens))


# --------------------------------------------------------------------------- memorisation

@dataclass(frozen=True)
class BleuReport:
    score: float                 # corpus BLEU, 0-100
    signature: str               # sacreBLEU signature
    n: int                       # prompts generated from
    exact_match: float           # share of completions reproduced exactly (stripped); BLEU-4
    #                              is 0 by construction when completions are under 4 words
    hypotheses: list[str] = field(repr=False)
    references: list[str] = field(repr=False)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """sacreBLEU corpus BLEU-4 with the paper's settings, and its signature."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize="13a", smooth_method="exp", lowercase=False, effective_order=False)
    score = bleu.corpus_score(list(hypotheses), [list(references)])
    return score.score, str(bleu.get_signature())


def sample_unique_prompts(records, n: int, *, seed: int = 0, template: str = "alpaca",
                          tokenizer=None) -> list[tuple[str, str]]:
    """N (prompt, reference completion) pairs with distinct prompts, sampled without
    replacement (all of them, in order, when there are at most N)."""
    pairs, seen = [], set()
    for prompt, completion in _render_prompts(records, template, tokenizer):
        if prompt not in seen:
            seen.add(prompt)
            pairs.append((prompt, completion))
    if n >= len(pairs):
        return pairs
    keep = sorted(random.Random(seed).sample(range(len(pairs)), n))
    return [pairs[i] for i in keep]


def memorization_bleu(model, tokenizer, records, *, n: int = 10_000, seed: int = 0,
                      template: str = "alpaca", max_new_tokens: int = 256, batch_size: int = 8,
                      progress: bool = True) -> BleuReport:
    """Training-data memorisation: corpus BLEU of greedy completions of N unique training
    prompts against the training completions (paper §5.3: N = 10,000, ~80 BLEU at PLW ≤ 0.1)."""
    if n < 1:
        raise PLWError("must be at least 1", field="n")
    pairs = sample_unique_prompts(records, n, seed=seed, template=template, tokenizer=tokenizer)
    if not pairs:
        raise PLWError("no training records to sample prompts from", field="records")
    gens = generate(model, tokenizer, [p for p, _ in pairs], max_new_tokens=max_new_tokens,
                    batch_size=batch_size, add_special_tokens=template != "chat",
                    progress=progress, description="memorisation")
    hyps, refs = [g.text for g in gens], [c for _, c in pairs]
    score, signature = corpus_bleu(hyps, refs)
    exact = sum(h.strip() == r.strip() for h, r in zip(hyps, refs)) / len(pairs)
    return BleuReport(score, signature, len(pairs), exact, hyps, refs)
