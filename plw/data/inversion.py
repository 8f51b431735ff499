"""Prompt inversion (paper, Appendix A): turn long-completion instances into prompt prediction.

The new completion is the original instruction, the new input is the original output, and the
new instruction is one of the two strings below (verbatim). By default every instance whose
tokenised R_g = len(output) / (len(instruction) + len(input)) exceeds 1 is inverted (how
AlpacaDataShort was made). With a target ratio (Appendix D: AlpacaDataMedium R = 1.0,
AlpacaDataTiny R = 0.042) instances are taken in a fixed order, and the number k of inverted
instances is the one whose dataset R_g (ratio of mean lengths, C/P) lies closest to the target
(ties go to the smaller k). The order: inverting instance i changes C - R*P by
d_i = (c'_i - R p'_i) - (c_i - R p_i); instances with the most negative d_i come first (ties by
position): the instances that pull C/P towards R the most are inverted first. Deterministic.
Targets below the reachable range get the closest reachable R_g (reported, not an error).

A record whose prompt (instruction + input) is empty or whitespace is never inverted: its
inversion would have an empty completion, which is not a valid record. It is kept unchanged (a
raw record stays raw: an Alpaca record needs an instruction) and listed in `empty_prompt`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from plw.data.records import Record
from plw.data.stats import DatasetStats, field_lengths, stats_from_lengths
from plw.data.schema import record_file, record_line
from plw.data.templates import INVERT_INSTRUCTION, INVERT_INSTRUCTION_WITH_INPUT
from plw.errors import PLWError


def invert_record(record: Record) -> Record:
    """The prompt-inverted instance (Appendix A)."""
    if record.format == "chat":
        raise PLWError("prompt inversion needs instruction/output records, not chat",
                       file=record_file(record), line=record_line(record), field="messages")
    if record.format == "raw":
        instruction, inp, output = record.prompt, "", record.completion
    else:
        instruction, inp, output = record.instruction, record.input, record.output
    if inp != "":
        new_instruction = INVERT_INSTRUCTION_WITH_INPUT.format(input=inp)
    else:
        new_instruction = INVERT_INSTRUCTION
    return Record(instruction=new_instruction, input=output, output=instruction, source=record.source)


def _prompt_text(record: Record) -> str:
    return record.prompt if record.format == "raw" else record.instruction + record.input


def _as_alpaca(record: Record) -> Record:
    # The output is one Alpaca data set, so untouched raw records are written in Alpaca form too
    # (except those with an empty prompt, which have no Alpaca form: they stay as they are).
    if record.format == "raw" and record.prompt.strip():
        return Record(instruction=record.prompt, input="", output=record.completion, source=record.source)
    return record


@dataclass
class InversionResult:
    """The new data set (iterating the result yields its records) with before/after statistics."""

    records: list[Record]
    inverted: list[int]          # indices of inverted instances
    before: DatasetStats
    after: DatasetStats
    target_ratio: float | None
    empty_prompt: list[int] = field(default_factory=list)  # never inverted: their prompt is empty

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    @property
    def n_inverted(self) -> int:
        return len(self.inverted)

    def to_dict(self) -> dict:
        return {"n": len(self.records), "n_inverted": self.n_inverted, "n_empty_prompt": len(self.empty_prompt),
                "target_ratio": self.target_ratio,
                "before": self.before.to_dict(), "after": self.after.to_dict()}


def invert_records(records: Sequence[Record], tokenizer, target_ratio: float | None = None) -> InversionResult:
    """Invert instances with R_g > 1, or choose which to invert so the data set's R_g nears `target_ratio`."""
    if target_ratio is not None and not (target_ratio > 0 and target_ratio != float("inf")):
        raise PLWError(f"must be a positive number, got {target_ratio!r}", field="target_ratio")
    records = list(records)
    if not records:
        raise PLWError("no records to invert", field="data")
    inverted_all = [invert_record(r) for r in records]  # validates formats too
    before_len = field_lengths(records, tokenizer)
    after_len = field_lengths(inverted_all, tokenizer)
    prompt = [a + b for a, b in zip(before_len["instruction"], before_len["input"])]
    comp = before_len["completion"]
    ratio = [c / p if p else float("inf") for c, p in zip(comp, prompt)]
    empty = [i for i, r in enumerate(records) if not _prompt_text(r).strip()]
    empty_set = set(empty)
    can = [i for i in range(len(records)) if i not in empty_set]

    if target_ratio is None:
        chosen = [i for i in can if ratio[i] > 1]
    else:
        # Inverting i changes C - R*P by d_i; most negative first, then the best prefix.
        inv_prompt = [a + b for a, b in zip(after_len["instruction"], after_len["input"])]
        inv_comp = after_len["completion"]
        delta = [(inv_comp[i] - target_ratio * inv_prompt[i]) - (comp[i] - target_ratio * prompt[i])
                 for i in range(len(records))]
        order = sorted(can, key=lambda i: (delta[i], i))
        c_sum, p_sum = sum(comp), sum(prompt)
        best_k, best_gap = 0, abs(c_sum / p_sum - target_ratio) if p_sum else float("inf")
        for k, i in enumerate(order, start=1):
            c_sum += inv_comp[i] - comp[i]
            p_sum += inv_prompt[i] - prompt[i]
            gap = abs(c_sum / p_sum - target_ratio) if p_sum else float("inf")
            if gap < best_gap:
                best_k, best_gap = k, gap
        chosen = sorted(order[:best_k])

    chosen_set = set(chosen)
    out = [inverted_all[i] if i in chosen_set else _as_alpaca(records[i]) for i in range(len(records))]
    mixed = {f: [after_len[f][i] if i in chosen_set else before_len[f][i] for i in range(len(records))]
             for f in before_len}
    return InversionResult(records=out, inverted=chosen, before=stats_from_lengths(before_len),
                           after=stats_from_lengths(mixed), target_ratio=target_ratio, empty_prompt=empty)
