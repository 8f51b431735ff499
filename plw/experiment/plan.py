"""`plw sweep plan`: the grid with run IDs, status, and an estimate of tokens and time.

Tokens per run = the dataset's tokens after templating and truncation (counted with the run's
tokenizer) × epochs, or max_steps × global batch × mean example length when max_steps is set.
Time per run = tokens / throughput, where the throughput is, in order: measured on runs already
finished in this store (same model; wall time includes evaluation), `estimate.tokens_per_second`
in the spec, or a CPU figure for the built-in tiny model. Otherwise the time is left unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from plw.experiment.grid import Run, expand
from plw.experiment.spec import SweepSpec
from plw.results.schema import RESULT_FILE
from plw.results.store import ResultsStore

# Measured: `builtin:tiny` (64 hidden, 2 layers, 1 thread) trains + evaluates at roughly this many
# tokens/s on one CPU core with the quickstart settings (6,400 on a 4× oversubscribed 2-core box);
# only a default until a run in the store has finished.
BUILTIN_TINY_TOKENS_PER_S = 10000.0


@dataclass
class PlannedRun:
    run: Run
    status: str  # "finished", "partial" (interrupted; restarts), "pending"
    tokens: int | None
    seconds: float | None


def plan(spec: SweepSpec) -> list[PlannedRun]:
    store = ResultsStore(spec.store_dir())
    runs = expand(spec)
    throughput = _observed_throughput(store)
    cache: dict[tuple, tuple[int, int] | None] = {}
    out = []
    for run in runs:
        status = ("finished" if store.is_finished(run.run_id)
                  else "partial" if store.run_dir(run.run_id).exists() else "pending")
        tokens = _run_tokens(run, cache)
        tps = throughput.get(run.model) or spec.estimate.tokens_per_second or (
            BUILTIN_TINY_TOKENS_PER_S if run.model == "builtin:tiny" else None)
        seconds = tokens / tps if (tokens is not None and tps) else None
        out.append(PlannedRun(run, status, tokens, seconds))
    return out


def _observed_throughput(store: ResultsStore) -> dict[str, float]:
    """Tokens per second of finished runs in the store, per model (wall time includes evaluation)."""
    tokens: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for run_id in store.finished_ids():
        try:
            res = store.read_result(run_id)
        except Exception:  # a hand-edited file must not break planning
            continue
        model = res.get("config", {}).get("model")
        t, s = res.get("metrics", {}).get("train_tokens"), res.get("wall_time_s")
        if model and t and s:
            tokens[model] = tokens.get(model, 0.0) + float(t)
            seconds[model] = seconds.get(model, 0.0) + float(s)
    return {m: tokens[m] / seconds[m] for m in tokens if seconds[m] > 0}


def _run_tokens(run: Run, cache: dict) -> int | None:
    """Estimated training tokens of one run (None when the data cannot be read here)."""
    from plw.train.config import TrainConfig

    try:
        cfg = TrainConfig.model_validate(run.train_config(run.dataset.source, "unused"))
    except Exception:
        return None
    key = (run.dataset.source, run.dataset.format, run.model, cfg.tokenizer, cfg.template,
           cfg.max_length, run.dataset.invert)
    if key not in cache:
        cache[key] = _dataset_tokens(run, cfg)
    counted = cache[key]
    if counted is None:
        return None
    total, n = counted
    if n == 0:
        return 0
    train_share = 1.0 - cfg.val_fraction if n > 1 else 1.0
    if cfg.max_steps and cfg.max_steps > 0:
        return int(cfg.max_steps * cfg.global_batch_size * total / n)
    return int(math.ceil(total * train_share * cfg.num_epochs))


def _dataset_tokens(run: Run, cfg) -> tuple[int, int] | None:
    """(tokens, examples) of the dataset as templated and truncated for training."""
    try:
        from plw.data import load_records
        from plw.data.templates import render
        from plw.data.tokenizer import count_tokens

        from plw.experiment.execute import tokenizer_for

        records = load_records(run.dataset.source, format=run.dataset.format)
        tok = tokenizer_for(run)
        texts = []
        for r in records:
            prompt, completion = render(r, r.format if cfg.template == "auto" else cfg.template, tok)
            texts.append(prompt + completion)
        counts = count_tokens(tok, texts)
    except Exception:  # e.g. a hub dataset offline: the plan still prints, without tokens
        return None
    return sum(min(c + 2, cfg.max_length) for c in counts), len(counts)  # + BOS and EOS


def status_counts(planned: list[PlannedRun]) -> dict[str, int]:
    out = {"finished": 0, "partial": 0, "pending": 0}
    for p in planned:
        out[p.status] += 1
    return out


__all__ = ["PlannedRun", "plan", "status_counts", "RESULT_FILE"]
