"""plw.eval.evaluate through the real lm-evaluation-harness, checked against an independent
fp64 loglikelihood computation; the suites resolve; bad input fails with one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from plw.errors import PLWError
from plw.eval import evaluate, resolve_suite
from plw.eval import local_tasks


def _loglik_fp64(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context): encode the whole text, score the tokens past the context."""
    whole = tokenizer(context + continuation)["input_ids"]
    ctx = tokenizer(context)["input_ids"]
    assert whole[:len(ctx)] == ctx
    m = model.to(torch.float64)
    try:
        with torch.no_grad():
            logits = m(torch.tensor([whole])).logits[0].double()
    finally:
        model.to(torch.float32)
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


@pytest.fixture(scope="module")
def task_manager():
    from pathlib import Path

    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    # Indexing all of lm-eval's task YAMLs takes ~10 s; the registry tasks used here suffice.
    root = Path(lm_eval.tasks.__file__).parent
    return TaskManager(include_defaults=False,
                       include_path=[root / d for d in ("arc", "piqa", "winogrande")])


@pytest.fixture(scope="module")
def bench(shared):
    return shared / "data" / "bench"


def test_offline_suite_matches_independent_fp64_scores(eval_model, eval_tokenizer, bench):
    n = 5
    rows = evaluate(eval_model, eval_tokenizer, "offline", limit=n, batch_size=4, data_dir=bench)
    got = {r["benchmark"]: r for r in rows}
    assert set(got) == {"piqa", "truthfulqa_mc2"}
    assert all(r["group"] == "mc" for r in rows)

    piqa = local_tasks.read_piqa(bench)[:n]
    correct = []
    for d in piqa:
        ctx = f"Question: {d['goal']}\nAnswer:"
        ll = [_loglik_fp64(eval_model, eval_tokenizer, ctx, " " + s) for s in (d["sol1"], d["sol2"])]
        correct.append(float(np.argmax(ll) == d["label"]))
    assert got["piqa"]["metric"] == "acc"
    assert got["piqa"]["score"] == pytest.approx(np.mean(correct), abs=1e-12)

    mc2 = []
    for d in local_tasks.read_truthfulqa(bench)[:n]:
        ctx = f"{local_tasks.QA_PRIMER}\n\nQ: {d['question']}\nA:"
        answers = d["correct_answers"] + d["incorrect_answers"]
        ll = np.array([_loglik_fp64(eval_model, eval_tokenizer, ctx, " " + a) for a in answers])
        p = np.exp(ll - ll.max())
        mc2.append(p[: len(d["correct_answers"])].sum() / p.sum())
    assert got["truthfulqa_mc2"]["score"] == pytest.approx(np.mean(mc2), abs=2e-5)
    assert 0.0 < got["truthfulqa_mc2"]["score"] < 1.0


def test_truthfulqa_gen_scores_the_model_greedy_answer(eval_model, eval_tokenizer, bench):
    from plw.eval.generation import generate

    rows = evaluate(eval_model, eval_tokenizer, ["truthfulqa_gen"], limit=2, data_dir=bench,
                    all_metrics=True)
    scores = {r["metric"]: r["score"] for r in rows}
    assert set(scores) == set(local_tasks.TRUTHFULQA_GEN_METRICS)  # BLEU and ROUGE-1/2/L
    assert {r["group"] for r in rows} == {"gen"}
    # Re-score plw's own greedy generation of the same prompts (cut at the stop strings).
    docs = local_tasks.truthfulqa_gen_docs(local_tasks.read_truthfulqa(bench))[:2]
    prompts = [f"{local_tasks.QA_PRIMER}\n\nQ: {d['question']}\nA:" for d in docs]
    outs = []
    for g in generate(eval_model, eval_tokenizer, prompts, max_new_tokens=64, progress=False):
        text = g.text
        for stop in ("\n\n", "\nQ:"):
            text = text.split(stop)[0]
        outs.append(text)
    ref = [local_tasks.truthfulqa_gen_scores(o, d["correct_answers"], d["incorrect_answers"])
           for o, d in zip(outs, docs)]
    for metric in scores:
        assert scores[metric] == pytest.approx(np.mean([r[metric] for r in ref]), abs=1e-9)


