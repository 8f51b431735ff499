"""`plw eval MODEL`: benchmark a saved model (a `plw train` output directory or a HF name/path)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from plw import ui


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`."""
    app.command("eval")(eval_command)


def eval_command(
    model: str = typer.Argument(..., help="Model directory (e.g. a `plw train` output) or HF name."),
    suite: str = typer.Option("builtin", "--suite", "-s",
                              help="builtin | offline | paper, or comma-separated task names."),
    limit: Optional[float] = typer.Option(None, "--limit", help="Documents per task (a fraction if < 1)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir",
                                            help="Local benchmark files (default ../shared/data/bench)."),
    all_metrics: bool = typer.Option(False, "--all-metrics", help="Report every metric of every task."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the rows as JSON here."),
) -> None:
    """Evaluate a causal LM on lm-evaluation-harness tasks; prints one row per benchmark."""

    from plw.eval import evaluate
    from plw.io import write_json_atomic

    names = [s.strip() for s in suite.split(",") if s.strip()]
    lm, tokenizer = load_model(model)
    if limit is not None and limit >= 1:
        limit = int(limit)
    rows = evaluate(lm, tokenizer, names[0] if len(names) == 1 else names, limit=limit,
                    batch_size=batch_size, data_dir=data_dir, all_metrics=all_metrics)
    table = ui.table("benchmark", "metric", "score", "group")
    for r in rows:
        table.add_row(r["benchmark"], r["metric"], f"{r['score']:.4f}", r["group"])
    ui.console().print(table)
    if output is not None:
        write_json_atomic(output, rows)


def load_model(name_or_path: str):
    """A causal LM and its tokenizer from a directory (full weights or a PEFT adapter) or a
    HF name; `PLWError` naming the path when it cannot be loaded."""
    from plw.data.tokenizer import load_tokenizer
    from plw.errors import PLWError

    path = Path(name_or_path)
    try:
        if (path / "adapter_config.json").exists():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(str(path))
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as err:
        raise PLWError(f"cannot load model: {str(err).splitlines()[0]}", file=str(name_or_path))
    return model, load_tokenizer(name_or_path)
