"""Prompt inversion (Appendix A) and target-ratio selection (Appendix D)."""

from __future__ import annotations

import json

import pytest

from plw.cli import main
from plw.data import Record, load_records
from plw.data.inversion import invert_record, invert_records
from plw.data.stats import dataset_stats


def test_invert_record_strings():
    rec = Record(instruction="Who is the President of South Korea?", output="The President changes.")
    assert invert_record(rec) == Record(instruction="Predict the prompt that generated the following AI output.",
                                        input="The President changes.",
                                        output="Who is the President of South Korea?")
    rec = Record(instruction="Who is the President of the given country?", input="South Korea",
                 output="The President changes.")
    assert invert_record(rec).instruction == ("Predict the prompt that generated the below AI output given the "
                                              "following context. Context: South Korea")
    assert invert_record(rec).input == "The President changes."
    assert invert_record(Record(prompt="p", completion="c")) == Record(instruction=invert_record(
        Record(instruction="p", output="c")).instruction, input="c", output="p")


def test_strings_match_paper(shared):
    text = (shared / "PAPER.md").read_text(encoding="utf-8")
    from plw.data.inversion import INVERT_INSTRUCTION, INVERT_INSTRUCTION_WITH_INPUT

    assert f"`{INVERT_INSTRUCTION}`" in text
    assert f"`{INVERT_INSTRUCTION_WITH_INPUT.format(input='<original-input>')}`" in text


def test_default_inverts_long_instances(bpe_tokenizer):
    tok = bpe_tokenizer
    recs = load_records("builtin:mixed?n=300")
    result = invert_records(recs, tok)
    before = dataset_stats(recs, tok)
    assert result.before.ratio == before.ratio and before.ratio > 1
    per = [c / p for c, p in zip(before.lengths["completion"], before.prompt_lengths)]
    assert result.inverted == [i for i, r in enumerate(per) if r > 1]
    for i, rec in enumerate(result):
        assert rec == (invert_record(recs[i]) if i in result.inverted else recs[i])
    after = dataset_stats(list(result), tok)  # recomputed from the new records
    assert result.after.ratio == after.ratio < 1 and len(result) == 300


def test_target_ratio_deterministic(bpe_tokenizer):
    recs = load_records("builtin:long?n=300")
    a = invert_records(recs, bpe_tokenizer, target_ratio=1.0)
    b = invert_records(recs, bpe_tokenizer, target_ratio=1.0)
    assert a.inverted == b.inverted and abs(a.after.ratio - 1.0) < 0.05
    assert a.after.ratio == dataset_stats(list(a), bpe_tokenizer).ratio
    high = invert_records(recs, bpe_tokenizer, target_ratio=1000.0)
    assert high.n_inverted == 0
    low = invert_records(recs, bpe_tokenizer, target_ratio=0.3)
    assert abs(low.after.ratio - 0.3) < 0.3 * 0.05 and low.n_inverted > a.n_inverted


def test_llama2_demo_acceptance(demo_file, llama2_tokenizer_dir, tmp_path, capsys):
    """`plw invert DEMO` gives R_g < 1; with --target-ratio 1.0 it lands within 5 % of 1.0."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(llama2_tokenizer_dir / "tokenizer.model"))

    def ratio(path):  # independent: sentencepiece on the written file
        rows = json.loads(path.read_text(encoding="utf-8"))
        c = sum(len(sp.encode(r["output"])) for r in rows)
        p = sum(len(sp.encode(r["instruction"])) + len(sp.encode(r["input"])) for r in rows)
        return c / p, len(rows)

    out = tmp_path / "short.json"
    assert main(["invert", str(demo_file), "-o", str(out), "--tokenizer", str(llama2_tokenizer_dir)]) == 0
    r, n = ratio(out)
    assert r < 1 and n == 999
    assert "after:" in capsys.readouterr().out
    out = tmp_path / "medium.json"
    report = tmp_path / "report.json"
    assert main(["invert", str(demo_file), "-o", str(out), "--tokenizer", str(llama2_tokenizer_dir),
                 "--target-ratio", "1.0", "--json", str(report)]) == 0
    r, n = ratio(out)
    assert abs(r - 1.0) < 0.05 and n == 999
    assert json.loads(report.read_text())["after"]["ratio"] == pytest.approx(r, rel=1e-12)


def test_invert_cli_builtin_jsonl(tmp_path, capsys):
    out = tmp_path / "inv.jsonl"
    assert main(["invert", "--builtin", "-o", str(out)]) == 0
    recs = load_records(out)
    assert len(recs) == 1000
    assert any(r.instruction.startswith("Predict the prompt") for r in recs)


def test_empty_prompt_never_inverted(bpe_tokenizer):
    """An empty prompt has an infinite ratio, but its inversion would have an empty completion."""
    recs = [Record(prompt="", completion="yo yo yo"), Record(prompt="hi", completion="a b c d e f g h"),
            Record(prompt="  \n", completion="x y z"), Record(prompt="a long prompt here", completion="ok")]
    for target in (None, 1e-3, 1.0):
        result = invert_records(recs, bpe_tokenizer, target_ratio=target)
        assert result.empty_prompt == [0, 2]
        assert 0 not in result.inverted and 2 not in result.inverted
        assert result[0] == recs[0] and result[2] == recs[2]  # kept as they are
        assert result.to_dict()["n_empty_prompt"] == 2
    assert invert_records(recs, bpe_tokenizer).inverted == [1]


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_invert_cli_empty_prompt_reloads(tmp_path, capsys, suffix):
    data = tmp_path / "raw.jsonl"
    data.write_text('{"prompt": "", "completion": "yo"}\n{"prompt": "hello there", "completion": "a b c d e f g h"}\n'
                    '{"prompt": "2+2=", "completion": "4"}\n')
    out, report = tmp_path / f"o{suffix}", tmp_path / "r.json"
    capsys.readouterr()
    assert main(["invert", str(data), "-o", str(out), "--json", str(report)]) == 0
    err = capsys.readouterr().err
    assert "1 record(s) with an empty prompt" in err and f"{data}:1" in err
    recs = load_records(out)  # reloads cleanly: no empty output, no empty instruction
    assert len(recs) == 2 and all(r.output.strip() and r.instruction.strip() for r in recs)
    assert recs[0].output == "hello there" and (recs[1].instruction, recs[1].output) == ("2+2=", "4")
    rep = json.loads(report.read_text())
    assert rep["n_empty_prompt"] == 1 and rep["n_written"] == 2 and rep["n_left_out"] == 1 and rep["n_inverted"] == 1
