"""`TrainConfig`: the pydantic model of one training run, its YAML load/save and `--set` overrides.

Defaults follow the Stanford Alpaca recipe (lr 2e-5, 3 epochs, global batch 128, warmup ratio
0.03, cosine, weight decay 0, max length 512), with a per-device micro-batch fitted to the machine
(`per_device_batch_size: auto`) and gradient accumulation making up the global batch: what
`plw train --model M --data D` runs without a CONFIG. `builtin_preset()` is the CPU quickstart for
`builtin:tiny` only: a tiny random-init Llama on the built-in synthetic data, with the settings a
tiny model needs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from plw.errors import PLWError

Normalizer = Union[Literal["weight_sum", "nonzero_tokens", "completion_tokens"], float]
LossBackend = Literal["auto", "torch", "cce", "liger"]
LossStrategy = Literal["auto", "token_chunks", "vocab_blocks"]


def _names(kind: str) -> list[str]:
    """Valid values of `lr_scheduler` / `optim` / `report_to`, from the installed transformers."""
    if kind == "lr_scheduler":
        from transformers.trainer_utils import SchedulerType

        return [s.value for s in SchedulerType]
    if kind == "optim":
        from transformers.training_args import OptimizerNames

        return [o.value for o in OptimizerNames]
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return ["none", "all", *INTEGRATION_TO_CALLBACK]


def _check_name(kind: str, value: str) -> str:
    import difflib

    names = _names(kind)
    if value not in names:
        close = difflib.get_close_matches(value, names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "one of " + ", ".join(names)
        raise ValueError(f"unknown {kind} {value!r} ({hint})")
    return value


class _Strict(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraSettings(_Strict):
    """LoRA adapters (PEFT). `target_modules="all-linear"` adapts every linear layer but the head."""

    enabled: bool = False
    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Union[str, list[str]] = "all-linear"


class Regularizers(_Strict):
    """The paper's alternative regularizers (§6.1). Weight decay is `TrainConfig.weight_decay`."""

    minkowski_coef: float = Field(0.0, ge=0, description="coefficient of the Minkowski-distance penalty")
    minkowski_p: float = Field(1.0, gt=0, description="p of the penalty (the paper used p = 1)")
    attention_dropout: float = Field(0.0, ge=0, lt=1)
    hidden_dropout: float = Field(0.0, ge=0, lt=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)


Regularisers = Regularizers  # the old spelling, kept importable


