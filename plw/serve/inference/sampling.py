"""Per-request sampling settings and the per-row sampler.

Every row of a batch samples with its own settings and its own `torch.Generator`, so a request's
tokens do not depend on which other requests share its batch: a seeded request gives the same
text alone or batched, and temperature 0 (greedy) gives the unbatched text.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None  # None: up to the model's context length
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    timeout: float | None = None  # seconds from submission, queueing included


def row_generator(seed: int | None, index: int):
    """The generator of choice `index`: seeded `seed + index`, or from the OS when unseeded."""
    import torch

    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed((seed + index) % (2 ** 63))
    return g


def sample_rows(logits, params: list[SamplingParams], generators: list) -> list[int]:
    """One next token per row of `logits` [rows, vocab] (fp32), each by its own settings."""
    import torch

    greedy = logits.argmax(dim=-1).tolist()
    out = []
    for i, p in enumerate(params):
        if p.temperature == 0:
            out.append(greedy[i])
            continue
        probs = torch.softmax(logits[i] / p.temperature, dim=-1)
        if p.top_p < 1.0:
            probs = _nucleus(probs, p.top_p)
        out.append(int(torch.multinomial(probs, 1, generator=generators[i])))
    return out


def _nucleus(probs, top_p: float):
    """Keep the smallest set of most likely tokens whose mass reaches `top_p` (at least one)."""
    import torch

    sorted_p, order = torch.sort(probs, descending=True)
    before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass of the tokens ranked above
    sorted_p = torch.where(before < top_p, sorted_p, torch.zeros_like(sorted_p))
    kept = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return kept / kept.sum()
