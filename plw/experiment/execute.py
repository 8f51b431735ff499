"""One sweep cell, end to end: data variant → `train` → `evaluate` + generation metrics → rows.

This is the only module that calls the other packages; it uses their public functions
(`plw.train.train`, `plw.eval.evaluate`, `plw.eval.generation`, `plw.data.*`) and returns a
JSON-able result dict. Writing it to the store is the caller's job, so a Ray worker on another
machine can run it and the driver alone writes the store.
"""

from __future__ import annotations

import gc
import math
import random
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from plw import ui
from plw.errors import PLWError
from plw.experiment.grid import Run

DIAG_BENCHMARK = "diagnostics"


def execute(run: Run, run_dir: str | Path, *, data_source: str | None = None,
            progress: bool = True) -> dict[str, Any]:
    """Train and evaluate one run in `run_dir` (an empty or resumable folder); return its result."""
    import yaml

    from plw.io import write_text_atomic
    from plw.train import train
    from plw.train.config import TrainConfig

    t0 = time.time()
    run_dir = Path(run_dir)
    source = data_source or run.dataset.source
    if run.dataset.invert:
        source = str(materialise_inverted(run, source, run_dir / "data.jsonl"))
    cfg_dict = run.train_config(source, str(run_dir / "train"))
    cfg = TrainConfig.model_validate(cfg_dict)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(
        {"run_id": run.run_id, "config_hash": run.config_hash, "sweep_config": run.config,
         "train_config": cfg.model_dump(mode="json")}, sort_keys=False))

    result = train(cfg, progress=progress)
    try:
        records = list(result.train_records) + list(result.val_records or [])
        ratio = dataset_ratio(records, result.tokenizer)
        with _status(progress, f"evaluating on suite {run.eval['suite']!r}"):
            bench_rows = evaluate_benchmarks(run, result.model, result.tokenizer)
        memo: dict = {}  # greedy generations shared by the length metric and the judge
        gen = generation_metrics(run, result.model, result.tokenizer, list(result.train_records),
                                 progress=progress, memo=memo)
        judge_rows = judge_rows_for(run, result.model, result.tokenizer, progress=progress, memo=memo)
        metrics = {k: _jsonable(v) for k, v in dict(result.metrics).items()}
    finally:
        del result
        gc.collect()
    wall = time.time() - t0
    diagnostics = {
        "loss_rsd": metrics.get("loss_rsd"),
        "weight_l2": metrics.get("weight_l2"),
        "weight_minkowski": metrics.get("weight_minkowski"),
        "memorization_bleu": gen.get("memorization_bleu"),
        "generation_length": gen.get("generation_length"),
        "val_completion_nll": metrics.get("val_completion_nll"),
    }
    common = {
        "run_id": run.run_id, "config_hash": run.config_hash, "model": run.model,
        "dataset": run.dataset.name, "ratio": ratio, "plw": run.plw, "wp": run.wp,
        "regularizer": run.regularizer.name, "seed": run.seed, **diagnostics,
        "wall_time_s": wall, "train_tokens": int(metrics.get("train_tokens") or 0),
    }
    rows = [{**common, **r} for r in bench_rows + judge_rows]
    # Diagnostics also as rows of group "diag", so a run is in the table even without benchmarks.
    rows += [{**common, "benchmark": DIAG_BENCHMARK, "metric": name, "score": value, "group": "diag"}
             for name, value in diagnostics.items() if value is not None and _finite(value)]
    return {
        "run_id": run.run_id, "config_hash": run.config_hash, "config": run.config,
        "train_config": cfg.model_dump(mode="json"), "ratio": ratio, "metrics": metrics,
        "generation": gen, "wall_time_s": wall,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": rows,
    }


# ---- data -----------------------------------------------------------------------------

def tokenizer_for(run: Run):
    """The tokenizer the run's model uses (the built-in BPE for `builtin:*` models)."""
    from plw.data.tokenizer import load_tokenizer

    name = run.train_overrides.get("tokenizer") or run.model
    if str(name).startswith("builtin"):
        name = "builtin"
    return load_tokenizer(name)


def materialise_inverted(run: Run, source: str, path: Path) -> Path:
    """Write the inverted variant of the run's dataset to `path` (JSONL) and return it."""
    from plw.data import load_records
    from plw.data.inversion import invert_records

    from plw.io import write_text_atomic

    records = load_records(source, **run.dataset.load_options())
    inverted = invert_records(records, tokenizer_for(run), target_ratio=run.dataset.target_ratio)
    write_text_atomic(path, "".join(_record_json(r) + "\n" for r in inverted))
    return path


def _record_json(record) -> str:
    import json

    return json.dumps(record.to_json(), ensure_ascii=False)


def dataset_ratio(records, tokenizer) -> float:
    from plw.data.stats import dataset_stats

    return float(dataset_stats(records, tokenizer).ratio)


# ---- evaluation -----------------------------------------------------------------------

