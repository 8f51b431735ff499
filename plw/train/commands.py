"""CLI commands of plw.train (registered onto the top-level app by plw.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`."""
    app.command("train")(train_command)


def train_command(
    config: Optional[Path] = typer.Argument(
        None, help="CONFIG.yaml. Without it: the built-in CPU preset (tiny Llama on builtin:short)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set key=value (dotted for "
                                   "sections: --set regularizers.label_smoothing=0.1). Repeatable."),
    model: Optional[str] = typer.Option(None, "--model", help="HF name/path or builtin:tiny."),
    data: Optional[str] = typer.Option(None, "--data", help="Records: JSON/JSONL file, HF dataset, builtin:short…"),
    prompt_loss_weight: Optional[float] = typer.Option(None, "--prompt-loss-weight", "--plw",
                                                       help="Weight of prompt tokens in [0, 1]."),
    normalizer: Optional[str] = typer.Option(None, "--normalizer",
                                             help="weight_sum | nonzero_tokens | completion_tokens | a number."),
    lora: Optional[bool] = typer.Option(None, "--lora/--no-lora", help="Train LoRA adapters only."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Output directory."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Fine-tune a causal LM with a prompt loss weight (PLW): completion tokens weigh 1, prompt tokens PLW.

    Writes config.yaml, metrics.jsonl, metrics.json, safetensors weights (or a LoRA adapter) and the
    tokenizer into the output directory; resumes from its last checkpoint when one exists.
    """
    from plw.train.config import load_config

    flags = [(flag, key, value) for flag, key, value in (
        ("--model", "model", model), ("--data", "data", data),
        ("--prompt-loss-weight", "prompt_loss_weight", prompt_loss_weight),
        ("--normalizer", "normalizer", normalizer), ("--output", "output_dir", output),
        ("--lora/--no-lora", "lora.enabled", lora)) if value is not None]
    # An error in a flag's value names that flag (not --set).
    cfg = load_config(config, list(set_), flags=flags)

    from plw.train.run import is_main_process, train

    result = train(cfg, progress=progress, data_report=True)
    if not is_main_process():
        return  # under accelerate launch / torchrun every process runs this; the main one reports
    m = result.metrics
    parts = [f"train_loss {m.get('train_loss', float('nan')):.4f}"]
    if "val_completion_nll" in m:
        parts.append(f"val completion NLL {m['val_completion_nll']:.4f}")
    parts.append(f"{m['wall_time_s']:.0f}s")
    typer.echo(f"saved to {result.output_dir}  ({', '.join(parts)})")
