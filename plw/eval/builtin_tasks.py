"""Held-out synthetic benchmarks that need no files (the quickstart's evaluation).

Documents come from `plw.data.synthetic` with a seed no training default uses, rendered
with the same Alpaca template the models are trained with:

- `builtin_mc`: the record's own completion against three completions of other records,
  scored by loglikelihood through lm-eval (`acc`, `acc_norm`);
- `builtin_gen`: greedy completion of short-completion records, `exact_match` against the
  reference (whitespace-stripped).
"""

from __future__ import annotations

import functools
import random

from plw.eval.spec import in_memory_dataset, multiple_choice_task

HELDOUT_SEED = 917_346  # disjoint from the seeds `builtin:*` training data use by default
N_DISTRACTORS = 3


def _records(n: int, seed: int, long_fraction: float):
    from plw.data.synthetic import generate

    return generate(n, seed=seed, long_fraction=long_fraction)


def _prompt_completion(record, tokenizer, template: str) -> tuple[str, str]:
    from plw.data.templates import render

    return render(record, template, tokenizer)  # the completion excludes EOS


def builtin_mc_docs(tokenizer, *, n: int = 200, seed: int = HELDOUT_SEED,
                    template: str = "alpaca") -> list[dict]:
    pairs = [_prompt_completion(r, tokenizer, template) for r in _records(n, seed, 0.5)]
    docs = []
    for i, (prompt, completion) in enumerate(pairs):
        others = []
        for j in range(1, len(pairs)):
            other = pairs[(i + j) % len(pairs)][1]
            if other != completion and other not in others:
                others.append(other)
            if len(others) == N_DISTRACTORS:
                break
        choices = [completion] + others
        random.Random(seed * 1_000_003 + i).shuffle(choices)
        docs.append({"prompt": prompt, "choices": choices, "label": choices.index(completion)})
    return docs


def builtin_gen_docs(tokenizer, *, n: int = 100, seed: int = HELDOUT_SEED + 1,
                     template: str = "alpaca") -> list[dict]:
    pairs = [_prompt_completion(r, tokenizer, template) for r in _records(n, seed, 0.0)]
    return [{"prompt": p, "reference": c} for p, c in pairs]


def _process_exact(doc: dict, results) -> dict:
    return {"exact_match": float(results[0].strip() == doc["reference"].strip())}



def builtin_mc_task(tokenizer, **kwargs) -> dict:
    # The Alpaca recipe appends the completion right after "### Response:".
    return multiple_choice_task("plw_builtin_mc", builtin_mc_docs(tokenizer, **kwargs),
                                doc_to_text="{{prompt}}", doc_to_choice="{{choices}}",
                                target_delimiter="")


def builtin_gen_task(tokenizer, *, max_gen_toks: int = 32, **kwargs) -> dict:
    return {
        "task": "plw_builtin_gen",
        "custom_dataset": functools.partial(in_memory_dataset, builtin_gen_docs(tokenizer, **kwargs)),
        "output_type": "generate_until",
        "validation_split": "validation",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{reference}}",
        "target_delimiter": "",
        "process_results": _process_exact,
        "num_fewshot": 0,
        "generation_kwargs": {"until": ["\n\n###", "### Instruction:"], "do_sample": False,
                              "temperature": 0.0, "max_gen_toks": max_gen_toks},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
