"""`train(config)`: one PLW fine-tuning run, from records to saved weights and metrics.

records (`plw.data.load_records`) → train/val split → tokenizer (trained for `builtin:tiny`) →
weighted tokens (`plw.data.tokenize_dataset`) → model (+ LoRA, dropout) → `PLWTrainer` →
outputs in `output_dir`: `config.yaml`, `metrics.jsonl`, `metrics.json`, safetensors weights (or
the LoRA adapter), tokenizer, and `checkpoint-*` for resuming.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from plw import ui
from plw.errors import PLWError
from plw.train.config import TrainConfig

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


def _load_model(config: TrainConfig, tokenizer):
    import torch

    if config.model == "builtin:tiny":
        from plw.train.tiny import tiny_llama

        model = tiny_llama(tokenizer, seed=config.seed, hidden_size=config.tiny.hidden_size,
                           num_layers=config.tiny.num_layers, num_heads=config.tiny.num_heads,
                           max_position_embeddings=max(1024, config.max_length))
        if config.attn_implementation:
            try:
                model.set_attn_implementation(config.attn_implementation)
            except (ValueError, ImportError) as err:
                raise PLWError(_first_line(err), field="attn_implementation") from None
        return model
    from transformers import AutoModelForCausalLM

    dtype = {"auto": torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16,
             "float16": torch.float16}[config.dtype]
    extra = {"attn_implementation": config.attn_implementation} if config.attn_implementation else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype, **extra)
    except (OSError, ValueError, ImportError) as err:
        field = "attn_implementation" if extra and "attn" in str(err).lower() else "model"
        raise PLWError(f"cannot load model: {str(err).splitlines()[0]}", field=field)
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def _tokenize(records, tokenizer, config: TrainConfig):
    from plw.data.encode import tokenize_dataset

    rows, report = tokenize_dataset(records, tokenizer, template=config.template,
                                    prompt_loss_weight=config.prompt_loss_weight, max_length=config.max_length)
    return rows, report


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
    with _quiet_hf_bars(True):  # no "Writing model shards" bar in the middle of ours
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


def train(config: TrainConfig | dict, *, progress: bool = True,
          data_report: bool | None = None) -> TrainResult:
    """Fine-tune `config.model` on `config.data` at `config.prompt_loss_weight`; return the result.

    `data_report` (default: `progress`): print the tokenisation summary of the train and validation
    sets (examples kept, truncated, dropped per reason) on stderr. The counts are always in
    `metrics["data"]` and metrics.json.

    Safe to call repeatedly in one process (each call builds its own model, trainer and state).
    Under `accelerate launch`/`torchrun` every process calls it; rank 0 writes the outputs.
    """
    import torch
    from transformers import TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from plw.data.records import load_records
    from plw.train.callbacks import MetricsCallback, RichProgressCallback, read_metrics
    from plw.train.config import save_config
    from plw.train.diagnostics import loss_rsd, snapshot, weight_distances
    from plw.train.collator import PLWCollator
    from plw.train.regularizers import set_dropout
    from plw.train.trainer import PLWTrainer
    from plw.io import json_safe, write_json_atomic

    if not isinstance(config, TrainConfig):
        config = TrainConfig.model_validate(config)
    t0 = time.perf_counter()
    out = Path(config.output_dir)
    # Bad input fails below before anything is written: the output dir is created only after
    # data, tokenizer, model (+ LoRA), TrainingArguments and the trainer are built.
    last_ckpt = get_last_checkpoint(str(out)) if config.resume and out.is_dir() else None
    out_existed = out.exists()

    records = load_records(config.data, format=config.data_format)
    if not records:
        raise PLWError("no records", file=config.data, field="data")
    if config.validation_data:
        train_records = records
        val_records = load_records(config.validation_data, format=config.data_format)[:config.max_val_examples]
    else:
        train_records, val_records = split_records(records, config.val_fraction, config.max_val_examples,
                                                   config.seed)
    tokenizer = _load_tokenizer(config, train_records, out)
    train_rows, train_report = _tokenize(train_records, tokenizer, config)
    val_rows, val_report = _tokenize(val_records, tokenizer, config) if val_records else ([], None)
    reports = {"train": train_report, "val": val_report}
    if not train_rows:
        raise PLWError("no training examples left after tokenisation (" + train_report.summary() + ")",
                       file=config.data, field="data")

    # TrainingArguments first: it sets up the distributed state, so that loading can use DeepSpeed
    # ZeRO-3's partitioned init and FSDP's rank-0-only (cpu_ram_efficient) loading.
    world = _world_size()
    per_step = config.per_device_batch_size * world
    if config.global_batch_size % per_step:
        raise PLWError(f"global_batch_size {config.global_batch_size} is not a multiple of "
                       f"per_device_batch_size × processes = {per_step}", field="global_batch_size")
    grad_accum = config.global_batch_size // per_step
    cuda = torch.cuda.is_available()
    bf16 = cuda and config.dtype == "auto" and torch.cuda.is_bf16_supported()
    # A GPU without bf16 (T4, V100): fp32 weights under fp16 autocast with loss scaling. plw's loss
    # computes fp16 in fp32 and keeps its gradients fp32 until the scale is applied (docs/loss.md).
    fp16 = cuda and config.dtype == "auto" and not bf16
    check_dtype(config)
    has_val = bool(val_rows)
    if config.loss_backend in ("cce", "liger") and not cuda:
        raise PLWError(f"{config.loss_backend!r} runs on CUDA only; use 'auto' or 'torch' here",
                       field="loss_backend")
    if config.loss_strategy != "auto" and config.loss_backend not in ("auto", "torch"):
        raise PLWError(f"loss_strategy {config.loss_strategy!r} is for plw's own engine "
                       f"(loss_backend auto or torch), not {config.loss_backend!r}", field="loss_strategy")

    try:
        args = TrainingArguments(**_training_kwargs(config, out, grad_accum, bf16, fp16, has_val, cuda, world))
    except ValueError as err:  # a setting TrainingArguments refuses: one line, nothing written
        raise PLWError(_first_line(err), field="TrainingArguments") from None
    check_single_process_gpus(args.n_gpu, world)
    set_seed(config.seed)
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
            raise PLWError(_first_line(err), field="lora.target_modules") from None
    # Trainable tensors only: the reference for the distances (computed by the main process) and
    # the Minkowski penalty (every process). An fp32 CPU copy per process would be the model's size
    # again in host memory on every rank: other ranks keep one only when the penalty needs it.
    # Every process calls snapshot: under ZeRO-3 (zero.Init) gathering a partitioned parameter is
    # a collective all ranks take part in; keep=False then drops the gathered copy.
    needs_initial = is_main_process() or bool(config.regularizers.minkowski_coef)
    initial = snapshot(model, keep=needs_initial)

    collator = PLWCollator(tokenizer.pad_token_id, packing=config.packing)
    trainer = PLWTrainer(
        model=model, args=args, train_dataset=_ListDataset(train_rows),
        eval_dataset=_ListDataset(val_rows) if has_val else None,
        data_collator=collator, processing_class=tokenizer,
        normalizer=config.normalizer, label_smoothing=config.regularizers.label_smoothing,
        track_prompt_nll=config.log_prompt_nll, loss_backend=config.loss_backend,
        loss_strategy=config.loss_strategy,
        minkowski_coef=config.regularizers.minkowski_coef, minkowski_p=config.regularizers.minkowski_p,
        initial_params=initial,
    )
    try:
        check_sharding(trainer, config)
    except PLWError:
        # Some Trainer set-ups (DeepSpeed) create output_dir already: leave no empty folder behind.
        if not out_existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    from transformers.trainer_callback import ProgressCallback, PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    resume_step = int(Path(last_ckpt).name.split("-")[-1]) if last_ckpt else None
    trainer.add_callback(MetricsCallback(trainer, out / "metrics.jsonl", resume_step=resume_step))
    if progress:
        trainer.add_callback(RichProgressCallback(f"plw train (PLW {config.prompt_loss_weight:g})"))

    # Everything above can fail on bad input (one error line); only now are the data counts
    # printed and the output directory created.
    if (progress if data_report is None else data_report) and is_main_process():
        print_data_reports(reports)
    out.mkdir(parents=True, exist_ok=True)
    if trainer.accelerator.is_main_process:
        save_config(config, out / "config.yaml")
        if not last_ckpt:
            tokenizer.save_pretrained(str(out))
    with _quiet_hf_bars(progress):
        trainer.train(resume_from_checkpoint=last_ckpt)

    metrics: dict[str, Any] = {"prompt_loss_weight": config.prompt_loss_weight,
                               "global_step": trainer.state.global_step}
    history = read_metrics(out / "metrics.jsonl") if is_main_process() else []
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    metrics["train_loss"] = losses[-1] if losses else float("nan")
    metrics["step_losses"] = list(trainer.step_losses)
    metrics["loss_rsd"] = loss_rsd(trainer.step_losses, config.loss_window)
    for key in ("prompt_nll", "completion_nll"):
        vals = [r[key] for r in trainer.state.log_history if key in r]
        if vals:
            metrics[f"train_{key}"] = vals[-1]
    if has_val:
        done = [r["eval_completion_nll"] for r in trainer.state.log_history
                if "eval_completion_nll" in r and r.get("step") == trainer.state.global_step]
        metrics["val_completion_nll"] = done[-1] if done else trainer.evaluate()["eval_completion_nll"]
    # The wrapped model: under DeepSpeed that is the engine, which gathers ZeRO-3 partitions
    # (`trainer.model` is the bare module there); accelerate unwraps DDP itself.
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped if trainer.model_wrapped is not None
                                               else trainer.model)
    if state is not None and trainer.accelerator.is_main_process:
        current = _match_names(state, initial)
        metrics.update(weight_distances(initial, current, p=config.distance_p))
    metrics["train_tokens"] = int(trainer.callback_handler.callbacks and next(
        (c.tokens_offset for c in trainer.callback_handler.callbacks if isinstance(c, MetricsCallback)), 0)
        + trainer.train_tokens_total())
    metrics["wall_time_s"] = time.perf_counter() - t0
    metrics["resumed_from"] = last_ckpt
    metrics["data"] = {k: r.to_dict() for k, r in reports.items() if r is not None}
    _save_dir_atomic(trainer, out, state)
    if trainer.accelerator.is_main_process:
        # Strict JSON: undefined values (e.g. loss_rsd of a run shorter than one window) as null.
        write_json_atomic(out / "metrics.json", json_safe(metrics))
    trainer.accelerator.wait_for_everyone()

    trained = trainer.accelerator.unwrap_model(trainer.model)
    del trainer
    return TrainResult(output_dir=out, model=trained, tokenizer=tokenizer, train_records=train_records,
                       val_records=val_records, metrics=metrics, config=config, log_history=history)


@contextlib.contextmanager
def _quiet_hf_bars(quiet: bool):
    """No transformers tqdm bars (checkpoint "Writing model shards") under plw's own progress display."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if quiet and was_on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and was_on:
            hf_logging.enable_progress_bar()


def print_data_reports(reports: dict, console=None) -> None:
    """One line per split on stderr: examples kept of records, tokens, truncated, dropped per reason."""
    from rich.markup import escape

    console = console or ui.console(stderr=True)
    for split, report in reports.items():
        if report is not None:
            style = "yellow" if report.n_dropped else "dim"
            console.print(f"[{style}]{split} data: {escape(report.summary())}[/]")


def check_single_process_gpus(n_gpu: int, world_size: int = 1) -> None:
    """Refuse the HF Trainer's single-process multi-GPU mode (nn.DataParallel).

    The PLW forward and the per-step normaliser assume one model replica per process (DDP, FSDP,
    DeepSpeed); DataParallel scatters one process's batch over replicas and would gather per-replica
    sums and means incorrectly.
    """
    if n_gpu > 1 and world_size <= 1:
        raise PLWError(f"{n_gpu} GPUs visible to one process (the Trainer would use nn.DataParallel, "
                       "which plw does not support): launch with `accelerate launch -m plw.cli train …` "
                       "or `torchrun`, or pick one GPU with CUDA_VISIBLE_DEVICES=0", field="devices")


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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
