"""`train(config)`: one PLW fine-tuning run, from records to saved weights and metrics.

records (`plw.data.load_records`) → train/val split → tokenizer (trained for `builtin:tiny`) →
weighted tokens (`plw.data.tokenize_dataset`) → model (+ LoRA, dropout) → `PLWTrainer` →
outputs in `output_dir`: `config.yaml`, `metrics.jsonl`, `metrics.json`, safetensors weights (or
the LoRA adapter), tokenizer, and `checkpoint-*` for resuming.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from plw import ui
from plw.errors import PLWError, first_line
from plw.train.config import TrainConfig, save_config

ALPACA_HEADER = ("Below is an instruction that describes a task, paired with an input that provides "
                 "further context. Write a response that appropriately completes the request.\n\n"
                 "### Instruction:\n\n### Input:\n\n### Response:")


@dataclasses.dataclass
class TrainResult:
    output_dir: Path
    model: Any
    tokenizer: Any
    train_records: list
    val_records: list
    metrics: dict
    config: TrainConfig
    log_history: list = dataclasses.field(default_factory=list)


class _ListDataset:
    """Map-style dataset over tokenised examples (the Trainer's samplers need `len` and indexing)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def split_records(records: list, val_fraction: float, max_val: int, seed: int) -> tuple[list, list]:
    """Deterministic held-out split: shuffle indices with `seed`, take the validation part first."""
    if val_fraction <= 0 or len(records) < 2:
        return list(records), []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_val = min(max_val, max(1, int(round(val_fraction * len(records)))))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [records[i] for i in train], [records[i] for i in val]


def record_texts(records) -> list[str]:
    """Raw text of records (every string field and chat turn) for training the built-in tokenizer."""
    texts = [ALPACA_HEADER]
    for r in records:
        for name in ("instruction", "input", "output", "prompt", "completion"):
            v = getattr(r, name, None)
            if isinstance(v, str) and v:
                texts.append(v)
        for m in getattr(r, "messages", None) or []:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                texts.append(content)
    return texts


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train(config: TrainConfig | dict, *, progress: bool = True, data_report: bool | None = None,
          overwrite: bool = False) -> TrainResult:
    """Fine-tune `config.model` on `config.data` at `config.prompt_loss_weight`; return the result.

    `data_report` (default: `progress`): print the tokenisation summary of the train and validation
    sets (examples kept, truncated, dropped per reason) on stderr. The counts are always in
    `metrics["data"]` and metrics.json.

    An output directory that holds a run resumes from its last complete checkpoint, but only when
    the training-relevant settings match (`PLWError` naming the keys otherwise); `overwrite` starts
    afresh instead. Safe to call repeatedly in one process. Under `accelerate launch`/`torchrun`
    every process calls it; rank 0 writes the outputs.

    Steps: set-up (inputs checked, batch split, previous run) → data → model → trainer → train →
    finish (metrics, weights). Nothing is written before the trainer is built.
    """
    from transformers import set_seed

    if not isinstance(config, TrainConfig):
        config = TrainConfig.model_validate(config)
    t0 = time.perf_counter()
    setup = _set_up(config, overwrite)
    config = setup.config
    data = _prepare_data(config, setup)
    # TrainingArguments before the model: it sets up the distributed state, so that loading can use
    # DeepSpeed ZeRO-3's partitioned init and FSDP's rank-0-only (cpu_ram_efficient) loading.
    args = _training_arguments(config, setup, has_val=bool(data.val_rows))
    set_seed(config.seed)
    model = _build_model(config, data.tokenizer)
    trainer, initial = _build_trainer(config, setup, data, model, args, progress)
    if (progress if data_report is None else data_report) and is_main_process():
        print_data_reports(data.reports)
    _write_start(config, setup, data.tokenizer, trainer)
    _run_trainer(trainer, setup)
    return _finish(config, setup, data, trainer, initial, t0)


# ---- set-up: inputs, batch split, the previous run in output_dir ------------------------------

@dataclasses.dataclass
class _SetUp:
    config: TrainConfig            # with per_device_batch_size resolved
    out: Path
    split: Any                     # plw.train.batching.BatchSplit
    last_checkpoint: str | None
    clear_previous: bool           # --overwrite: remove the previous run's checkpoints and metrics
    out_existed: bool
    cuda: bool


def _set_up(config: TrainConfig, overwrite: bool) -> _SetUp:
    import torch

    from plw.train.batching import batch_split
    from plw.train.model import check_model_source, model_config

    check_model_source(config.model)
    if config.tokenizer:
        check_model_source(config.tokenizer, field="tokenizer")
    out = Path(config.output_dir)
    check_output_dir(out)
    check_data_source(config.data, out)
    cuda = torch.cuda.is_available()
    world = _world_size()
    needs_sizes = config.per_device_batch_size == "auto" and config.model != "builtin:tiny"
    split = batch_split(config.global_batch_size, config.per_device_batch_size, world,
                        model_config=model_config(config.model) if needs_sizes else None,
                        max_length=config.max_length, lora=config.lora.enabled, cuda=cuda)
    config = config.model_copy(update={"per_device_batch_size": split.per_device})
    check_dtype(config)
    if config.loss_backend in ("cce", "liger") and not cuda:
        raise PLWError(f"{config.loss_backend!r} runs on CUDA only; use 'auto' or 'torch' here",
                       field="loss_backend")
    if config.loss_strategy != "auto" and config.loss_backend not in ("auto", "torch"):
        raise PLWError(f"loss_strategy {config.loss_strategy!r} is for plw's own engine "
                       f"(loss_backend auto or torch), not {config.loss_backend!r}", field="loss_strategy")
    if not overwrite:
        check_same_run(out, config)
    last = last_complete_checkpoint(out) if config.resume and not overwrite and out.is_dir() else None
    return _SetUp(config=config, out=out, split=split, last_checkpoint=last, clear_previous=overwrite,
                  out_existed=out.exists(), cuda=cuda)


def check_output_dir(out: Path) -> None:
    """The output directory must be a directory (or creatable) and writable; never a file."""
    from plw.io import check_output_dir as check_dir

    try:
        check_dir(out)
    except OSError as err:
        raise PLWError(err.strerror or str(err), file=str(out), field="output_dir") from None


def check_data_source(data: str, out: Path) -> None:
    """Refuse data that lives inside the output directory's files (it would be overwritten)."""
    path = Path(data)
    if path.exists() and out.exists() and path.resolve() == out.resolve():
        raise PLWError("the data and the output directory are the same path", file=data, field="data")


def check_same_run(out: Path, config: TrainConfig) -> None:
    """A previous run in `out` must have the same training-relevant config (else: exit 2)."""
    from plw.train.config import training_differences

    saved = out / "config.yaml"
    if not saved.is_file():
        return
    try:
        import yaml

        old = TrainConfig.model_validate(yaml.safe_load(saved.read_text(encoding="utf-8")) or {})
    except Exception as err:  # an unreadable or foreign config.yaml: refuse rather than guess
        raise PLWError(f"holds a config.yaml plw cannot read ({first_line(err)}); use --overwrite to "
                       "start afresh or another output directory", file=str(out), field="output_dir") from None
    diffs = training_differences(old, config)
    if diffs:
        shown = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in diffs[:4])
        more = f" and {len(diffs) - 4} more" if len(diffs) > 4 else ""
        raise PLWError(f"holds a run with a different config ({shown}{more}); use --overwrite to start "
                       "afresh, or another output directory", file=str(out), field=diffs[0][0])


