"""Generation metrics: batched left-padded greedy generation equals a naive greedy loop;
lengths count tokens before EOS; memorisation BLEU is sacreBLEU corpus BLEU with the
paper's signature."""

from __future__ import annotations

import pytest
import torch

from plw.data.records import Record
from plw.data.templates import render
from plw.errors import PLWError
from plw.eval.generation import (BLEU_SIGNATURE, corpus_bleu, generate, generation_lengths,
                                 memorization_bleu, sample_unique_prompts)


def _naive_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> list[int]:
    """Full forward pass per step, no cache, no padding: the reference decoder."""
    ids = tokenizer(prompt)["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if nxt == tokenizer.eos_token_id:
                break
            new.append(nxt)
    return new


def _eos_stopping_model(model, tokenizer, prompts, max_new_tokens):
    """A copy of the model whose EOS logit equals that of a token the model generates for
    some prompts but not all, so some generations stop early (ties go to the lower id, EOS)."""
    import collections
    import copy

    seqs = [_naive_greedy(model, tokenizer, p, max_new_tokens) for p in prompts]
    counts = collections.Counter(t for s in seqs for t in set(s))
    token = next(t for t, c in counts.most_common() if c < len(prompts) and t > tokenizer.eos_token_id)
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        m.lm_head.weight[tokenizer.eos_token_id] = m.lm_head.weight[token]
    return m


PROMPTS = ["Add the numbers 3 and 4.", "Write a short story about a quiet turtle.",
           "List the integers from 1 to 5.", "Name a colour", "Q: Where is Paris?\nA:"]


def test_batched_generation_equals_naive_greedy(eval_model, eval_tokenizer):
    model = _eos_stopping_model(eval_model, eval_tokenizer, PROMPTS, 12)
    ref = [_naive_greedy(model, eval_tokenizer, p, 12) for p in PROMPTS]
    assert 0 < sum(len(r) < 12 for r in ref) < len(PROMPTS)  # some stop early, some do not
    for batch_size in (1, 3, 8):
        gens = generate(model, eval_tokenizer, PROMPTS, max_new_tokens=12,
                        batch_size=batch_size, progress=False)
        assert [g.n_tokens for g in gens] == [len(r) for r in ref]
        assert [g.text for g in gens] == [eval_tokenizer.decode(r) for r in ref]
        assert [g.stopped for g in gens] == [len(r) < 12 for r in ref]
    assert eval_tokenizer.padding_side == "right"  # the caller's tokenizer is left as it was


def test_generation_lengths_on_instructions(eval_model, eval_tokenizer):
    instructions = ["Say hi.", "Count to three.", "Describe a fox.", "Name a colour."]
    prompts = [render(Record(instruction=i, output="x"), "alpaca", eval_tokenizer)[0]
               for i in instructions]
    model = _eos_stopping_model(eval_model, eval_tokenizer, prompts, 10)
    report = generation_lengths(model, eval_tokenizer, instructions, max_new_tokens=10,
                                batch_size=2, progress=False)
    expected = [len(_naive_greedy(model, eval_tokenizer, p, 10)) for p in prompts]
    assert report.lengths == expected
    assert report.instructions == instructions and len(report.outputs) == 4
    assert report.mean_length == pytest.approx(sum(expected) / 4)
    assert report.n_unstopped == sum(n == 10 for n in expected)
    assert 0 < report.n_unstopped < 4


def test_generation_lengths_default_to_alpaca_eval(eval_model, eval_tokenizer, shared):
    import json

    rows = json.loads((shared / "data/alpaca_eval/text_davinci_003_model_outputs.json").read_text())
    report = generation_lengths(eval_model, eval_tokenizer, limit=2, max_new_tokens=4,
                                progress=False)
    assert report.instructions == [r["instruction"] for r in rows[:2]]
    assert all(0 <= n <= 4 for n in report.lengths)


def test_corpus_bleu_signature_and_value():
    import sacrebleu

    hyps = ["the cat sat on the mat", "a quick brown dog jumps", "hello world"]
    refs = ["the cat sat on a mat", "the quick brown fox jumps over", "hello world !"]
    score, signature = corpus_bleu(hyps, refs)
    assert signature.startswith(BLEU_SIGNATURE + "|version:")
    assert signature.split("|")[:5] == ["nrefs:1", "case:mixed", "eff:no", "tok:13a", "smooth:exp"]
    assert score == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-12)
    assert 0 < score < 100
    assert corpus_bleu(refs, refs)[0] == pytest.approx(100.0)


def test_memorization_bleu_scores_greedy_completions(eval_model, eval_tokenizer):
    from plw.data.synthetic import generate as synth

    records = synth(12, seed=5, long_fraction=0.0)
    records += records[:4]  # duplicates must not be sampled twice
    report = memorization_bleu(eval_model, eval_tokenizer, records, n=6, seed=1,
                               max_new_tokens=8, batch_size=4, progress=False)
    assert report.n == 6
    assert report.signature.startswith(BLEU_SIGNATURE)
    pairs = sample_unique_prompts(records, 6, seed=1)
    assert report.references == [c for _, c in pairs]
    gens = generate(eval_model, eval_tokenizer, [p for p, _ in pairs], max_new_tokens=8,
                    progress=False)
    assert report.hypotheses == [g.text for g in gens]
    assert report.score == pytest.approx(corpus_bleu(report.hypotheses, report.references)[0])
    assert report.exact_match == sum(h.strip() == r.strip() for h, r in
                                     zip(report.hypotheses, report.references)) / 6


def test_memorization_of_one_word_completions_is_zero_bleu_but_exact(eval_model, eval_tokenizer):
    """BLEU-4 without effective order has no 4-grams to match in one-word completions: the
    model that reproduces every completion scores 0 BLEU and 100 % exact match."""
    instructions = [f"Echo {i}." for i in range(3)]
    prompts = [render(Record(instruction=i, output="x"), "alpaca", eval_tokenizer)[0]
               for i in instructions]
    gens = generate(eval_model, eval_tokenizer, prompts, max_new_tokens=2, progress=False)
    assert all(0 < len(g.text.split()) < 4 for g in gens)  # the premise: 1-3 word outputs
    memorised = [Record(instruction=i, output=g.text) for i, g in zip(instructions, gens)]
    report = memorization_bleu(eval_model, eval_tokenizer, memorised, n=3, max_new_tokens=2,
                               progress=False)
    assert report.hypotheses == report.references == [g.text for g in gens]
    assert report.exact_match == 1.0 and report.score == 0.0


def test_sample_unique_prompts():
    records = [Record(instruction=f"task {i % 5}", output=f"answer {i}") for i in range(20)]
    all_pairs = sample_unique_prompts(records, 100)
    assert len(all_pairs) == 5 and [c for _, c in all_pairs] == [f"answer {i}" for i in range(5)]
    a = sample_unique_prompts(records, 3, seed=7)
    assert a == sample_unique_prompts(records, 3, seed=7) and len({p for p, _ in a}) == 3
    assert a != sample_unique_prompts(records, 3, seed=8) or len(all_pairs) == 3


def test_bad_arguments_fail_with_field(eval_model, eval_tokenizer, tmp_path):
    with pytest.raises(PLWError, match="max_new_tokens"):
        generate(eval_model, eval_tokenizer, ["x"], max_new_tokens=0)
    with pytest.raises(PLWError) as err:
        generation_lengths(eval_model, eval_tokenizer, reference_file=tmp_path / "none.json")
    assert str(tmp_path / "none.json") in err.value.one_line()
    with pytest.raises(PLWError, match="no evaluation instructions"):
        generation_lengths(eval_model, eval_tokenizer, [])
