"""The sweep spec: a pydantic-validated YAML file describing a factorial PLW experiment.

    name: my-sweep
    plw: [0, 0.01, 0.1, 1]            # default: the paper's ten levels
    models: [builtin:tiny]
    datasets:
      - builtin:short?n=200
      - invert(data/alpaca.json, target_ratio=0.042)
      - {name: AlpacaData, source: data/alpaca.json}
    regularizers:                      # default: [none]
      - none
      - {name: label_smoothing, plw: [0, 1], train: {label_smoothing: 0.1}}
    seeds: [42]
    train: {num_epochs: 1, max_length: 256}   # TrainConfig overrides for every run
    eval: {suite: builtin}
    backend: local                     # or ray

Every error names the file, line and key (`error: spec.yaml:7: datasets[1]: ...`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from plw import PAPER_PLW_LEVELS
from plw.errors import PLWError
from plw.train.config import upgrade_keys
from plw.experiment.yamlpos import format_loc, line_of, load_yaml_with_lines

_INVERT = re.compile(r"^\s*invert\(\s*(?P<src>.+?)\s*(?:,\s*target_ratio\s*=\s*(?P<r>[^)\s]+)\s*)?\)\s*$")
PLWLevel = Annotated[float, Field(ge=0.0, le=1.0)]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    """One dataset factor level. `invert` applies prompt inversion (paper App. A / D)."""

    name: str
    source: str
    invert: bool = False
    target_ratio: float | None = Field(default=None, gt=0)
    format: str = "auto"
    template: str | None = None  # overrides train.template for this dataset (e.g. chat data)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = {"source": value}
        if not isinstance(value, dict):
            return value
        value = dict(value)
        source = value.get("source")
        if isinstance(source, str):
            m = _INVERT.match(source)
            if m:
                if value.get("invert") is False:
                    raise ValueError("source says invert(...) but invert is false")
                value["source"], value["invert"] = m["src"], True
                if m["r"] is not None:
                    try:
                        value.setdefault("target_ratio", float(m["r"]))
                    except ValueError:
                        raise ValueError(f"target_ratio must be a number, got {m['r']!r}") from None
            elif source.lstrip().startswith("invert("):
                raise ValueError("expected invert(DATASET) or invert(DATASET, target_ratio=R)")
            value.setdefault("name", _display_name(value))
        return value

    @model_validator(mode="after")
    def _check(self) -> "DatasetSpec":
        if self.target_ratio is not None and not self.invert:
            raise ValueError("target_ratio needs invert: true")
        if not self.source.strip():
            raise ValueError("source is empty")
        return self


def _display_name(value: dict) -> str:
    if not value.get("invert"):
        return value["source"]
    r = value.get("target_ratio")
    return f"invert({value['source']})" if r is None else f"invert({value['source']}, target_ratio={float(r):g})"


class RegularizerSpec(_Strict):
    """An alternative regularizer (paper §6.1): TrainConfig overrides, optionally at chosen PLWs."""

    name: str
    train: dict[str, Any] = Field(default_factory=dict)
    plw: list[PLWLevel] | None = None  # the paper ran the alternatives at PLW 0 and 1 only

    @field_validator("train")
    @classmethod
    def _train_keys(cls, v: dict) -> dict:
        return upgrade_keys(v)  # the run ID hashes the current spelling

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value != "none":
                raise ValueError(f"a bare regularizer must be 'none', got {value!r}; "
                                 "use {name: ..., train: {...}}")
            return {"name": "none"}
        return value

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits, '.', '_' or '-'")
        return v

    @field_validator("plw")
    @classmethod
    def _levels(cls, v):
        return None if v is None else _check_levels(v)


class JudgeSpec(BaseModel):
    """AlpacaEval-1-style pairwise judge: any OpenAI-compatible endpoint (e.g. a local vLLM).

    Keys other than these are `plw.eval.judge.JudgeConfig` fields (base_url, model, prompt, ...)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    reference_file: str | None = None  # default: ../shared/data/alpaca_eval/... when present
    limit: int | None = Field(default=None, gt=0)  # first N AlpacaEval instructions

    @model_validator(mode="after")
    def _judge_config(self) -> "JudgeSpec":
        from plw.eval.judge import JudgeConfig

        JudgeConfig.model_validate(self.model_extra or {})
        return self