def test_builtin_suite_needs_no_files_and_is_quick(eval_model, eval_tokenizer):
    import time

    eval_model.train()
    start = time.perf_counter()
    rows = evaluate(eval_model, eval_tokenizer, "builtin", limit=8, batch_size=8)
    assert time.perf_counter() - start < 30
    assert eval_model.training  # the caller's mode is restored
    eval_model.eval()
    by = {r["benchmark"]: r for r in rows}
    assert by["builtin_mc"]["group"] == "mc" and by["builtin_mc"]["metric"] == "acc"
    assert by["builtin_gen"]["group"] == "gen" and by["builtin_gen"]["metric"] == "exact_match"
    for r in rows:
        assert 0.0 <= r["score"] <= 1.0 and math.isfinite(r["score"])
    assert set(rows[0]) == {"benchmark", "metric", "score", "group"}


def test_builtin_mc_docs_hold_the_true_completion_once(eval_tokenizer):
    from plw.data.synthetic import generate
    from plw.data.templates import render
    from plw.eval.builtin_tasks import HELDOUT_SEED, builtin_mc_docs

    docs = builtin_mc_docs(eval_tokenizer, n=20)
    truth = [render(r, "alpaca", eval_tokenizer) for r in generate(20, seed=HELDOUT_SEED)]
    for d, (prompt, completion) in zip(docs, truth):
        assert d["prompt"] == prompt
        assert d["choices"][d["label"]] == completion
        assert d["choices"].count(completion) == 1 and len(set(d["choices"])) == 4
    assert builtin_mc_docs(eval_tokenizer, n=20) == docs  # deterministic


def test_paper_preset_resolves_to_valid_task_configs(task_manager):
    from lm_eval.config.task import TaskConfig
    from lm_eval.tasks._yaml_loader import load_yaml

    tm = task_manager
    specs = resolve_suite("paper", task_manager=tm)
    assert [s.benchmark for s in specs] == [
        "arc_challenge", "piqa", "truthfulqa_mc2", "winogrande", "truthfulqa_gen",
        "wmt14_en_fr", "wmt14_fr_en", "wmt16_en_de", "wmt16_de_en", "wmt16_en_ro", "wmt16_ro_en"]
    shots = {s.benchmark: s.num_fewshot for s in specs}
    assert shots["arc_challenge"] == 25 and shots["winogrande"] == 5 and shots["piqa"] == 0
    assert all(shots[b] == 0 for b in shots if b.startswith(("wmt", "truthfulqa")))
    for spec in specs:
        if isinstance(spec.task, str):  # lm-eval registry task: its YAML parses to a config
            entry = tm.task_index[spec.task]
            cfg = TaskConfig(**load_yaml(entry.yaml_path, resolve_func=True))
        else:
            cfg = TaskConfig(**spec.task)
        assert cfg.task == spec.task_name
        metrics = [m["metric"] for m in cfg.metric_list]
        assert spec.metric in metrics or spec.metric == "acc_norm" and "acc_norm" in metrics
    wmt = {s.benchmark: s.task for s in specs}
    assert wmt["wmt14_en_fr"]["doc_to_text"].startswith(
        "Translate the following from English to French\n")
    assert wmt["wmt16_ro_en"]["doc_to_text"].startswith(
        "Translate the following from Romanian to English\n")
    assert wmt["wmt16_de_en"]["doc_to_target"] == " {{translation['en']}}"


def test_registry_task_names_resolve_and_unknown_names_fail(tmp_path, task_manager):
    specs = resolve_suite(["arc_easy"], task_manager=task_manager)
    assert specs[0].task == "arc_easy" and specs[0].metric == "*"
    assert specs[0].num_fewshot is None  # the task's own setting
    with pytest.raises(PLWError, match="group or tag"):
        resolve_suite(["ai2_arc"], task_manager=task_manager)
    with pytest.raises(PLWError, match="unknown task 'no_such_task'") as err:
        resolve_suite(["builtin_mc", "no_such_task"], task_manager=task_manager)
    assert err.value.field == "suite"
    with pytest.raises(PLWError, match="requested twice"):
        resolve_suite(["piqa", "offline"], data_dir=tmp_path)  # fails before reading files
    with pytest.raises(PLWError, match="empty"):
        resolve_suite([])


def test_missing_benchmark_dir_names_the_path(tmp_path, eval_model, eval_tokenizer):
    with pytest.raises(PLWError) as err:
        evaluate(eval_model, eval_tokenizer, "offline", data_dir=tmp_path / "nope")
    assert str(tmp_path / "nope") in err.value.one_line()


