"""A benchmark as plw runs and reports it; where local evaluation data live by default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# ../shared/data beside the repository: present in development checkouts, absent elsewhere.
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark: the lm-eval task (registry name or config dict) and how plw reports it."""

    benchmark: str           # name in plw's results table
    task: str | dict         # lm-eval registry name or inline config
    metric: str              # primary metric reported as the benchmark's score
    num_fewshot: int | None = 0  # None: the task's own setting (0 when it has none)

    @property
    def task_name(self) -> str:
        return self.task if isinstance(self.task, str) else self.task["task"]


def in_memory_dataset(docs: list[dict], **_metadata):
    """lm-eval `custom_dataset` hook (it passes the task metadata as keyword arguments):
    the documents as the task's validation split, built in memory, never cached on disk."""
    import datasets

    return datasets.DatasetDict({"validation": datasets.Dataset.from_list(docs)})


def multiple_choice_task(name: str, docs: list[dict], *, doc_to_text: str, doc_to_choice: str,
                         **extra) -> dict:
    """lm-eval config of a 0-shot multiple-choice task over in-memory `docs` (label = index)."""
    import functools

    return {
        "task": name,
        "custom_dataset": functools.partial(in_memory_dataset, docs),
        "output_type": "multiple_choice",
        "validation_split": "validation",
        "doc_to_text": doc_to_text,
        "doc_to_target": "label",
        "doc_to_choice": doc_to_choice,
        "num_fewshot": 0,
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
        **extra,
    }
