"""CLI commands of plw.experiment: `plw sweep plan|run` and `plw results`.

Heavy libraries (torch, transformers, pandas, ray) are imported inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from plw import ui

sweep_app = typer.Typer(
    name="sweep",
    help="Factorial PLW sweeps: PLW levels × models × datasets × regularizers × seeds, each run "
         "trained, evaluated and recorded in one tidy, resumable results table.",
    no_args_is_help=True,
)


@sweep_app.command("plan")
def plan_cmd(
    spec: Path = typer.Argument(..., help="Sweep spec (YAML)."),
    limit: int = typer.Option(200, "--limit", help="Show at most this many runs (totals cover all)."),
) -> None:
    """Print the grid with stable run IDs, each run's status and an estimate of tokens and time."""

    from plw.experiment.plan import plan, status_counts
    from plw.experiment.spec import load_spec

    sweep = load_spec(spec)
    planned = plan(sweep)
    console = ui.console()
    for renderable in plan_table(sweep, planned, limit):
        console.print(renderable, soft_wrap=isinstance(renderable, str))
    if len(planned) > limit:
        console.print(f"… {len(planned) - limit} more runs (use --limit)")
    counts = status_counts(planned)
    todo = [p for p in planned if p.status != "finished"]
    tokens = [p.tokens for p in todo]
    secs = [p.seconds for p in todo]
    tok_s = _total([t for t in tokens if t is not None], len(tokens), lambda v: f"{int(v):,}")
    time_s = _total([s for s in secs if s is not None], len(secs), ui.fmt_seconds)
    where = "run one after another" if sweep.backend == "local" else \
        "summed over runs; Ray runs them in parallel as resources allow"
    console.print(f"{len(planned)} runs: {counts['finished']} finished, {counts['partial']} interrupted "
                  f"(restart), {counts['pending']} pending. To run: {tok_s} training tokens, "
                  f"{time_s} ({where}).", soft_wrap=True)


def plan_table(sweep, planned: list, limit: int = 200) -> list:
    """What `plw sweep plan` prints above its totals: a title line, a line with the factors that are
    constant across the grid (model, regularizer, seed: not repeated as columns), and the table.

    Numbers, run IDs and statuses never wrap or truncate; long text (model and dataset names) folds
    onto more lines, so the table stays readable at 80 columns."""
    from rich import box
    from rich.markup import escape


    def label(p, col):
        r = p.run
        return {"model": r.model, "regularizer": escape(r.regularizer.name), "seed": str(r.seed)}[col]

    constant = [c for c in ("model", "regularizer", "seed")
                if len({label(p, c) for p in planned}) <= 1]
    cols = ["run_id"] + [c for c in ("model",) if c not in constant] + ["dataset"] + [
        c for c in ("regularizer",) if c not in constant] + ["PLW", "w_p"] + [
        c for c in ("seed",) if c not in constant] + ["status", "tokens", "time"]
    numeric = {"PLW", "w_p", "seed", "tokens", "time"}
    # No vertical rules (2 spaces between columns): the fixed-width columns leave the most room for
    # the names.
    table = ui.table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    for col in cols:
        if col in numeric or col in ("run_id", "status"):
            table.add_column(col, justify="right" if col in numeric else "left", no_wrap=True)
        else:
            # "reg": a short header, so the narrow column leaves the room to the dataset names
            table.add_column("reg" if col == "regularizer" else col, overflow="fold")
    style = {"finished": "green", "partial": "yellow", "pending": ""}
    for p in planned[:limit]:
        r = p.run
        cell = {"run_id": r.run_id, "model": escape(r.model), "dataset": escape(r.dataset.name), "PLW": f"{r.plw:g}",
                "w_p": f"{r.wp:.3f}", "regularizer": escape(r.regularizer.name), "seed": str(r.seed),
                "status": f"[{style[p.status]}]{p.status}[/]" if style[p.status] else p.status,
                "tokens": "?" if p.tokens is None else f"{p.tokens:,}",
                "time": "?" if p.seconds is None else ui.fmt_seconds(p.seconds)}
        table.add_row(*(cell[c] for c in cols))
    out: list = [escape(f"sweep {sweep.name} → {sweep.store_dir()}")]
    if planned and constant:
        out.append(escape("  ".join(f"{c}: {label(planned[0], c)}" for c in constant)))
    out.append(table)
    return out


def _total(known: list, n: int, fmt) -> str:
    """'≈X', or '≥X (k runs unknown)' when some runs could not be estimated, or '?'."""
    if not known:
        return "?" if n else "≈0"
    text = f"≈{fmt(sum(known))}"
    return text if len(known) == n else f"≥{fmt(sum(known))} ({n - len(known)} runs unknown)"