class TinySettings(_Strict):
    """Shape of the built-in random-init Llama (`model: builtin:tiny`) and its trained tokenizer."""

    hidden_size: int = Field(64, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    vocab_size: int = Field(2048, ge=300)

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        return self


class TrainConfig(_Strict):
    """One training run. Every field can be set in YAML or with `--set key=value`."""

    # what to train on
    model: str = "builtin:tiny"
    tokenizer: str | None = None
    data: str = "builtin:short"
    # how to read `data` (the same options as `plw stats`, sweep datasets and `plw.data.load_records`)
    data_format: Literal["auto", "alpaca", "raw", "chat"] = "auto"
    data_columns: dict[str, str] = {}  # plw field -> column of the data, e.g. {output: response}
    data_split: str = "train"  # split of a Hugging Face data set / save_to_disk DatasetDict
    skip_invalid: bool = False  # skip bad records (counted and reported) instead of stopping
    template: Literal["auto", "alpaca", "raw", "chat"] = "auto"
    max_length: int = Field(512, ge=8)
    val_fraction: float = Field(0.05, ge=0, lt=1)
    # Validation records from their own source (then val_fraction is not used and all of `data` trains).
    validation_data: str | None = None
    max_val_examples: int = Field(512, ge=1)
    tiny: TinySettings = TinySettings()
    # chat data: a weight per role (e.g. {system: 0, user: 0.1}; unlisted roles weigh the PLW, the
    # assistant 1), only the last assistant turn as completion, and what to do when a completion
    # does not fit max_length ("drop" the example, or "truncate" the completion)
    role_weights: dict[str, float] = {}
    last_turn_only: bool = False
    on_long_completion: Literal["drop", "truncate"] = "drop"

    # the loss
    prompt_loss_weight: float = Field(0.1, ge=0, le=1)
    # λr of WIT (TRL PR #6747): completion tokens weigh this, prompt tokens the PLW
    completion_loss_weight: float = Field(1.0, ge=0, le=1)
    normalizer: Normalizer = "weight_sum"
    log_prompt_nll: bool = True
    loss_backend: LossBackend = "auto"
    loss_strategy: LossStrategy = "auto"  # plw engine only; see docs/loss.md

    # optimisation (Stanford Alpaca defaults)
    learning_rate: float = Field(2e-5, gt=0)
    num_epochs: float = Field(3.0, gt=0)
    max_steps: int = Field(-1, ge=-1)
    global_batch_size: int = Field(128, ge=1)
    # "auto": the largest micro-batch that fits the machine (see plw.train.batching); gradient
    # accumulation keeps global_batch_size. The saved config.yaml holds the number that ran.
    per_device_batch_size: Union[int, Literal["auto"]] = "auto"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    lr_scheduler: str = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    optim: str = "adamw_torch"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # e.g. "flash_attention_2" (or a kernels-hub name): with packing, SDPA gets a dense block-diagonal
    # mask and attends over the whole pack; flash-attention's varlen kernels use the position ids.
    attn_implementation: Optional[str] = None
    gradient_checkpointing: bool = False
    seed: int = 42

    # batching
    packing: bool = False
    group_by_length: bool = False

    lora: LoraSettings = LoraSettings()
    regularizers: Regularizers = Regularizers()

    # diagnostics (§5.3)
    loss_window: int = Field(5, ge=2)
    distance_p: float = Field(1.0, gt=0)

    # outputs and bookkeeping
    output_dir: str = "runs/plw"
    logging_steps: int = Field(1, ge=1)
    eval_steps: int | None = Field(None, ge=1)
    save_steps: int = Field(500, ge=1)
    save_total_limit: int | None = Field(2, ge=1)
    resume: bool = True
    keep_checkpoints: bool = False  # False: a finished run's checkpoints lose their optimizer state
    report_to: list[str] = ["none"]
    preset: str | None = None

    @field_validator("normalizer", mode="before")
    @classmethod
    def _positive_number(cls, v: Any):
        if isinstance(v, str):  # "0.5" from a command-line flag: a number, checked below
            try:
                v = float(v)
            except ValueError:
                return v
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not (0 < v < float("inf")):
            raise ValueError("a numeric normalizer must be > 0 and finite")
        return v

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, v: str):
        return _check_name("lr_scheduler", v)

    @field_validator("optim")
    @classmethod
    def _known_optim(cls, v: str):
        return _check_name("optim", v)

    @field_validator("lora", mode="before")
    @classmethod
    def _lora_shorthand(cls, v: Any):
        return {"enabled": v} if isinstance(v, bool) else v

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to_list(cls, v: Any):
        return [v] if isinstance(v, str) else v

    @field_validator("report_to")
    @classmethod
    def _known_integrations(cls, v: list[str]):
        return [_check_name("report_to", r) for r in v]

    @field_validator("per_device_batch_size")
    @classmethod
    def _positive_batch(cls, v):
        if v != "auto" and v < 1:
            raise ValueError("must be >= 1 or 'auto'")
        return v

    @model_validator(mode="before")
    @classmethod
    def _deprecated_keys(cls, data: Any) -> Any:
        return upgrade_keys(data)

    @model_validator(mode="after")
    def _batch_divides(self):
        if self.per_device_batch_size != "auto" and self.global_batch_size % self.per_device_batch_size:
            raise ValueError(f"global_batch_size ({self.global_batch_size}) must be a multiple of "
                             f"per_device_batch_size ({self.per_device_batch_size})")
        return self


