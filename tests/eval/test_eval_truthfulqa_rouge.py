"""TruthfulQA-gen's BLEU and ROUGE are lm-eval's own: plw's per-document metrics equal those of
`lm_eval.tasks.truthfulqa.utils.process_results_gen` on real TruthfulQA rows (../shared) with
fixed completions, and the local and paper tasks list every metric lm-eval's task reports."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from plw.eval import evaluate, local_tasks, resolve_suite
from plw.eval.spec import TaskSpec

METRICS = {f"{m}_{stat}" for m in ("bleu", "rouge1", "rouge2", "rougeL")
           for stat in ("max", "acc", "diff")}


@pytest.fixture(scope="module")
def lm_eval_utils():
    from lm_eval.tasks.truthfulqa import utils

    return utils


@pytest.fixture(scope="module")
def rows(shared):
    """Raw TruthfulQA rows, shaped as the hub's `generation` config (answers without periods)."""
    path = shared / "data" / "bench"
    if not (path / "truthfulqa" / "TruthfulQA.csv").is_file():
        pytest.skip("TruthfulQA.csv not present in ../shared")
    return local_tasks.read_truthfulqa(path)


def _completions(doc: dict) -> list[str]:
    """Fixed answers exercising exact matches, mixed true/false text, lm-eval's " . " sentence
    split, newlines (rougeLsum sentences), case, repeated words and the empty answer."""
    true, false = doc["correct_answers"], doc["incorrect_answers"]
    words = (true[0] + " " + false[0]).split()
    tokens = true[0].split()
    cut = len(tokens) // 2
    return [
        true[0],
        false[-1],
        "I have no comment.",
        # A true answer's halves swapped into two " . "-separated sentences: rougeLsum's union
        # LCS over sentences finds both halves, a plain LCS of the whole text only one.
        " ".join(tokens[cut:]) + " . " + " ".join(tokens[:cut]),
        f"{false[0].lower().rstrip('.')}\nbut {true[0]}",
        " ".join(words[::-1][:7]),
        "The the the . . .",
        "",
    ]


def _assert_same(plw: dict, ref: dict):
    assert set(plw) == set(ref) == METRICS
    for key in ref:
        assert plw[key] == pytest.approx(float(ref[key]), abs=1e-9, rel=0), key


def test_documents_are_preprocessed_as_lm_eval(rows, lm_eval_utils):
    ours = local_tasks.truthfulqa_gen_docs(rows)
    assert ours == [lm_eval_utils.preprocess_function(r) for r in rows]
    # Hub rows may carry padding and empty answers: stripped and dropped as lm-eval does.
    raw = {"question": " Is the sky green? ", "correct_answers": [" No ", "", "It is blue."],
           "incorrect_answers": ["Yes", "  "]}
    assert local_tasks.truthfulqa_gen_docs([raw]) == [lm_eval_utils.preprocess_function(raw)]


def test_scores_equal_lm_eval_process_results(rows, lm_eval_utils):
    docs = local_tasks.truthfulqa_gen_docs(rows)
    # lm-eval's own function, untouched: 1000 bootstrap resamples per reference and ROUGE type
    # cost ~60 ms a reference, so the rows with the fewest references, one answer kind each.
    fewest = sorted(docs, key=lambda d: len(d["correct_answers"]) + len(d["incorrect_answers"]))
    for i, doc in enumerate(fewest[:8]):
        completion = _completions(doc)[i]
        _assert_same(local_tasks._process_gen(doc, [completion]),
                     lm_eval_utils.process_results_gen(doc, [completion]))


def test_scores_equal_lm_eval_on_many_rows(rows, lm_eval_utils, monkeypatch):
    from rouge_score import scoring

    # lm-eval aggregates each single ROUGE score with a bootstrap whose "mid" (the median of the
    # resampled means) of one sample is that sample whatever the number of resamples: one
    # resample keeps its arithmetic and makes 33 rows x 8 answers affordable.
    monkeypatch.setattr(lm_eval_utils.scoring, "BootstrapAggregator",
                        functools.partial(scoring.BootstrapAggregator, n_samples=1))
    docs = local_tasks.truthfulqa_gen_docs(rows)[::25]
    assert len(docs) >= 30
    acc = {"bleu": 0, "rouge1": 0, "rougeL": 0}
    for doc in docs:
        for completion in _completions(doc):
            ours = local_tasks._process_gen(doc, [completion])
            _assert_same(ours, lm_eval_utils.process_results_gen(doc, [completion]))
            for m in acc:
                acc[m] += ours[f"{m}_acc"]
    # The fixed answers reach both outcomes of every headline comparison.
    assert all(0 < n < len(docs) * 8 for n in acc.values())


def test_rouge_l_is_summary_level_over_lm_eval_sentences():
    # " . " becomes a sentence break: rougeLsum unions the LCS of each reference sentence, so
    # two answers in swapped order still match in full, where a plain LCS would not.
    s = local_tasks.sentence_rouge_t5("Cats purr . Dogs bark.", "Dogs bark . Cats purr.")
    assert s["rouge1"] == pytest.approx(100.0) and s["rougeL"] == pytest.approx(100.0)
    assert s["rouge2"] < 100.0
    assert local_tasks.sentence_rouge_t5("Cats purr.", "") == {"rouge1": 0.0, "rouge2": 0.0,
                                                              "rougeL": 0.0}


def test_local_and_paper_tasks_report_every_metric(eval_model, eval_tokenizer, rows, shared):
    bench = shared / "data" / "bench"
    rows_out = evaluate(eval_model, eval_tokenizer, ["truthfulqa_gen"], limit=2, data_dir=bench,
                        all_metrics=True, progress=False)
    assert {r["metric"] for r in rows_out} == METRICS
    assert {r["benchmark"] for r in rows_out} == {"truthfulqa_gen"}
    assert all(0.0 <= r["score"] <= 1.0 for r in rows_out if r["metric"].endswith("_acc"))
    # The headline metric the sweeps analyse is unchanged.
    (local,) = resolve_suite(["truthfulqa_gen"], data_dir=bench)
    assert local.metric == "bleu_acc"
    paper = next(s for s in resolve_suite("paper") if s.benchmark == "truthfulqa_gen")
    assert paper.metric == "bleu_acc"
    for spec in (local, paper):
        assert {m["metric"] for m in spec.task["metric_list"]} == METRICS
        assert spec.task["process_results"] is local_tasks._process_gen


def test_lm_eval_own_truthfulqa_gen_loads_and_lists_the_same_metrics(eval_model, eval_tokenizer,
                                                                     rows):
    """lm-eval's registry task (its YAML imports rouge_score) runs over local rows."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    from plw.eval.spec import in_memory_dataset

    yaml = Path(lm_eval.tasks.__file__).parent / "truthfulqa" / "truthfulqa_gen.yaml"
    cfg = load_yaml(yaml, resolve_func=True)
    assert {m["metric"] for m in cfg["metric_list"]} == METRICS
    cfg = {k: v for k, v in cfg.items() if k not in ("dataset_path", "dataset_name", "tag")}
    cfg["custom_dataset"] = functools.partial(in_memory_dataset, rows[:1])
    out = evaluate(eval_model, eval_tokenizer, [TaskSpec("lm_eval_gen", cfg, "*")],
                   all_metrics=True, progress=False)
    assert {r["metric"] for r in out} == METRICS
