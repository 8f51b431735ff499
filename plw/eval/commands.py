"""`plw eval MODEL`: benchmark a saved model (a `plw train` output directory or a HF name/path)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

from plw import ui


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`."""
    app.command("eval")(eval_command)


def eval_command(
    model: str = typer.Argument(..., help="Model directory (e.g. a `plw train` output), .gguf file or HF name."),
    suite: str = typer.Option("builtin", "--suite", "-s",
                              help="builtin | offline | paper, or comma-separated task names."),
    limit: Optional[float] = typer.Option(None, "--limit", help="Documents per task (a fraction if < 1)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir",
                                            help="Local benchmark files (default ../shared/data/bench)."),
    all_metrics: bool = typer.Option(False, "--all-metrics", help="Report every metric of every task."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the rows as JSON here."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show lm-eval's progress bars."),
) -> None:
    """Evaluate a causal LM on lm-evaluation-harness tasks; prints one row per benchmark.

    MODEL is a `plw train` output directory (full weights or a LoRA adapter), a model directory, a
    .gguf file or a hub name. The suite, its data files and the output path are checked before the
    model is loaded.
    """
    from plw.data.tokenizer import load_tokenizer
    from plw.eval import evaluate
    from plw.eval.harness import resolve_suite
    from plw.io import check_output_file, write_json_atomic
    from plw.train.model import check_model_source, load_model

    names = [s.strip() for s in suite.split(",") if s.strip()]
    if output is not None:
        check_output_file(output)
    check_model_source(model)
    tokenizer = load_tokenizer(model)
    specs = resolve_suite(names, tokenizer, data_dir=data_dir)  # reads the task files: fails early
    with ui.quiet_hf_bars() if not progress else contextlib.nullcontext():
        lm = load_model(model)
    if limit is not None and limit >= 1:
        limit = int(limit)
    rows = evaluate(lm, tokenizer, specs, limit=limit, batch_size=batch_size, data_dir=data_dir,
                    all_metrics=all_metrics, progress=progress)
    table = ui.table("benchmark", "metric", "score", "group")
    for r in rows:
        table.add_row(r["benchmark"], r["metric"], f"{r['score']:.4f}", r["group"])
    ui.console().print(table)
    if output is not None:
        write_json_atomic(output, rows)


def load_model(name_or_path: str):
    """A causal LM and its tokenizer (`plw.train.model.load_model_and_tokenizer`)."""
    from plw.train.model import load_model_and_tokenizer

    return load_model_and_tokenizer(name_or_path)