# Old key -> its one name now. The old one still loads, with a warning.
DEPRECATED_KEYS = {"regularisers": "regularizers"}


def upgrade_keys(data: Any) -> Any:
    """`data` (a TrainConfig mapping) with deprecated keys renamed, warning about each."""
    if not isinstance(data, dict) or not any(k in data for k in DEPRECATED_KEYS):
        return data
    data = dict(data)
    for old, new in DEPRECATED_KEYS.items():
        if old in data:
            if new in data:
                raise ValueError(f"give {new} only ({old} is its deprecated spelling)")
            warnings.warn(f"`{old}` is deprecated: use `{new}`", FutureWarning, stacklevel=2)
            data[new] = data.pop(old)
    return data


def builtin_preset() -> dict[str, Any]:
    """The CPU quickstart (no CONFIG given): what differs from the Alpaca defaults, and why."""
    return {
        "model": "builtin:tiny",
        "data": "builtin:short",
        # A random-init 2-layer model needs a far larger step size than a 7B fine-tune, and
        # a small global batch to take enough steps on 2,000 examples in a few minutes.
        "learning_rate": 1e-3,
        "global_batch_size": 32,
        "per_device_batch_size": 32,
        "max_length": 256,
        "val_fraction": 0.1,
        "output_dir": "runs/plw-builtin",
        "preset": ("builtin CPU preset: tiny random-init Llama, builtin:short data; overrides the "
                   "Alpaca recipe with learning_rate=1e-3, global_batch_size=32, max_length=256"),
    }


# ---- YAML, overrides and one-line errors -------------------------------------------------

def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None,
                flags: list[tuple[str, str, Any]] | None = None) -> TrainConfig:
    """Load CONFIG.yaml (or `base`, default: the built-in preset), apply `key=value` overrides, validate.

    `flags`: `(flag, dotted key, value)` from dedicated command-line options (`--normalizer`…),
    applied after `overrides`; an error in one names the flag, not `--set`.
    """
    import yaml

    data: dict[str, Any] = dict(base if base is not None else ({} if path else _no_config_base(overrides, flags)))
    node = None
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise PLWError("no such config file", file=str(path))
        text = path.read_text(encoding="utf-8")
        try:
            node = yaml.compose(text)
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            raise PLWError(f"invalid YAML: {getattr(err, 'problem', err)}", file=str(path),
                           line=mark.line + 1 if mark else None)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise PLWError("the config must be a mapping of keys to values", file=str(path), line=1)
        data.update(loaded)
    set_keys: dict[tuple, str] = {}
    for item in overrides or []:
        key, value = parse_override(item)
        set_keys[tuple(key.split("."))] = "--set"
        set_dotted(data, key, value)
    for flag, key, value in flags or []:
        set_keys[tuple(key.split("."))] = flag
        set_dotted(data, key, value)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise _one_line(err, path, node, set_keys) from None


def _no_config_base(overrides: list[str] | None, flags: list[tuple[str, str, Any]] | None) -> dict[str, Any]:
    """Without a CONFIG: the CPU preset for `builtin:tiny`, the Alpaca recipe (the defaults) for a
    real model (a hub name, a directory or a .gguf file given with --model / --set model=)."""
    model = "builtin:tiny"
    for item in overrides or []:
        key, value = parse_override(item)
        if key == "model":
            model = value
    for _, key, value in flags or []:
        if key == "model":
            model = value
    if model == "builtin:tiny":
        return builtin_preset()
    return {"data": "builtin:short"}


