"""Trainer callbacks: `metrics.jsonl` (one JSON line per optimizer step / log) and rich progress.

`metrics.jsonl` is append-only with whole lines written and flushed at once (rewriting the file
every step would be quadratic); on resume it is cut back atomically to the checkpoint's step, so
a resumed run's file reads as one continuous run.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

from plw.io import json_safe, write_text_atomic
from plw.ui import progress_bar


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class MetricsCallback(TrainerCallback):
    """Records every optimizer step's loss (`step_loss`) and every log into `metrics.jsonl`."""

    def __init__(self, trainer, path: str | Path, *, resume_step: int | None = None):
        self.trainer = trainer
        self.path = Path(path)
        self.pending: dict | None = None
        self.tokens_offset = 0
        if resume_step is not None:
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            if trainer.accelerator.is_main_process:
                write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
            trainer.step_losses[:0] = [r["step_loss"] for r in kept if "step_loss" in r]
            tokens = [r["train_tokens"] for r in kept if "train_tokens" in r]
            self.tokens_offset = tokens[-1] if tokens else 0
        elif trainer.accelerator.is_main_process:
            write_text_atomic(self.path, "")

    def _write(self, record: dict) -> None:
        if self.trainer.accelerator.is_main_process:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(json_safe(record)) + "\n")
                fh.flush()

    def flush(self) -> None:
        if self.pending is not None:
            self._write(self.pending)
            self.pending = None

    def on_step_end(self, args, state, control, **kwargs):
        self.flush()
        loss = self.trainer.pop_step_loss()  # collective: every rank calls it
        tokens = self.tokens_offset + self.trainer.train_tokens_total()
        self.pending = {"step": state.global_step, "epoch": state.epoch, "step_loss": loss,
                        "train_tokens": tokens}

    def on_log(self, args, state, control, logs=None, **kwargs):
        record = {"step": state.global_step, "epoch": state.epoch}
        if self.pending is not None and self.pending["step"] == state.global_step:
            record.update(self.pending)
            self.pending = None
        else:
            self.flush()
        record.update(logs or {})
        self._write(record)

    def on_train_end(self, args, state, control, **kwargs):
        self.flush()


class RichProgressCallback(TrainerCallback):
    """A rich progress bar over optimizer steps, showing the latest loss (main process only)."""

    def __init__(self, description: str = "training"):
        self.description = description
        self.progress = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.progress = progress_bar(True, self.description, state.max_steps, transient=False).__enter__()
        self.progress.update(completed=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is not None and logs:
            parts = [f"{k} {logs[k]:.4g}" for k in ("loss", "completion_nll", "eval_completion_nll")
                     if isinstance(logs.get(k), (int, float))]
            if parts:
                self.progress.update(info="  ".join(parts))

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
