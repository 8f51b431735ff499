"""Dataset statistics as in the paper's Table 1.

Each field is tokenised on its own, without special tokens and without any template (the
paper's convention): instruction, input and completion (output). Raw records count the prompt
as the instruction; chat records count every non-assistant turn as instruction and every
assistant turn as completion (input 0). Standard deviations are sample ones (ddof = 1, as
pandas). R_g is the ratio of mean lengths, mean(completion) / (mean(instruction) + mean(input)),
which reproduces Table 1; the mean and geometric mean of the per-example ratios are reported
too (examples with a zero-token prompt have no ratio and are counted as `n_no_ratio`). An empty
output is a valid record (the original Alpaca data has some; trained, its completion is the EOS
alone): it counts 0 completion tokens here, is counted as `n_empty_completion`, and is left out of
the geometric mean (log 0).
Short-completion data have R_g < 1, long-completion data R_g >= 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from plw.data.records import Record
from plw.data.tokenizer import count_tokens

FIELDS = ("instruction", "input", "completion")


def field_texts(record: Record) -> tuple[list[str], list[str], list[str]]:
    """(instruction texts, input texts, completion texts) of a record; each list is summed."""
    fmt = record.format
    if fmt == "alpaca":
        return [record.instruction], [record.input], [record.output]
    if fmt == "raw":
        return [record.prompt], [], [record.completion]
    # An assistant turn with weight 0 (OpenAI's chat format) is context, not completion.
    trained = [m["role"] == "assistant" and m.get("weight", 1) != 0 for m in record.messages]
    prompt = [m["content"] for m, t in zip(record.messages, trained) if not t]
    completion = [m["content"] for m, t in zip(record.messages, trained) if t]
    return prompt, [], completion


def field_lengths(records: Sequence[Record], tokenizer) -> dict[str, list[int]]:
    """Per-record token counts of each field (one batch tokenisation for all texts)."""
    texts, owners = [], []
    for i, rec in enumerate(records):
        for f, parts in zip(FIELDS, field_texts(rec)):
            for t in parts:
                if t:
                    texts.append(t)
                    owners.append((f, i))
    lengths = {f: [0] * len(records) for f in FIELDS}
    for (f, i), n in zip(owners, count_tokens(tokenizer, texts)):
        lengths[f][i] += n
    return lengths


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs) if xs else float("nan")


def _std(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    m = _mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


@dataclass
class DatasetStats:
    n: int
    lengths: dict = field(repr=False)          # field -> per-record token counts
    mean: dict = field(default_factory=dict)   # field -> mean tokens
    std: dict = field(default_factory=dict)    # field -> sample std
    total_tokens: int = 0
    ratio: float = float("nan")                # R_g = ratio of mean lengths (paper)
    mean_ratio: float = float("nan")           # mean of per-example ratios
    geo_mean_ratio: float = float("nan")       # geometric mean of per-example ratios (ratio > 0)
    n_no_ratio: int = 0                        # examples with an empty prompt
    n_empty_completion: int = 0                # examples whose completion has no token

    @property
    def verdict(self) -> str:
        return "short" if self.ratio < 1 else "long"

    @property
    def prompt_lengths(self) -> list[int]:
        return [a + b for a, b in zip(self.lengths["instruction"], self.lengths["input"])]

    def to_dict(self) -> dict:
        return {"n": self.n,
                "fields": {f: {"mean": self.mean[f], "std": self.std[f], "total": sum(self.lengths[f])}
                           for f in FIELDS},
                "total_tokens": self.total_tokens, "ratio": self.ratio, "mean_ratio": self.mean_ratio,
                "geo_mean_ratio": self.geo_mean_ratio, "n_no_ratio": self.n_no_ratio,
                "n_empty_completion": self.n_empty_completion, "verdict": self.verdict,
                "convention": "fields tokenised separately, no special tokens, no template; std ddof=1; "
                              "ratio = mean(completion) / (mean(instruction) + mean(input))"}


def dataset_stats(records: Sequence[Record], tokenizer) -> DatasetStats:
    """Table-1 statistics of `records` under `tokenizer`."""
    return stats_from_lengths(field_lengths(records, tokenizer))


def stats_from_lengths(lengths: dict[str, list[int]]) -> DatasetStats:
    n = len(lengths["completion"])
    st = DatasetStats(n=n, lengths=lengths)
    for f in FIELDS:
        st.mean[f] = _mean(lengths[f])
        st.std[f] = _std(lengths[f])
    st.total_tokens = sum(sum(lengths[f]) for f in FIELDS)
    prompt_mean = st.mean["instruction"] + st.mean["input"]
    st.ratio = st.mean["completion"] / prompt_mean if prompt_mean > 0 else float("inf")
    ratios = [c / p for c, p in zip(lengths["completion"], st.prompt_lengths) if p > 0]
    st.n_no_ratio = n - len(ratios)
    st.n_empty_completion = sum(1 for c in lengths["completion"] if c == 0)
    st.mean_ratio = _mean(ratios)
    positive = [r for r in ratios if r > 0]
    st.geo_mean_ratio = math.exp(_mean([math.log(r) for r in positive])) if positive else float("nan")
    return st


def histogram_pngs(stats: DatasetStats, *, title: str = "") -> dict:
    """{field: PNG bytes} of the per-field token-length histograms (nothing is written)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    for f in FIELDS:
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        values = stats.lengths[f]
        ax.hist(values, bins=min(50, max(1, len(set(values)))), color="#4c72b0")
        ax.set_xlabel(f"{f} tokens")
        ax.set_ylabel("records")
        ax.set_title(f"{title} {f}: mean {stats.mean[f]:.2f} (std {stats.std[f]:.2f})".strip(), fontsize=9)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        out[f] = buf.getvalue()
    return out


def save_histograms(stats: DatasetStats, directory, *, title: str = "") -> list:
    """One PNG per field (token-length histogram) in `directory`, each written atomically."""
    from pathlib import Path

    from plw.io import atomic_path

    out = []
    for f, png in histogram_pngs(stats, title=title).items():
        path = Path(directory) / f"{f}.png"
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
        out.append(path)
    return out