@sweep_app.command("run")
def run_cmd(
    spec: Path = typer.Argument(..., help="Sweep spec (YAML)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="local or ray (default: the spec's)."),
    analysis: Optional[bool] = typer.Option(None, "--analysis/--no-analysis",
                                            help="Run the analysis report at the end (default: the spec's)."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first failed run."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Train and evaluate every unfinished run; finished runs are skipped (safe to rerun after a crash)."""
    import os
    import sys

    # The libraries' own tqdm bars would interleave with plw's rich progress display
    # (tqdm reads this once, at import, so it must be set before torch/transformers load).
    if progress and "tqdm" not in sys.modules:
        os.environ.setdefault("TQDM_DISABLE", "1")
    from plw.errors import PLWError
    from plw.experiment.runner import run_sweep
    from plw.experiment.spec import load_spec

    if backend not in (None, "local", "ray"):
        raise PLWError(f"expected local or ray, got {backend!r}", field="--backend")
    sweep = load_spec(spec, check_files=True)
    console = ui.console(stderr=True)
    outcome = run_sweep(sweep, backend=backend, progress=progress, fail_fast=fail_fast, console=console)
    if (sweep.analysis if analysis is None else analysis) and not outcome.failed:
        analyse_sweep(outcome, console, progress=progress)
    typer.echo(f"results: {outcome.store_dir / 'results.parquet'} ({len(outcome.finished)} run(s) "
               f"finished now, {len(outcome.skipped)} earlier, {len(outcome.failed)} failed)")
    if outcome.failed:
        # SystemExit, not typer.Exit: click (standalone_mode=False) would turn Exit into a return value.
        raise SystemExit(1)


def analyse_sweep(outcome, console, *, progress: bool = True) -> None:
    """The analysis report of a finished sweep, into `<store>/analysis/` (here, at the CLI level,
    because `plw.experiment` and `plw.analysis` sit side by side)."""
    from plw.errors import PLWError
    from plw.analysis.analyze import conclusion
    from plw.analysis.report import analyze_results

    out = outcome.store_dir / "analysis"
    console.rule("[bold]analysis[/]", align="left")
    try:
        analysis = analyze_results(outcome.store_dir, out, progress=progress)
    except Exception as err:  # the runs are safe in the table; say why the report is missing
        msg = err.one_line() if isinstance(err, PLWError) else f"{type(err).__name__}: {err}"
        outcome.analysis_note = f"analysis failed: {msg} (rerun it with `plw analyze {outcome.store_dir}`)"
        console.print(f"[yellow]note[/]: {outcome.analysis_note}", soft_wrap=True)
        return
    outcome.analysis_dir = out
    for name, g in analysis.get("groups", {}).items():
        console.print(f"• {g.get('conclusion') or conclusion(name, g)}", soft_wrap=True)
    console.print(f"analysis report → {out / 'report.html'}")


def results_cmd(
    target: Path = typer.Argument(..., help="A sweep spec (YAML), a results store directory, or a "
                                            ".parquet/.csv table."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Export the tidy table as CSV."),
    parquet: Optional[Path] = typer.Option(None, "--parquet", help="Export the tidy table as Parquet."),
    rows: int = typer.Option(40, "--rows", help="Show at most this many rows."),
    benchmarks_only: bool = typer.Option(False, "--benchmarks", help="Hide diagnostics rows (group diag)."),
    wide: bool = typer.Option(False, "--wide", help="Also show the group and diagnostics columns."),
) -> None:
    """Show the results table of a sweep and export it."""

    from plw.results.store import read_table
    from plw.io import atomic_path

    store = target
    if target.suffix in (".yaml", ".yml"):
        from plw.experiment.spec import load_spec

        store = load_spec(target).store_dir()
    df = read_table(store)
    if csv is not None:
        with atomic_path(csv) as tmp:
            df.to_csv(tmp, index=False)
    if parquet is not None:
        with atomic_path(parquet) as tmp:
            df.to_parquet(tmp, index=False)
    shown = df[df["group"] != "diag"] if benchmarks_only and "group" in df.columns else df
    order = [c for c in ("model", "dataset", "regularizer", "plw", "seed", "group", "benchmark", "metric")
             if c in shown.columns]
    shown = shown.sort_values(order, kind="stable") if order else shown  # display only
    varying = [c for c in ("model", "regularizer", "seed") if c in df.columns and df[c].nunique() > 1]
    cols = ["run_id"] + varying + ["dataset", "ratio", "plw", "benchmark", "metric", "score"]
    if wide:
        cols += ["group", "loss_rsd", "weight_l2", "memorization_bleu", "generation_length",
                 "val_completion_nll", "wall_time_s", "train_tokens"]
    cols = [c for c in dict.fromkeys(cols) if c in shown.columns]
    n_runs = df["run_id"].nunique() if "run_id" in df.columns else "?"
    table = ui.table(title=str(store))
    for c in cols:
        table.add_column(c, justify="right" if shown[c].dtype.kind in "fi" else "left",
                         no_wrap=c in ("run_id", "plw", "score"))
    for _, row in shown.head(rows).iterrows():
        table.add_row(*(_cell(row[c]) for c in cols))
    console = ui.console()
    console.print(table)
    if len(shown) > rows:
        console.print(f"… {len(shown) - rows} more rows (--rows N, or export with --csv/--parquet)")
    console.print(f"{len(df)} rows, {n_runs} runs", soft_wrap=True)
    for path in (csv, parquet):
        if path is not None:
            console.print(f"wrote {path}")


def _cell(v) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.4g}"
    return str(v)


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`."""
    app.add_typer(sweep_app, name="sweep")
    app.command("results")(results_cmd)
