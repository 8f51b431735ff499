"""Benchmark evaluation of an in-memory model through lm-evaluation-harness.

`evaluate(model, tokenizer, suite)` wraps the model with lm-eval's `HFLM` (no re-download,
no re-load), resolves the suite to lm-eval tasks, runs `lm_eval.evaluator.evaluate` and
returns one row per benchmark: `{"benchmark", "metric", "score", "group"}`, where group is
"mc" (loglikelihood multiple choice) or "gen" (generation).

Suites: "builtin" (held-out synthetic tasks, no files), "offline" (PIQA + TruthfulQA-MC2
from local files), "paper" (the paper's lm-eval suite; needs the hub), or a list mixing
suite names, plw task names (`piqa`, `truthfulqa_mc2`, `truthfulqa_gen`, `builtin_mc`,
`builtin_gen`), lm-eval registry task names (then every metric is reported) and `TaskSpec`s
(an inline lm-eval config with the benchmark name and primary metric to report).
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Sequence

from plw.errors import PLWError
from plw.eval.spec import TaskSpec

SUITES = ("builtin", "offline", "paper")
OFFLINE_TASKS = ("piqa", "truthfulqa_mc2")
BUILTIN_TASKS = ("builtin_mc", "builtin_gen")
LOCAL_TASKS = ("piqa", "truthfulqa_mc2", "truthfulqa_gen")


def _plw_task(name: str, tokenizer, data_dir) -> TaskSpec:
    from plw.eval import builtin_tasks, local_tasks

    if name == "piqa":
        return TaskSpec("piqa", local_tasks.piqa_task(data_dir), "acc")
    if name == "truthfulqa_mc2":
        return TaskSpec("truthfulqa_mc2", local_tasks.truthfulqa_mc2_task(data_dir), "acc")
    if name == "truthfulqa_gen":
        return TaskSpec("truthfulqa_gen", local_tasks.truthfulqa_gen_task(data_dir), "bleu_acc")
    if name == "builtin_mc":
        return TaskSpec("builtin_mc", builtin_tasks.builtin_mc_task(tokenizer), "acc")
    if name == "builtin_gen":
        return TaskSpec("builtin_gen", builtin_tasks.builtin_gen_task(tokenizer), "exact_match")
    raise KeyError(name)


def resolve_suite(suite: str | Sequence[str | TaskSpec], tokenizer=None, *, data_dir=None,
                  task_manager=None) -> list[TaskSpec]:
    """The task specs of a suite name or of a list of suite/task names (unknown → PLWError)."""
    from plw.eval.paper import paper_specs

    names = [suite] if isinstance(suite, str) else list(suite)
    if not names:
        raise PLWError("empty list of tasks", field="suite")
    expanded: list[str | TaskSpec] = []
    for name in names:
        if isinstance(name, TaskSpec):  # an inline task of the caller's
            expanded.append(name)
            continue
        if not isinstance(name, str):
            raise PLWError(f"task names must be strings, got {name!r}", field="suite")
        if name == "paper":
            expanded += paper_specs()
        elif name == "offline":
            expanded += OFFLINE_TASKS
        elif name == "builtin":
            expanded += BUILTIN_TASKS
        elif name in LOCAL_TASKS or name in BUILTIN_TASKS:
            expanded.append(name)
        else:
            if task_manager is None:  # indexing lm-eval's task YAMLs takes seconds: once
                task_manager = _task_manager(None)
            if name not in task_manager.all_tasks:
                raise PLWError(f"unknown task {name!r} (suites: {', '.join(SUITES)}; plw tasks: "
                               f"{', '.join(LOCAL_TASKS + BUILTIN_TASKS)}; or an lm-eval task)",
                               field="suite")
            if name not in task_manager.all_subtasks:
                raise PLWError(f"{name!r} is an lm-eval group or tag; name its tasks instead",
                               field="suite")
            expanded.append(TaskSpec(name, name, metric="*", num_fewshot=None))
    benchmarks = [e.benchmark if isinstance(e, TaskSpec) else e for e in expanded]
    for b in benchmarks:
        if benchmarks.count(b) > 1:
            raise PLWError(f"benchmark {b!r} requested twice", field="suite")
    # Build plw's own tasks only now: they read their files, which may fail.
    return [e if isinstance(e, TaskSpec) else _plw_task(e, tokenizer, data_dir) for e in expanded]


def _paths(include_path) -> list[str] | None:
    if not include_path:
        return None
    if isinstance(include_path, (str, Path)):
        include_path = [include_path]
    return [str(p) for p in include_path]


def _task_manager(include_path):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=_paths(include_path))


def task_manager_for(names: Sequence[str | TaskSpec], include_path=None):
    """The cheapest lm-eval `TaskManager` that knows every task in `names`: indexing lm-eval's
    thousands of task YAMLs takes seconds, so only when a registry task is named."""
    from lm_eval.tasks import TaskManager

    tasks = [n.task if isinstance(n, TaskSpec) else n for n in names]
    others = [n for n in tasks if isinstance(n, str)
              and n not in ("builtin", "offline") + LOCAL_TASKS + BUILTIN_TASKS]
    if not others:
        return TaskManager(include_defaults=False)  # inline configs only
    if include_path and "paper" not in others:
        tm = TaskManager(include_defaults=False, include_path=_paths(include_path))
        if all(n in tm.all_tasks for n in others):
            return tm
    return _task_manager(include_path)


@contextlib.contextmanager
def _quiet_lm_eval(verbose: bool):
    """lm-eval logs several warnings per task at INFO/WARNING; keep them out of sweeps."""
    logger = logging.getLogger("lm_eval")
    old = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def evaluate(model, tokenizer, suite: str | Sequence[str | TaskSpec] = "builtin", *,
             limit: int | float | None = None, batch_size: int = 8,
             data_dir: str | Path | None = None, include_path=None,
             max_length: int | None = None, fewshot_seed: int = 1234,
             all_metrics: bool = False, verbose: bool = False,
             progress: bool = True) -> list[dict]:
    """Evaluate an in-memory causal LM on a suite; one row per benchmark (or per metric).

    `limit` caps the documents per task (a fraction when < 1), for quick runs.
    `include_path` adds directories of lm-eval task YAMLs whose names `suite` may use.
    `all_metrics` reports every metric of every task instead of each benchmark's primary one.
    `progress=False` silences lm-eval's per-request tqdm bars (e.g. under a caller's own display).
    """
    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM

    names = [suite] if isinstance(suite, str) else list(suite)
    with _quiet_lm_eval(verbose):
        tm = task_manager_for(names, include_path)
        specs = resolve_suite(names, tokenizer, data_dir=data_dir, task_manager=tm)
        loaded = tm.load([s.task for s in specs])
        for spec in specs:
            task = loaded["tasks"][spec.task_name]
            if spec.num_fewshot is not None or task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=spec.num_fewshot or 0)
            task.set_fewshot_seed(seed=fewshot_seed)

        with _eval_mode(model), _request_bars(progress):  # HFLM itself switches to eval mode
            lm_class = HFLM if progress else _quiet(HFLM)
            lm = lm_class(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                          max_length=max_length)
            out = evaluator.evaluate(lm=lm, task_dict=loaded, limit=limit, bootstrap_iters=0,
                                     log_samples=False)
    return _rows(specs, loaded, out["results"], all_metrics)


@contextlib.contextmanager
def _request_bars(progress: bool):
    """Building a task's requests shows a tqdm bar per task that no lm-eval argument turns off;
    without progress, that module's tqdm is a disabled one for the duration of the call."""
    if progress:
        yield
        return
    import functools

    from lm_eval.api import task as task_module

    original = task_module.tqdm
    task_module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        task_module.tqdm = original


