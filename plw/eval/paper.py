"""The paper's lm-eval suite (Table 2), as task specs for lm-evaluation-harness.

ARC-Challenge 25-shot, PIQA 0-shot and WinoGrande 5-shot are lm-eval's registry tasks.
TruthfulQA-MC2 and -gen are plw's own configs over the same hub data (plw's prompt and stop
strings); gen reports lm-eval's metrics, BLEU and ROUGE-1/2/L max/diff/acc computed as
lm-eval's `process_results_gen` does, with `bleu_acc` the headline. The six WMT directions are
zero-shot with the paper's instruction "Translate the following from <src_lang> to
<tgt_lang>" and are scored over validation + test together, as in the paper (§4, App. E).

These tasks download their data from the Hugging Face Hub when run.
"""

from __future__ import annotations

import functools
from plw.eval.local_tasks import truthfulqa_gen_config, truthfulqa_gen_docs, truthfulqa_mc2_config
from plw.eval.spec import TaskSpec

LANGS = {"en": "English", "fr": "French", "de": "German", "ro": "Romanian"}

# (hub dataset, config, source, target)
WMT_DIRECTIONS = [
    ("wmt/wmt14", "fr-en", "en", "fr"), ("wmt/wmt14", "fr-en", "fr", "en"),
    ("wmt/wmt16", "de-en", "en", "de"), ("wmt/wmt16", "de-en", "de", "en"),
    ("wmt/wmt16", "ro-en", "en", "ro"), ("wmt/wmt16", "ro-en", "ro", "en"),
]


def translation_prompt(src: str, tgt: str) -> str:
    """The paper's zero-shot instruction followed by the source sentence (a Jinja template)."""
    s, t = LANGS[src], LANGS[tgt]
    return (f"Translate the following from {s} to {t}\n"
            f"{s}: {{{{translation['{src}']}}}}\n{t}:")


def _wmt_val_test(path: str, name: str, **_metadata):
    """Validation and test joined into one split, scored as one corpus (paper App. E)."""
    import datasets

    ds = datasets.load_dataset(path, name)
    both = datasets.concatenate_datasets([ds["validation"], ds["test"]])
    return datasets.DatasetDict({"validation": both})


def wmt_task(path: str, name: str, src: str, tgt: str) -> dict:
    year = path.split("wmt")[-1]
    return {
        "task": f"plw_wmt{year}_{src}_{tgt}",
        "custom_dataset": functools.partial(_wmt_val_test, path, name),
        "output_type": "generate_until",
        "validation_split": "validation",
        "doc_to_text": translation_prompt(src, tgt),
        "doc_to_target": f" {{{{translation['{tgt}']}}}}",
        "num_fewshot": 0,
        "generation_kwargs": {"until": ["\n"], "do_sample": False, "temperature": 0.0},
        "metric_list": [
            {"metric": "bleu", "aggregation": "bleu", "higher_is_better": True},
            {"metric": "chrf", "aggregation": "chrf", "higher_is_better": True},
            {"metric": "ter", "aggregation": "ter", "higher_is_better": False},
        ],
        "metadata": {"version": 1.0},
    }


def _hub_gen_docs(dataset):
    return dataset.map(lambda d: truthfulqa_gen_docs([d])[0])


def _hub_mc2_docs(dataset):
    return dataset.map(lambda d: {"choices": d["mc2_targets"]["choices"],
                                  "labels": d["mc2_targets"]["labels"]})


def paper_specs() -> list[TaskSpec]:
    """The paper's eleven lm-eval benchmarks (Table 2)."""
    specs = [
        TaskSpec("arc_challenge", "arc_challenge", "acc_norm", 25),
        TaskSpec("piqa", "piqa", "acc", 0),
        TaskSpec("truthfulqa_mc2",
                 truthfulqa_mc2_config("plw_truthfulqa_mc2_hub",
                                       {"dataset_path": "truthfulqa/truthful_qa",
                                        "dataset_name": "multiple_choice"},
                                       process_docs=_hub_mc2_docs),
                 "acc", 0),
        TaskSpec("winogrande", "winogrande", "acc", 5),
        TaskSpec("truthfulqa_gen",
                 truthfulqa_gen_config("plw_truthfulqa_gen_hub",
                                       {"dataset_path": "truthfulqa/truthful_qa",
                                        "dataset_name": "generation"},
                                       process_docs=_hub_gen_docs),
                 "bleu_acc", 0),
    ]
    for path, name, src, tgt in WMT_DIRECTIONS:
        cfg = wmt_task(path, name, src, tgt)
        specs.append(TaskSpec(cfg["task"].removeprefix("plw_"), cfg, "bleu", 0))
    return specs