def parse_override(item: str) -> tuple[str, Any]:
    import yaml

    if "=" not in item:
        raise PLWError(f"expected key=value, got {item!r}", file="--set")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise PLWError(f"empty key in {item!r}", file="--set")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = data
    for part in parts[:-1]:
        nxt = cur.get(part)
        if isinstance(nxt, BaseModel):
            nxt = nxt.model_dump()
        if not isinstance(nxt, dict):
            nxt = {} if nxt is None else nxt
        cur[part] = nxt
        cur = nxt
        if not isinstance(cur, dict):
            raise PLWError(f"{part} is not a section", file="--set", field=key)
    cur[parts[-1]] = value


def _one_line(err: ValidationError, path: Path | None, node, set_keys: dict[tuple, str]) -> PLWError:
    first = err.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    # Union members add their type name to the location; keep only real keys.
    loc = tuple(p for p in loc if not p.startswith(("literal[", "float", "function-")))
    field = ".".join(loc) or None
    problem = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        problem = "unknown key" + _suggest(loc)
    for n in range(len(loc), 0, -1):
        if loc[:n] in set_keys:
            return PLWError(problem, file=set_keys[loc[:n]], field=field)
    line = _yaml_line(node, loc) if node is not None else None
    return PLWError(problem, file=str(path) if path else "<config>", line=line, field=field)


def _suggest(loc: tuple) -> str:
    import difflib

    model: type[BaseModel] = TrainConfig
    for part in loc[:-1]:
        ann = model.model_fields.get(part)
        if ann is None or not (isinstance(ann.annotation, type) and issubclass(ann.annotation, BaseModel)):
            return ""
        model = ann.annotation
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _yaml_line(node, loc: tuple) -> int | None:
    """1-based line of the deepest YAML key on `loc` (the failing key, or its nearest parent)."""
    line = None
    for part in loc:
        if node is None or node.tag != "tag:yaml.org,2002:map":
            break
        old = {v: k for k, v in DEPRECATED_KEYS.items()}.get(part)
        for key_node, value_node in node.value:
            if key_node.value in (part, old):
                line = key_node.start_mark.line + 1
                node = value_node
                break
        else:
            break
    return line if line is not None else 1


def save_config(config: TrainConfig, path: str | Path, *, header: str = "") -> None:
    """Write the full, resolved config as YAML (atomically); `header` lines become YAML comments."""
    import yaml

    from plw.io import write_text_atomic

    comments = "".join(f"# {line}\n" for line in header.splitlines())
    write_text_atomic(path, comments + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


# ---- which keys change the optimisation ----------------------------------------------------

# Settings that change speed, memory, logging or checkpointing but not the optimisation: the
# micro-batch split (the step's normaliser spans all micro-batches), the loss engine's backend and
# strategy (the same exact loss), activation recomputation and the attention kernel. Sweeps leave
# them out of run IDs; a checkpoint resumes under a config that differs only in these.
NEUTRAL_TRAIN_KEYS = ("per_device_batch_size", "gradient_checkpointing", "loss_backend", "loss_strategy",
                      "attn_implementation", "log_prompt_nll", "logging_steps", "eval_steps", "save_steps",
                      "save_total_limit", "resume", "report_to", "keep_checkpoints")
# ... and what only names the run or its diagnostics.
RESUME_NEUTRAL_KEYS = NEUTRAL_TRAIN_KEYS + ("output_dir", "preset", "loss_window", "distance_p")


def training_differences(old: TrainConfig, new: TrainConfig) -> list[tuple[str, Any, Any]]:
    """`(dotted key, old, new)` for every training-relevant setting that differs."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    out = []
    for key in a.keys() | b.keys():
        if key in RESUME_NEUTRAL_KEYS or a.get(key) == b.get(key):
            continue
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += [(f"{key}.{k}", a[key].get(k), b[key].get(k)) for k in sorted(a[key].keys() | b[key].keys())
                    if a[key].get(k) != b[key].get(k)]
        else:
            out.append((key, a.get(key), b.get(key)))
    order = list(TrainConfig.model_fields)
    return sorted(out, key=lambda d: order.index(d[0].split(".")[0]) if d[0].split(".")[0] in order else 0)
