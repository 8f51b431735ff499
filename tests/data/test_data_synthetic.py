"""The built-in synthetic instruction data."""

from __future__ import annotations

import json

from plw.data import load_records
from plw.data.stats import dataset_stats
from plw.data.synthetic import LONG_TASKS, SHORT_TASKS, generate


def test_deterministic_and_prefix_stable():
    a = generate(300, seed=7)
    assert a == generate(300, seed=7)
    assert generate(120, seed=7) == a[:120]
    assert a != generate(300, seed=8)


def test_long_fraction_controls_ratio(bpe_tokenizer, unigram_tokenizer):
    short, long = generate(300, long_fraction=0.0), generate(300, long_fraction=1.0)
    for tok in (bpe_tokenizer, unigram_tokenizer):
        assert dataset_stats(short, tok).ratio < 1 < dataset_stats(long, tok).ratio
    mixed = generate(400, long_fraction=0.5)
    long_instr = sum(1 for r in mixed if dataset_stats([r], bpe_tokenizer).ratio >= 1)
    assert 120 < long_instr < 280


def test_variety_and_validity(tmp_path):
    recs = generate(500, seed=1)
    kinds = {r.instruction.split()[0] for r in recs}
    assert len(kinds) >= 8  # many task families
    assert len(SHORT_TASKS) >= 5 and len(LONG_TASKS) >= 5
    assert any(r.input for r in recs) and any(not r.input for r in recs)
    path = tmp_path / "syn.jsonl"
    path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in recs))
    assert [r.to_json() for r in load_records(path)] == [r.to_json() for r in recs]  # all records valid


def test_answers_are_correct():
    for r in generate(300, seed=2, long_fraction=0.0):
        if r.instruction.startswith("Add the numbers"):
            assert int(r.output) == sum(int(x) for x in r.input.split(", "))
        if r.instruction.startswith("Which number"):
            assert int(r.output) == max(int(x) for x in r.input.split())
        if r.instruction.startswith("How many words"):
            assert int(r.output) == len(r.input.split())