def last_complete_checkpoint(out: Path) -> str | None:
    """The newest `checkpoint-N` that holds weights and `trainer_state.json`; incomplete ones (an
    interrupted save) are skipped with a message."""
    ckpts = sorted((p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for ckpt in ckpts:
        weights = any(ckpt.glob("*.safetensors")) or any(ckpt.glob("*.bin")) or any(ckpt.glob("global_step*"))
        if (ckpt / "trainer_state.json").is_file() and weights:
            return str(ckpt)
        if is_main_process():
            print(f"skipping incomplete checkpoint {ckpt} (no trainer_state.json or weights: an "
                  "interrupted save)", file=sys.stderr)
    return None


# ---- data -----------------------------------------------------------------------------------

@dataclasses.dataclass
class _Data:
    train_records: list
    val_records: list
    tokenizer: Any
    train_rows: list
    val_rows: list
    reports: dict


def _prepare_data(config: TrainConfig, setup: _SetUp) -> _Data:
    from plw.data.records import load_records

    records = load_records(config.data, format=config.data_format, columns=config.data_columns or None,
                           split=config.data_split, skip_invalid=config.skip_invalid)
    if config.validation_data:
        train_records = records
        val_records = load_records(config.validation_data, format=config.data_format,
                                   columns=config.data_columns or None, split=config.data_split,
                                   skip_invalid=config.skip_invalid)[:config.max_val_examples]
    else:
        train_records, val_records = split_records(records, config.val_fraction, config.max_val_examples,
                                                   config.seed)
    tokenizer = _load_tokenizer(config, train_records, setup.out)
    train_rows, train_report = _tokenize(train_records, tokenizer, config)
    val_rows, val_report = _tokenize(val_records, tokenizer, config) if val_records else ([], None)
    if not train_rows:
        raise PLWError("no training examples left after tokenisation (" + train_report.summary() + ")",
                       file=config.data, field="data")
    return _Data(train_records, val_records, tokenizer, train_rows, val_rows,
                 {"train": train_report, "val": val_report})


def _load_tokenizer(config: TrainConfig, train_records, out: Path):
    from plw.data.tokenizer import load_tokenizer, train_tokenizer

    saved = out / "tokenizer_config.json"
    if config.tokenizer:
        return load_tokenizer(config.tokenizer)
    if config.model == "builtin:tiny":
        # Resume must see the same vocabulary: reuse the tokenizer saved at the run's start.
        if saved.exists():
            return load_tokenizer(out)
        return train_tokenizer(record_texts(train_records), vocab_size=config.tiny.vocab_size)
    return load_tokenizer(config.model)


def _tokenize(records, tokenizer, config: TrainConfig):
    from plw.data.encode import tokenize_dataset

    rows, report = tokenize_dataset(records, tokenizer, template=config.template,
                                    prompt_loss_weight=config.prompt_loss_weight, max_length=config.max_length,
                                    role_weights=config.role_weights, last_turn_only=config.last_turn_only,
                                    on_long_completion=config.on_long_completion)
    return rows, report


# ---- model ----------------------------------------------------------------------------------

def _build_model(config: TrainConfig, tokenizer):
    """The model (tiny, hub, directory or GGUF) with dropout, checkpointing and LoRA applied."""
    from plw.train.regularizers import set_dropout

    model = _load_model(config, tokenizer)
    set_dropout(model, attention=config.regularizers.attention_dropout,
                hidden=config.regularizers.hidden_dropout)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if config.lora.enabled:
        from peft import LoraConfig, get_peft_model

        try:
            model = get_peft_model(model, LoraConfig(
                task_type="CAUSAL_LM", r=config.lora.r, lora_alpha=config.lora.alpha,
                lora_dropout=config.lora.dropout, target_modules=config.lora.target_modules))
        except ValueError as err:  # e.g. target_modules that match no layer
            raise PLWError(first_line(err), field="lora.target_modules") from None
    return model


def _load_model(config: TrainConfig, tokenizer):
    if config.model == "builtin:tiny":
        from plw.train.tiny import tiny_for_config

        model = tiny_for_config(config, tokenizer)
        if config.attn_implementation:
            try:
                model.set_attn_implementation(config.attn_implementation)
            except (ValueError, ImportError) as err:
                raise PLWError(first_line(err), field="attn_implementation") from None
        return model
    from plw.train.model import load_model

    model = load_model(config.model, dtype=config.dtype, attn_implementation=config.attn_implementation)
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


# ---- trainer --------------------------------------------------------------------------------

def _training_arguments(config: TrainConfig, setup: _SetUp, *, has_val: bool):
    import torch
    from transformers import TrainingArguments

    from plw.train.trainer import check_single_process_gpus

    bf16 = setup.cuda and config.dtype == "auto" and torch.cuda.is_bf16_supported()
    # A GPU without bf16 (T4, V100): fp32 weights under fp16 autocast with loss scaling. plw's loss
    # computes fp16 in fp32 and keeps its gradients fp32 until the scale is applied (docs/loss.md).
    fp16 = setup.cuda and config.dtype == "auto" and not bf16
    try:
        args = TrainingArguments(**_training_kwargs(config, setup.out, setup.split.accumulation, bf16, fp16,
                                                    has_val, setup.cuda, setup.split.world_size))
    except ValueError as err:  # a setting TrainingArguments refuses: one line, nothing written
        raise PLWError(first_line(err), field="TrainingArguments") from None
    check_single_process_gpus(args.n_gpu, setup.split.world_size)
    return args


def _build_trainer(config: TrainConfig, setup: _SetUp, data: _Data, model, args, progress: bool):
    """`PLWTrainer` with plw's callbacks, and the initial trainable weights (diagnostics, Minkowski)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from plw.train.callbacks import MetricsCallback, RichProgressCallback
    from plw.train.collator import PLWCollator
    from plw.train.diagnostics import snapshot
    from plw.train.trainer import PLWTrainer

    has_val = bool(data.val_rows)
    # Trainable tensors only: the reference for the distances (computed by the main process) and
    # the Minkowski penalty (every process). Other ranks keep a copy only when the penalty needs
    # it. Every process calls snapshot: under ZeRO-3 gathering a parameter is a collective.
    initial = snapshot(model, keep=is_main_process() or bool(config.regularizers.minkowski_coef))
    trainer = PLWTrainer(
        model=model, args=args, train_dataset=_ListDataset(data.train_rows),
        eval_dataset=_ListDataset(data.val_rows) if has_val else None,
        data_collator=PLWCollator(data.tokenizer.pad_token_id, packing=config.packing),
        processing_class=data.tokenizer,
        normalizer=config.normalizer, completion_loss_weight=config.completion_loss_weight,
        label_smoothing=config.regularizers.label_smoothing,
        track_prompt_nll=config.log_prompt_nll, loss_backend=config.loss_backend,
        loss_strategy=config.loss_strategy,
        minkowski_coef=config.regularizers.minkowski_coef, minkowski_p=config.regularizers.minkowski_p,
        initial_params=initial,
    )
    try:
        check_sharding(trainer, config)
    except PLWError:
        # Some Trainer set-ups (DeepSpeed) create output_dir already: leave no empty folder behind.
        out = setup.out
        if not setup.out_existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    last = setup.last_checkpoint
    resume_step = int(Path(last).name.split("-")[-1]) if last else None
    trainer.add_callback(MetricsCallback(trainer, setup.out / "metrics.jsonl", resume_step=resume_step))
    if progress:
        trainer.add_callback(RichProgressCallback(f"plw train (PLW {config.prompt_loss_weight:g})"))
    return trainer, initial


# ---- train ----------------------------------------------------------------------------------

def _write_start(config: TrainConfig, setup: _SetUp, tokenizer, trainer) -> None:
    """Everything could fail on bad input until here; now the output directory is written."""
    out = setup.out
    out.mkdir(parents=True, exist_ok=True)
    if not trainer.accelerator.is_main_process:
        return
    if setup.clear_previous:
        clear_previous_run(out)
    save_config(config, out / "config.yaml", header=(
        f"plw train: {setup.split.describe()}\n"
        f"per_device_batch_size below is the micro-batch that ran (world size {setup.split.world_size}, "
        f"gradient accumulation {setup.split.accumulation})"))
    if not setup.last_checkpoint:
        tokenizer.save_pretrained(str(out))


def clear_previous_run(out: Path) -> None:
    """`--overwrite`: remove what a previous run left (checkpoints, metrics, config)."""
    for ckpt in out.glob("checkpoint-*"):
        if ckpt.is_dir() and not ckpt.is_symlink():
            shutil.rmtree(ckpt)
    for name in ("metrics.jsonl", "metrics.json", "config.yaml"):
        if (out / name).is_file():
            (out / name).unlink()


def _run_trainer(trainer, setup: _SetUp) -> None:
    try:
        with ui.quiet_hf_bars():  # with progress, plw's own bar; without, none at all
            trainer.train(resume_from_checkpoint=setup.last_checkpoint)
    except KeyboardInterrupt:
        if is_main_process():
            every = setup.config.save_steps
            print(f"\ninterrupted: run the same command again to resume from the last checkpoint in "
                  f"{setup.out} (saved every {every} steps); --overwrite starts afresh", file=sys.stderr)
        raise


# ---- finish ---------------------------------------------------------------------------------

def _finish(config: TrainConfig, setup: _SetUp, data: _Data, trainer, initial: dict, t0: float) -> TrainResult:
    """Metrics and diagnostics, final weights, metrics.json; strip finished checkpoints."""
    from plw.io import json_safe, write_json_atomic
    from plw.train.callbacks import MetricsCallback, read_metrics
    from plw.train.diagnostics import weight_distances

    out = setup.out
    metrics = _train_metrics(config, trainer, data)
    # The wrapped model: under DeepSpeed that is the engine, which gathers ZeRO-3 partitions
    # (`trainer.model` is the bare module there); accelerate unwraps DDP itself.
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped if trainer.model_wrapped is not None
                                               else trainer.model)
    if state is not None and trainer.accelerator.is_main_process:
        metrics.update(weight_distances(initial, _match_names(state, initial), p=config.distance_p))
    offset = next((c.tokens_offset for c in trainer.callback_handler.callbacks
                   if isinstance(c, MetricsCallback)), 0)
    metrics["train_tokens"] = int(offset + trainer.train_tokens_total())
    metrics["wall_time_s"] = time.perf_counter() - t0
    metrics["resumed_from"] = setup.last_checkpoint
    metrics["batch"] = {"global_batch_size": setup.split.global_batch, "per_device_batch_size": setup.split.per_device,
                        "gradient_accumulation_steps": setup.split.accumulation,
                        "world_size": setup.split.world_size}
    metrics["data"] = {k: r.to_dict() for k, r in data.reports.items() if r is not None}
    _save_dir_atomic(trainer, out, state)
    if trainer.accelerator.is_main_process:
        # Strict JSON: undefined values (e.g. loss_rsd of a run shorter than one window) as null.
        write_json_atomic(out / "metrics.json", json_safe(metrics))
        if not config.keep_checkpoints:
            strip_optimizer_state(out)
    trainer.accelerator.wait_for_everyone()
    history = read_metrics(out / "metrics.jsonl") if is_main_process() else []
    trained = trainer.accelerator.unwrap_model(trainer.model)
    return TrainResult(output_dir=out, model=trained, tokenizer=data.tokenizer,
                       train_records=data.train_records, val_records=data.val_records, metrics=metrics,
                       config=config, log_history=history)


def _train_metrics(config: TrainConfig, trainer, data: _Data) -> dict[str, Any]:
    from plw.train.diagnostics import loss_rsd, mean_train_loss

    log = trainer.state.log_history
    metrics: dict[str, Any] = {"prompt_loss_weight": config.prompt_loss_weight,
                               "global_step": trainer.state.global_step}
    metrics["step_losses"] = list(trainer.step_losses)
    metrics["train_loss"] = mean_train_loss(trainer.step_losses)
    metrics["loss_rsd"] = loss_rsd(trainer.step_losses, config.loss_window)
    for key in ("prompt_nll", "completion_nll"):
        vals = [r[key] for r in log if key in r]
        if vals:
            metrics[f"train_{key}"] = vals[-1]
    if data.val_rows:
        done = [r["eval_completion_nll"] for r in log
                if "eval_completion_nll" in r and r.get("step") == trainer.state.global_step]
        metrics["val_completion_nll"] = done[-1] if done else trainer.evaluate()["eval_completion_nll"]
    return metrics


def strip_optimizer_state(out: Path) -> None:
    """A finished run's checkpoints keep weights and trainer state, not the optimizer (2× the model)."""
    for ckpt in out.glob("checkpoint-*"):
        for name in ("optimizer.pt", "optimizer.bin"):
            if (ckpt / name).is_file():
                (ckpt / name).unlink()


def _save_dir_atomic(trainer, out: Path, state: dict | None = None) -> None:
    """Save weights (or adapter) + tokenizer into a temp dir, then move the files into `out`.

    `state`: the full state dict `accelerator.get_state_dict` gathered (main process) for the
    diagnostics. Under FSDP it is what gets saved, whatever `fsdp_state_dict_type` says (that
    setting governs the `checkpoint-*` format): `Trainer.save_model` would gather it a second time,
    and with SHARDED_STATE_DICT it would write no model at all.
    """
    tmp = out / ".final.tmp"
    if trainer.accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    with ui.quiet_hf_bars():  # no "Writing model shards" bar in the middle of ours
        if getattr(trainer, "is_fsdp_enabled", False) and state is not None:
            model = trainer.accelerator.unwrap_model(trainer.model)
            trainer._save(str(tmp), state_dict=drop_tied_copies(state, model))  # main process writes
        else:
            trainer.save_model(str(tmp))  # handles DeepSpeed state-dict gathering; main process writes
    if trainer.accelerator.is_main_process:
        for f in tmp.iterdir():
            target = out / f.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(f, target)
        shutil.rmtree(tmp, ignore_errors=True)


def drop_tied_copies(state: dict, model) -> dict:
    """`state` without the tied copies (e.g. `lm_head.weight` of a model that ties it to the input
    embeddings), as a one-process save writes it.

    `save_pretrained` recognises tied weights by shared storage; a state dict gathered from shards
    (FSDP) holds separate, equal copies, which it would keep (a second vocab × hidden matrix).
    """
    import torch

    tied = getattr(model, "all_tied_weights_keys", None) or {}
    drop = {k for k, source in tied.items() if k in state and source in state
            and torch.equal(state[k], state[source])}
    return {k: v for k, v in state.items() if k not in drop} if drop else state


def print_data_reports(reports: dict, console=None) -> None:
    """One line per split on stderr: examples kept of records, tokens, truncated, dropped per reason."""
    from rich.markup import escape

    console = console or ui.console(stderr=True)
    for split, report in reports.items():
        if report is not None:
            style = "yellow" if report.n_dropped else "dim"
            console.print(f"[{style}]{split} data: {escape(report.summary())}[/]")


def check_sharding(trainer, config: TrainConfig) -> None:
    """Refuse what a sharded launch cannot do, before anything is written.

    - An accelerate FSDP config where accelerate did not turn FSDP on: accelerate 1.x promotes only
      GPU-type states (MULTI_GPU, MULTI_XPU, …) to FSDP, so on CPU (MULTI_CPU, gloo) an FSDP config
      silently trains with DDP.
    - The Minkowski penalty under FSDP / ZeRO-3: it reads whole parameters outside the forward,
      where they are shards.
    """
    fsdp = bool(getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_fsdp_xla_enabled", False))
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not fsdp:
        kind = str(trainer.accelerator.distributed_type).split(".")[-1]
        raise PLWError(f"FSDP asked for, but accelerate turns it on for GPUs only and would run {kind} "
                       "(no sharding) here; on CPU use examples/accelerate/ddp_cpu.yaml",
                       field="accelerate config")
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    zero3 = bool(getattr(trainer, "is_deepspeed_enabled", False)) and getattr(plugin, "zero_stage", 0) == 3
    if zero3 and not _zero3_saves_16bit(plugin):
        # The final model and the weight distances need the gathered weights; without this flag
        # accelerate refuses to gather them and the run would die after its last step.
        raise PLWError("ZeRO-3 needs zero3_save_16bit_model: true in the accelerate config "
                       "(stage3_gather_16bit_weights_on_model_save in a DeepSpeed json) so that plw can "
                       "save the trained model", field="accelerate config")
    if config.regularizers.minkowski_coef and (fsdp or zero3):
        raise PLWError(f"the Minkowski penalty needs whole parameters in every process, which "
                       f"{'FSDP' if fsdp else 'ZeRO-3'} shards: use one process, DDP or ZeRO <= 2",
                       field="regularizers.minkowski_coef")


def _zero3_saves_16bit(plugin) -> bool:
    if getattr(plugin, "zero3_save_16bit_model", False):
        return True
    ds = getattr(plugin, "deepspeed_config", None) or {}
    flag = ds.get("zero_optimization", {}).get("stage3_gather_16bit_weights_on_model_save", False)
    return flag is True or str(flag).lower() == "true"


def _training_kwargs(config: TrainConfig, out: Path, grad_accum: int, bf16: bool, fp16: bool,
                     has_val: bool, cuda: bool, world: int) -> dict:
    from transformers import TrainingArguments

    return _compatible_args(TrainingArguments, dict(
        output_dir=str(out),
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=grad_accum,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type=config.lr_scheduler,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=config.optim,
        seed=config.seed,
        data_seed=config.seed,
        bf16=bf16,
        fp16=fp16,
        logging_steps=config.logging_steps,
        eval_strategy="steps" if (has_val and config.eval_steps) else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=[r for r in config.report_to if r != "none"] or "none",
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not cuda,
        ddp_find_unused_parameters=False,
        ddp_backend="gloo" if (world > 1 and not cuda) else None,
    ))


def check_dtype(config: TrainConfig) -> None:
    """Refuse precision settings that would not train as asked; warn about pure bf16 weights."""
    full = not config.lora.enabled and config.model != "builtin:tiny"
    if config.dtype == "float16" and full:
        raise PLWError("dtype float16 trains fp16 weights with neither fp32 master copies nor loss "
                       "scaling; use dtype auto (fp32 weights, fp16 autocast with loss scaling on GPUs "
                       "without bf16) or LoRA", field="dtype")
    mixed = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if config.dtype in ("float32", "bfloat16", "float16") and mixed in ("bf16", "fp16"):
        raise PLWError(f"dtype {config.dtype} asks for no autocast, but the accelerate config sets "
                       f"mixed_precision: {mixed}; use dtype auto, or mixed_precision: no", field="dtype")
    if config.dtype == "bfloat16" and full and is_main_process():
        print("warning: dtype bfloat16 trains bf16 weights without fp32 master copies: AdamW updates "
              "smaller than bf16's resolution are lost (at lr 2e-5 most weights never change); "
              "dtype auto keeps fp32 weights under bf16 autocast", file=sys.stderr)


def _compatible_args(cls, kwargs: dict) -> dict:
    """Map our TrainingArguments onto the installed transformers 5.x (names moved within 5.x)."""
    import dataclasses as dc

    fields = {f.name for f in dc.fields(cls)}
    if "train_sampling_strategy" not in fields:  # older 5.x: a boolean
        kwargs["group_by_length"] = kwargs.pop("train_sampling_strategy") == "group_by_length"
    if "warmup_ratio" in fields and isinstance(kwargs.get("warmup_steps"), float):
        kwargs["warmup_ratio"] = kwargs.pop("warmup_steps")  # older 5.x: warmup_steps is an int
    return kwargs


def _match_names(state: dict, initial: dict) -> dict:
    """Map `get_state_dict` names onto `named_parameters` names (PEFT drops `.default` etc.)."""
    out = {}
    for name in initial:
        if name in state:
            out[name] = state[name]
    return out