def test_user_task_yaml_from_include_path(tmp_path, eval_model, eval_tokenizer):
    """An lm-eval task YAML of the user's, over a local JSONL file, named in the suite."""
    docs = [{"q": f"Add {i} and {i + 1}.", "choices": [str(2 * i + 1), str(2 * i), "seven"],
             "label": i % 3} for i in range(4)]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "user_add.yaml").write_text(f"""\
task: user_add
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
  cache_dir: {tmp_path / "cache"}
output_type: multiple_choice
validation_split: validation
doc_to_text: "{{{{q}}}}"
doc_to_target: label
doc_to_choice: "{{{{choices}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    rows = evaluate(eval_model, eval_tokenizer, ["user_add", "builtin_mc"], limit=4,
                    include_path=tasks)
    assert [(r["benchmark"], r["metric"]) for r in rows] == [("user_add", "acc"),
                                                              ("builtin_mc", "acc")]
    expected = np.mean([
        float(np.argmax([_loglik_fp64(eval_model, eval_tokenizer, d["q"], " " + c)
                         for c in d["choices"]]) == d["label"]) for d in docs])
    assert rows[0]["score"] == pytest.approx(expected, abs=1e-12)


def test_paper_suite_gets_the_full_task_registry():
    from plw.eval.harness import task_manager_for

    assert task_manager_for(["builtin", "piqa"]).all_tasks == []
    tm = task_manager_for(["paper"], include_path=None)
    assert {"arc_challenge", "piqa", "winogrande"} <= set(tm.all_tasks)


def _offline(spec, docs):
    """The paper spec with its hub data swapped for in-memory documents of the same shape."""
    import dataclasses
    import functools

    from plw.eval.spec import in_memory_dataset

    cfg = {k: v for k, v in spec.task.items() if k not in ("dataset_path", "dataset_name")}
    cfg["custom_dataset"] = functools.partial(in_memory_dataset, docs)
    return dataclasses.replace(spec, task=cfg)


def test_paper_wmt_task_runs_with_the_paper_instruction(eval_model, eval_tokenizer):
    import sacrebleu

    from plw.eval.generation import generate

    spec = next(s for s in resolve_suite("paper")
                if s.benchmark == "wmt16_en_de")
    docs = [{"translation": {"en": "The cat sleeps.", "de": "Die Katze schläft."}},
            {"translation": {"en": "Good morning, friend.", "de": "Guten Morgen, Freund."}}]
    rows = evaluate(eval_model, eval_tokenizer, [_offline(spec, docs)], all_metrics=True)
    scores = {r["metric"]: r["score"] for r in rows}
    assert set(scores) == {"bleu", "chrf", "ter"} and {r["group"] for r in rows} == {"gen"}
    prompts = [f"Translate the following from English to German\nEnglish: {d['translation']['en']}"
               f"\nGerman:" for d in docs]
    preds = [g.text.split("\n")[0] for g in generate(eval_model, eval_tokenizer, prompts,
                                                    max_new_tokens=256, progress=False)]
    refs = [d["translation"]["de"] for d in docs]
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-9)


def test_paper_truthfulqa_configs_read_hub_shaped_documents(eval_model, eval_tokenizer):
    specs = {s.benchmark: s for s in resolve_suite("paper")}
    mc = [{"question": "Is the sky green?",
           "mc2_targets": {"choices": ["No.", "Yes.", "Always."], "labels": [1, 0, 0]}}]
    gen = [{"question": "Is the sky green?", "correct_answers": ["No", "It is blue"],
            "incorrect_answers": ["Yes"]}]
    rows = evaluate(eval_model, eval_tokenizer, [_offline(specs["truthfulqa_mc2"], mc),
                                                 _offline(specs["truthfulqa_gen"], gen)])
    by = {r["benchmark"]: r for r in rows}
    ctx = f"{local_tasks.QA_PRIMER}\n\nQ: Is the sky green?\nA:"
    ll = np.array([_loglik_fp64(eval_model, eval_tokenizer, ctx, " " + a)
                   for a in ("No.", "Yes.", "Always.")])
    p = np.exp(ll - ll.max())
    assert by["truthfulqa_mc2"]["score"] == pytest.approx(p[0] / p.sum(), abs=2e-5)
    assert by["truthfulqa_gen"]["metric"] == "bleu_acc" and by["truthfulqa_gen"]["group"] == "gen"


def test_progress_false_silences_lm_eval_bars_and_keeps_scores(eval_model, eval_tokenizer, capfd):
    loud = evaluate(eval_model, eval_tokenizer, "builtin", limit=8, batch_size=8)
    assert "Running loglikelihood requests" in capfd.readouterr().err
    quiet = evaluate(eval_model, eval_tokenizer, "builtin", limit=8, batch_size=8, progress=False)
    err = capfd.readouterr().err
    assert "Running loglikelihood requests" not in err
    assert "Running generate_until requests" not in err
    assert "it/s]" not in err and "%|" not in err  # no bar of any kind (task request building too)
    assert quiet == loud
