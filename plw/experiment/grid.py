"""Grid expansion: the spec's factors → one `Run` per cell, with a stable run ID.

The run ID is a hash of the run's canonical config (model, dataset, PLW, regularizer, seed, the
training overrides and the evaluation settings), so it does not depend on the order of the grid,
on YAML spelling (`1e-2` vs `0.01`) or on where the store lives. Changing anything that changes
results gives a new ID; `plw sweep run` then trains that cell again. Evaluation knobs that only
change speed or output (`eval.batch_size`, `eval.options.verbose/progress`, the judge's
concurrency, timeouts, retries and API-key variable) are left out of the hash, so tuning them
keeps every finished run. So are training knobs that change only speed, memory or logging, not the
optimisation (`NEUTRAL_TRAIN_KEYS`: e.g. `per_device_batch_size`, since plw's one-normaliser-per-step
loss gives the same updates however the global batch is split into micro-batches).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from plw import P_EXPONENT
from plw.errors import PLWError
from plw.experiment.spec import DatasetSpec, RegularizerSpec, SweepSpec

RUN_ID_LENGTH = 12


@dataclass(frozen=True)
class Run:
    """One cell of the sweep."""

    run_id: str
    config_hash: str
    model: str
    dataset: DatasetSpec
    plw: float
    regularizer: RegularizerSpec
    seed: int
    train_overrides: dict[str, Any]  # spec.train merged with the regularizer's overrides
    eval: dict[str, Any]  # all evaluation settings (the hashed config omits the speed-only ones)
    config: dict[str, Any] = field(repr=False)  # the canonical config that was hashed

    @property
    def wp(self) -> float:
        return self.plw ** P_EXPONENT if self.plw > 0 else 0.0

    def train_config(self, data_source: str, output_dir: str) -> dict[str, Any]:
        """The dict given to `TrainConfig.model_validate` for this run."""
        cfg = dict(self.train_overrides)
        if self.dataset.template is not None:
            cfg["template"] = self.dataset.template
        cfg.update(model=self.model, data=data_source, prompt_loss_weight=self.plw, seed=self.seed,
                   output_dir=output_dir)
        return cfg


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, floats by repr (0.01 == 1e-2)."""
    return json.dumps(_normalise(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _normalise(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _normalise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return repr(obj)
        return int(obj) if obj.is_integer() and abs(obj) < 2**53 else obj
    return str(obj)


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


# Settings of `eval:` that do not change a run's results, only its speed or console output.
NEUTRAL_EVAL_KEYS = ("batch_size",)
NEUTRAL_EVAL_OPTIONS = ("verbose", "progress")  # keyword arguments of plw.eval.evaluate
NEUTRAL_JUDGE_KEYS = ("api_key_env", "timeout_s", "max_retries", "retry_backoff_s", "concurrency")


# Training settings that change speed, memory, logging or checkpointing but not the optimisation:
# the micro-batch split (the step's normaliser spans all micro-batches), the loss engine's backend
# and strategy (the same exact loss), activation recomputation and the attention kernel.
NEUTRAL_TRAIN_KEYS = ("per_device_batch_size", "gradient_checkpointing", "loss_backend", "loss_strategy",
                      "attn_implementation", "log_prompt_nll", "logging_steps", "eval_steps", "save_steps",
                      "save_total_limit", "resume", "report_to")


def hashed_train(train: dict[str, Any]) -> dict[str, Any]:
    """The part of a training-overrides block that goes into the run ID."""
    return {k: v for k, v in train.items() if k not in NEUTRAL_TRAIN_KEYS}


def hashed_eval(eval_cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of the evaluation settings that goes into the run ID (results-relevant keys only)."""
    out = {k: v for k, v in eval_cfg.items() if k not in NEUTRAL_EVAL_KEYS}
    if isinstance(out.get("options"), dict):
        out["options"] = {k: v for k, v in out["options"].items() if k not in NEUTRAL_EVAL_OPTIONS}
    if isinstance(out.get("judge"), dict):
        out["judge"] = {k: v for k, v in out["judge"].items() if k not in NEUTRAL_JUDGE_KEYS}
    return out


def expand(spec: SweepSpec) -> list[Run]:
    """All cells: models × datasets × regularizers × PLW levels × seeds (regularizer PLW filters apply)."""
    eval_cfg = spec.eval.model_dump(mode="json")
    eval_hashed = hashed_eval(eval_cfg)
    runs: list[Run] = []
    for model in spec.models:
        for dataset in spec.datasets:
            for reg in spec.regularizers:
                levels = spec.plw if reg.plw is None else reg.plw
                for plw in levels:
                    for seed in spec.seeds:
                        overrides = {**spec.train, **reg.train}
                        config = {
                            "model": model,
                            "dataset": dataset.model_dump(mode="json"),
                            "plw": float(plw),
                            "regularizer": {"name": reg.name, "train": hashed_train(reg.train)},
                            "seed": int(seed),
                            "train": hashed_train(spec.train),
                            "eval": eval_hashed,
                        }
                        h = config_hash(config)
                        runs.append(Run(run_id=h[:RUN_ID_LENGTH], config_hash=h, model=model,
                                        dataset=dataset, plw=float(plw), regularizer=reg,
                                        seed=int(seed), train_overrides=overrides, eval=eval_cfg,
                                        config=config))
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):  # identical cells, e.g. a regularizer with no overrides twice
        dup = next(r for r in runs if ids.count(r.run_id) > 1)
        raise PLWError(f"two grid cells have the same config (regularizer {dup.regularizer.name!r}, "
                       f"dataset {dup.dataset.name!r}, PLW {dup.plw:g})", field="regularizers")
    return runs