def _quiet(hflm_class):
    """HFLM whose request methods never show tqdm bars (the evaluator passes no such switch)."""

    class QuietHFLM(hflm_class):
        def loglikelihood(self, requests, disable_tqdm=False):
            return super().loglikelihood(requests, disable_tqdm=True)

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            return super().loglikelihood_rolling(requests, disable_tqdm=True)

        def generate_until(self, requests, disable_tqdm=False):
            return super().generate_until(requests, disable_tqdm=True)

    return QuietHFLM


def _rows(specs: list[TaskSpec], loaded: dict, results: dict, all_metrics: bool) -> list[dict]:
    rows = []
    for spec in specs:
        task = loaded["tasks"][spec.task_name]
        group = "mc" if task.get_config("output_type") in ("multiple_choice", "loglikelihood") \
            else "gen"
        scores = {k.split(",")[0]: v for k, v in results[spec.task_name].items()
                  if "," in k and "_stderr" not in k and isinstance(v, (int, float))}
        if all_metrics or spec.metric == "*":
            picked = sorted(scores)
        else:
            if spec.metric not in scores:
                raise RuntimeError(f"{spec.task_name}: metric {spec.metric} missing from "
                                   f"lm-eval results {sorted(scores)}")
            picked = [spec.metric]
        for metric in picked:
            score = float(scores[metric])
            rows.append({"benchmark": spec.benchmark, "metric": metric,
                         "score": score if math.isfinite(score) else float("nan"),
                         "group": group})
    return rows