class EvalSpec(_Strict):
    suite: str | list[str] = "builtin"  # "paper", "offline", "builtin" or task names
    limit: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=8, gt=0)
    generation_prompts: int = Field(default=32, ge=0)  # prompts for the generation-length metric
    generation_set: str = "auto"  # "alpaca_eval", "builtin" (held-out synthetic), a data file; auto:
    # AlpacaEval's instructions when ../shared/data/alpaca_eval is present, else builtin
    memorization_prompts: int = Field(default=64, ge=0)  # training prompts for memorisation BLEU
    max_new_tokens: int = Field(default=64, gt=0)
    judge: JudgeSpec | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # extra keyword arguments to evaluate()


class RaySpec(_Strict):
    address: str | None = None  # None: start a local instance; "auto": join a running cluster
    num_cpus_per_run: float = Field(default=1, gt=0)
    num_gpus_per_run: float = Field(default=0, ge=0)
    max_concurrent: int | None = Field(default=None, gt=0)


class EstimateSpec(_Strict):
    """Throughput used by `plw sweep plan` before any run has finished (tokens per second)."""

    tokens_per_second: float | None = Field(default=None, gt=0)


class SweepSpec(_Strict):
    name: str
    output_dir: str | None = None  # default runs/<name>, relative to the current directory
    plw: list[PLWLevel] = Field(default_factory=lambda: list(PAPER_PLW_LEVELS))
    models: list[str] = Field(default_factory=lambda: ["builtin:tiny"], min_length=1)
    datasets: list[DatasetSpec] = Field(min_length=1)
    regularizers: list[RegularizerSpec] = Field(default_factory=lambda: [RegularizerSpec(name="none")],
                                                min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    backend: Literal["local", "ray"] = "local"
    # torch intra-op threads of the local runner (None: torch's default). Tiny models train several
    # times faster on 1 thread than on 2 contended ones; not part of the run IDs.
    threads: int | None = Field(default=None, ge=1)
    ray: RaySpec = Field(default_factory=RaySpec)
    estimate: EstimateSpec = Field(default_factory=EstimateSpec)
    analysis: bool = True  # run plw.analysis at the end of `plw sweep run`
    # What to keep of a finished run's training outputs: "all", "weights" (drop the intermediate
    # checkpoints, which hold optimizer state), or "none" (drop the weights too; 60 7B runs ≈ 0.8 TB).
    keep: Literal["all", "weights", "none"] = "weights"

    @field_validator("train")
    @classmethod
    def _train_keys(cls, v: dict) -> dict:
        return upgrade_keys(v)  # the run ID hashes the current spelling

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits, '.', '_' or '-' (it names the output folder)")
        return v

    @field_validator("plw")
    @classmethod
    def _levels(cls, v):
        return _check_levels(v)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("duplicate seeds")
        return v

    @field_validator("train")
    @classmethod
    def _train(cls, v: dict) -> dict:
        # These are set per cell by the sweep; overriding them globally would silently collapse a factor.
        for key in ("model", "data", "prompt_loss_weight", "seed", "output_dir"):
            if key in v:
                raise ValueError(f"'{key}' is set per run by the sweep; use the sweep's own key instead")
        return v

    @model_validator(mode="after")
    def _unique(self) -> "SweepSpec":
        for what, names in (("datasets", [d.name for d in self.datasets]),
                            ("regularizers", [r.name for r in self.regularizers]),
                            ("models", list(self.models))):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{what}: duplicate name(s) {', '.join(dup)}")
        return self

    def store_dir(self, cwd: Path | None = None) -> Path:
        """The results store: `output_dir` or `runs/<name>`, relative paths against the cwd."""
        base = Path(self.output_dir) if self.output_dir else Path("runs") / self.name
        return base if base.is_absolute() else (cwd or Path.cwd()) / base


def _check_levels(v: list[float]) -> list[float]:
    if not v:
        raise ValueError("at least one PLW level is needed")
    for x in v:
        if not 0.0 <= float(x) <= 1.0:
            raise ValueError(f"PLW {x} is outside [0, 1]")
    if len(set(map(float, v))) != len(v):
        raise ValueError("duplicate PLW levels")
    return [float(x) for x in v]


def load_spec(path: str | Path, *, check_files: bool = False) -> SweepSpec:
    """Read and validate a sweep spec; any problem raises a one-line `PLWError` naming file:line: key.

    `check_files` also requires local dataset files to exist (before `sweep run` starts training)."""
    path = Path(path)
    data, lines = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise PLWError("a sweep spec must be a YAML mapping", file=str(path), line=1)
    data.setdefault("name", path.stem)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        raise validation_error(err, file=str(path), lines=lines) from None
    validate_train_overrides(spec, file=str(path), lines=lines)
    validate_suite(spec, file=str(path), lines=lines)
    if check_files:
        for i, d in enumerate(spec.datasets):
            if Path(d.source).suffix in (".json", ".jsonl") and not Path(d.source).is_file():
                raise PLWError(f"no such file: {d.source}", file=str(path),
                               line=line_of(lines, ("datasets", i)), field=f"datasets[{i}]")
    return spec


def validate_train_overrides(spec: SweepSpec, *, file: str, lines: dict[tuple, int]) -> None:
    """Check `train:` and each regularizer's overrides against `plw.train.TrainConfig` (when present)."""
    from plw.train.config import TrainConfig

    base = {"model": spec.models[0], "data": spec.datasets[0].source, "prompt_loss_weight": 0.0,
            "seed": spec.seeds[0]}
    checks = [(("train",), spec.train)] + [
        (("regularizers", i, "train"), {**spec.train, **r.train}) for i, r in enumerate(spec.regularizers)]
    checks += [(("datasets", i, "template"), {**spec.train, "template": d.template})
               for i, d in enumerate(spec.datasets) if d.template is not None]
    for prefix, overrides in checks:
        try:
            TrainConfig.model_validate({**base, **overrides})
        except ValidationError as err:
            loc = err.errors()[0]["loc"]
            # An error in a global override reported inside a regularizer names the global key.
            if prefix[0] == "regularizers" and loc and loc[0] not in prefix_keys(spec, prefix):
                prefix = ("train",)
            if prefix[0] == "datasets":
                if loc and loc[0] == "template":
                    loc_err = validation_error(err, file=file, lines=lines)
                    raise type(loc_err)(loc_err.problem, file=file, line=line_of(lines, prefix),
                                        field=format_loc(prefix)) from None
                prefix = ("train",)
            raise validation_error(err, file=file, lines=lines, prefix=prefix) from None


def prefix_keys(spec: SweepSpec, prefix: tuple) -> set:
    return set(spec.regularizers[prefix[1]].train)


def validate_suite(spec: SweepSpec, *, file: str, lines: dict[tuple, int]) -> None:
    """Check `eval.suite`'s names before anything trains (a typo would otherwise surface only after
    every run's training). Suite and plw task names cost nothing; lm-eval's task registry is indexed
    (seconds) only when some other name is used, as `plw.eval.evaluate` does."""
    from plw.eval.harness import (BUILTIN_TASKS, LOCAL_TASKS, OFFLINE_TASKS, SUITES, resolve_suite,
                                  task_manager_for)

    suite = spec.eval.suite
    names = [suite] if isinstance(suite, str) else list(suite)

    def where(i: int | None) -> tuple:
        return ("eval", "suite") if i is None or isinstance(suite, str) else ("eval", "suite", i)

    def fail(problem: str, i: int | None) -> PLWError:
        loc = where(i)
        return PLWError(problem, file=file, line=line_of(lines, loc), field=format_loc(loc))

    if not names:
        raise fail("empty list of tasks", None)
    own = set(SUITES) | set(LOCAL_TASKS) | set(BUILTIN_TASKS)
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name == "paper":
            from plw.eval.paper import paper_specs

            benchmarks = [s.benchmark for s in paper_specs()]
        elif name == "offline":
            benchmarks = list(OFFLINE_TASKS)
        elif name == "builtin":
            benchmarks = list(BUILTIN_TASKS)
        else:
            benchmarks = [name]
        for b in benchmarks:
            if b in seen:
                raise fail(f"benchmark {b!r} requested twice", i)
            seen[b] = i
    others = [(i, n) for i, n in enumerate(names) if n not in own]
    if not others:
        return
    include_path = spec.eval.options.get("include_path")
    tm = task_manager_for([n for _, n in others], include_path)
    for i, name in others:
        try:
            resolve_suite([name], task_manager=tm)
        except PLWError as err:
            raise fail(err.problem, i) from None


def validation_error(err: ValidationError, *, file: str, lines: dict[tuple, int],
                     prefix: tuple = ()) -> PLWError:
    """The first pydantic error as a PLWError naming the YAML key and its line."""
    first = err.errors()[0]
    # Drop pydantic's union/branch tags (e.g. 'str', 'list[str]', 'function-before[...]').
    loc = tuple(p for p in first["loc"] if isinstance(p, int) or not _is_tag(p, lines, prefix))
    loc = prefix + loc
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    return PLWError(msg, file=file, line=line_of(lines, loc), field=format_loc(loc) or None)


def _is_tag(part: str, lines: dict, prefix: tuple) -> bool:
    return ("[" in part or part in {"str", "list", "dict", "int", "float", "none"}) and not any(
        part in k for k in lines)
