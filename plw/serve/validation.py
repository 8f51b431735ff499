"""The `validating_files` step: check a job's files as OpenAI does, resolve "auto", write config.yaml.

Records are read by plw.data's own loader (chat `messages` JSONL with OpenAI's per-message `weight`
0/1 on assistant turns, legacy `prompt`/`completion` JSONL, Alpaca), so the first bad record fails
the job with an error naming the file id, line and field. Nothing is trained on a bad file.

`prompt_loss_weight="auto"`: R_g of the training file (plw.data.stats, under the base model's
tokenizer; plw's built-in one for builtin:tiny) and plw's recommendation (plw.analysis.recommend).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from plw.errors import PLWError
from plw.serve.settings import BaseModel, Settings

MIN_EXAMPLES = 10            # OpenAI's minimum
DEFAULT_PLW = 0.01           # OpenAI's legacy default
TARGET_EXAMPLES = (100, 25_000)  # "auto" epochs aim for this many examples seen (OpenAI's heuristic)


class InvalidFile(Exception):
    """A training/validation file that cannot be used; `message` names file id, line and field."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.message, self.param = message, param


@dataclass
class Plan:
    """What validation decided: the resolved hyper-parameters and the notes to record as events."""

    n_train: int
    hyperparameters: dict
    notes: list[tuple[str, str, dict]] = field(default_factory=list)  # (key, message, data)
    total_steps: int = 0
    steps_per_epoch: int = 1


def load_file(path, file_id: str, param: str) -> list:
    from plw.data import read_records

    try:
        records, _ = read_records(path, format="auto")
    except PLWError as err:
        where = f"line {err.line}: " if err.line else ""
        fld = f"{err.field}: " if err.field else ""
        raise InvalidFile(f"{file_id}: {where}{fld}{err.problem}", param) from None
    return records


def check_count(records: list, file_id: str, param: str, minimum: int) -> None:
    if len(records) < minimum:
        raise InvalidFile(f"{file_id}: has {len(records)} example(s), but must have at least {minimum}", param)


def auto_plw(records: list, base: BaseModel) -> tuple[float, dict]:
    """plw's recommendation for these records: (PLW, {"ratio", "source", ...})."""
    from plw.analysis.recommend import from_paper
    from plw.data.stats import dataset_stats
    from plw.data.tokenizer import BUILTIN_TOKENIZER, load_tokenizer

    tokenizer = load_tokenizer(BUILTIN_TOKENIZER if base.is_tiny else base.source)
    ratio = float(dataset_stats(records, tokenizer).ratio)
    rec = from_paper(ratio)
    return float(rec["plw"]), {"ratio": ratio, "source": rec["source"], "source_detail": rec["source_detail"],
                               "kind": rec.get("kind"), "confidence": rec["confidence"]}


def plan_job(requested: dict, records: list, base: BaseModel) -> Plan:
    """Resolve every "auto"/missing hyper-parameter for `records` on `base`."""
    n = len(records)
    plan = Plan(n_train=n, hyperparameters={})
    hp = plan.hyperparameters
    epochs = requested.get("n_epochs")
    if epochs in (None, "auto"):
        lo, hi = TARGET_EXAMPLES
        epochs = min(25, math.ceil(lo / n)) if n * 3 < lo else (max(1, hi // n) if n * 3 > hi else 3)
    hp["n_epochs"] = int(epochs)
    batch = requested.get("batch_size")
    hp["batch_size"] = int(min(32, max(1, n // 10)) if batch in (None, "auto") else batch)
    lrm = requested.get("learning_rate_multiplier")
    hp["learning_rate_multiplier"] = float(1.0 if lrm in (None, "auto") else lrm)
    plw = requested.get("prompt_loss_weight")
    if plw == "auto":
        value, info = auto_plw(records, base)
        hp["prompt_loss_weight"] = value
        plan.notes.append(("plw:auto", f"prompt_loss_weight auto: {value:g} (R_g = {info['ratio']:.3g}, "
                                       f"{info['kind']}-completion data; source: {info['source']})",
                           {"prompt_loss_weight": value, **info}))
    else:
        hp["prompt_loss_weight"] = float(DEFAULT_PLW if plw is None else plw)
        src = "default (OpenAI's legacy 0.01)" if plw is None else "request"
        plan.notes.append(("plw:set", f"prompt_loss_weight: {hp['prompt_loss_weight']:g} (source: {src})",
                           {"prompt_loss_weight": hp["prompt_loss_weight"], "source": src}))
    plan.steps_per_epoch = max(1, math.ceil(n / hp["batch_size"]))
    plan.total_steps = plan.steps_per_epoch * hp["n_epochs"]
    return plan


def per_device(batch: int, cap: int = 8) -> int:
    """The largest divisor of `batch` up to `cap` (the rest is gradient accumulation)."""
    return max(d for d in range(1, min(batch, cap) + 1) if batch % d == 0)


def train_config(plan: Plan, base: BaseModel, *, data: str, validation: str | None, seed: int,
                 output_dir: str) -> dict:
    """The job's `plw train` config (validated by plw.train's TrainConfig when loaded)."""
    hp = plan.hyperparameters
    cfg = {
        "model": base.source,
        "data": data,
        "validation_data": validation,
        "val_fraction": 0.0,
        "prompt_loss_weight": hp["prompt_loss_weight"],
        "learning_rate": base.base_learning_rate * hp["learning_rate_multiplier"],
        "num_epochs": hp["n_epochs"],
        "global_batch_size": hp["batch_size"],
        "per_device_batch_size": per_device(hp["batch_size"]),
        "max_length": 256 if base.is_tiny else 1024,
        "warmup_ratio": 0.0 if base.is_tiny else 0.03,
        "seed": seed,
        "logging_steps": 1,
        # one checkpoint (and one validation) per epoch, as OpenAI; the last three are kept
        "save_steps": plan.steps_per_epoch,
        "save_total_limit": 3,
        "eval_steps": plan.steps_per_epoch if validation else None,
        "output_dir": output_dir,
        "resume": True,
    }
    return cfg


def validate_job(settings: Settings, job, base: BaseModel, job_dir) -> tuple[Plan, dict]:
    """Check the job's files (copied into `job_dir`), resolve its hyper-parameters and return
    (plan, train config). Raises `InvalidFile` for a bad file."""
    from plw.train import TrainConfig

    data = job_dir / "train.jsonl"
    records = load_file(data, job.training_file, "training_file")
    check_count(records, job.training_file, "training_file", MIN_EXAMPLES)
    validation = None
    if job.validation_file:
        validation = job_dir / "valid.jsonl"
        check_count(load_file(validation, job.validation_file, "validation_file"), job.validation_file,
                    "validation_file", 1)
    plan = plan_job(job.hyperparameters, records, base)
    cfg = train_config(plan, base, data=str(data.resolve()), validation=str(validation.resolve()) if validation else None,
                       seed=job.seed, output_dir=str((job_dir / "run").resolve()))
    TrainConfig.model_validate(cfg)  # a server bug, not the user's: fail loudly here rather than in the run
    return plan, cfg