def evaluate_benchmarks(run: Run, model, tokenizer) -> list[dict]:
    from plw.eval import evaluate

    ev = run.eval
    # With progress on, the runner shows its own display (lm-eval's bars would interleave with
    # it); with it off, no bar at all.
    rows = evaluate(model, tokenizer, ev["suite"], limit=ev["limit"], batch_size=ev["batch_size"],
                    progress=False, **ev["options"])
    out = []
    for r in rows:
        out.append({"benchmark": str(r["benchmark"]), "metric": str(r["metric"]),
                    "score": float(r["score"]), "group": str(r.get("group", "mc"))})
    return out


def _lengths(model, tokenizer, instructions: list[str], memo: dict | None, **kw):
    """`generation_lengths`, memoised on (instructions, settings): greedy decoding is deterministic,
    so the judge can reuse the generation-length completions of the same AlpacaEval prompts."""
    from plw.eval.generation import generation_lengths

    key = (tuple(instructions), tuple(sorted((k, v) for k, v in kw.items() if k != "progress")))
    if memo is not None and key in memo:
        return memo[key]
    rep = generation_lengths(model, tokenizer, instructions, **kw)
    if memo is not None:
        memo[key] = rep
    return rep


def generation_metrics(run: Run, model, tokenizer, train_records: list, *,
                       progress: bool = True, memo: dict | None = None) -> dict[str, Any]:
    """Generation length on an evaluation prompt set and memorisation BLEU on training prompts."""
    from plw.eval import generation

    ev = run.eval
    out: dict[str, Any] = {}
    template = resolve_template(run, train_records)
    common = dict(template=template, max_new_tokens=ev["max_new_tokens"],
                  batch_size=ev["batch_size"], progress=progress)
    if ev["generation_prompts"] > 0:
        instructions, set_name = generation_instructions(ev["generation_set"])
        rep = _lengths(model, tokenizer, list(instructions)[:ev["generation_prompts"]], memo, **common)
        out.update(generation_length=float(rep.mean_length), generation_set=set_name,
                   generation_unstopped=rep.n_unstopped)
    if ev["memorization_prompts"] > 0 and train_records:
        rep = generation.memorization_bleu(model, tokenizer, train_records,
                                           n=ev["memorization_prompts"], seed=run.seed, **common)
        out.update(memorization_bleu=float(rep.score), memorization_signature=rep.signature,
                   memorization_n=rep.n)
    return out


def resolve_template(run: Run, records: list) -> str:
    """The run's template; "auto" (each record's own format) becomes the data's commonest format."""
    template = run.dataset.template or run.train_overrides.get("template", "auto")
    if template != "auto":
        return template
    formats = [r.format for r in records]
    return max(set(formats), key=formats.count) if formats else "alpaca"


# Held-out synthetic instructions (a seed no built-in data set uses by default).
BUILTIN_GENERATION_SEED = 9173


def generation_instructions(name: str) -> tuple[list[str] | None, str]:
    """The generation-length prompt set: AlpacaEval's instructions, held-out synthetic ones, or a
    local data file's instructions. `auto` = AlpacaEval when its file is present, else builtin."""
    if name in ("auto", "alpaca_eval"):
        from plw.eval.judge import load_alpaca_eval

        try:
            return list(load_alpaca_eval(None).instructions), "alpaca_eval"
        except (PLWError, OSError):
            if name == "alpaca_eval":
                raise
    if name in ("auto", "builtin"):
        from plw.data.synthetic import generate

        return [r.instruction for r in generate(256, seed=BUILTIN_GENERATION_SEED)], "builtin"
    from plw.data import load_records
    from plw.data.templates import as_alpaca

    return [as_alpaca(r)[0] for r in load_records(name)], name


def judge_rows_for(run: Run, model, tokenizer, *, progress: bool = True,
                   memo: dict | None = None) -> list[dict]:
    """AlpacaEval-1 win rate (percent) against the reference outputs, when a judge is configured."""
    judge = run.eval.get("judge")
    if not judge:
        return []
    from plw.eval.judge import load_alpaca_eval, win_rate

    config = {k: v for k, v in judge.items() if k not in ("reference_file", "limit")}
    ref = load_alpaca_eval(judge.get("reference_file"), limit=judge.get("limit"))
    template = resolve_template(run, [])
    gens = _lengths(model, tokenizer, list(ref.instructions), memo, template=template,
                    max_new_tokens=run.eval["max_new_tokens"], batch_size=run.eval["batch_size"],
                    progress=progress)
    rep = win_rate(ref.instructions, gens.outputs, ref.outputs, config, seed=run.seed,
                   progress=progress)
    return [{"benchmark": "alpaca_eval", "metric": "win_rate", "score": float(rep.win_rate),
             "group": "gen"}]


def _status(enabled: bool, text: str):
    """A rich spinner while lm-eval works (its own tqdm bars are silenced in `plw sweep run`)."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext()

    return ui.console(stderr=True).status(text)


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _jsonable(v):
    """Metrics as JSON values: numbers (incl. numpy/torch scalars), strings, lists, dicts."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
