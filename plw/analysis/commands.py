"""CLI commands of plw.analysis: `plw analyze` and `plw recommend` (registered by plw.cli).

Heavy imports (pandas, scipy, matplotlib, tokenizers) happen inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from plw import ui
from plw.errors import PLWError


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`."""
    app.command("analyze", help="Analyse a PLW sweep: beta GLMM + critical PLW, GAM optimal PLW, "
                                "figures and an HTML report.")(analyze)
    app.command("recommend", help="Recommend a PLW for a data set from its generation ratio R_g.")(recommend)


def analyze(
    results: Path = typer.Argument(..., help="Results store directory, or a tidy .csv/.parquet table "
                                             "with at least benchmark, model, plw, score."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory (report.html, analysis.json, figures/)."),
    scores: str = typer.Option("minmax", "--scores", help="GLMM response: raw scores, or per-benchmark "
                                                          "min-max scores squeezed into (0, 1)."),
    backend: str = typer.Option("python", "--backend", help="python (built in) or r (glmmTMB through "
                                                            "Rscript, when installed) for the GLMM."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    from plw.analysis import analyze_results

    if scores not in ("raw", "minmax"):
        raise PLWError(f"must be raw or minmax, got {scores!r}", field="--scores")
    if backend not in ("python", "r"):
        raise PLWError(f"must be python or r, got {backend!r}", field="--backend")
    console = ui.console(stderr=True)
    a = analyze_results(results, out, scores=scores, progress=progress)
    if backend == "r":
        from plw.analysis.rbackend import compare_with_r
        a = compare_with_r(results, out, scores=scores, analysis=a)
    for name, g in a["groups"].items():
        console.print(g["conclusion"])
    typer.echo(f"wrote {Path(out) / 'report.html'} and {Path(out) / 'analysis.json'}")


def recommend(
    data: Optional[str] = typer.Argument(None, help="Data: .json/.jsonl file, builtin:short|long|mixed, "
                                                    "or a Hugging Face data set name/path."),
    tokenizer: str = typer.Option("builtin", "--tokenizer", "-t", help="Tokenizer for R_g (hub name, "
                                                                       "directory or SentencePiece .model)."),
    from_: Optional[Path] = typer.Option(None, "--from", help="Your sweep's results (store or table): "
                                                             "recommend from its fitted GAM."),
    ratio: Optional[float] = typer.Option(None, "--ratio", help="Use this R_g instead of measuring DATA."),
    scores: str = typer.Option("minmax", "--scores", help="Scores the GAM sees with --from: raw or minmax."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the recommendation as JSON."),
) -> None:
    from plw.analysis.recommend import completion_kind, from_gam, from_paper

    if scores not in ("raw", "minmax"):
        raise PLWError(f"must be raw or minmax, got {scores!r}", field="--scores")
    if ratio is None:
        if data is None:
            raise PLWError("give DATA (or --ratio R_g)", field="DATA")
        from plw.data import load_records
        from plw.data.stats import dataset_stats
        from plw.data.tokenizer import load_tokenizer

        records = load_records(data)
        if not records:
            raise PLWError("no records", file=data)
        ratio = float(dataset_stats(records, load_tokenizer(tokenizer)).ratio)
    elif ratio < 0:
        raise PLWError("R_g must be >= 0", field="--ratio")

    rec = None
    if from_ is not None:
        from plw.analysis.analyze import fit_gams
        from plw.analysis.results import benchmark_rows, load_results

        df, _ = load_results(from_)
        gams = fit_gams(benchmark_rows(df), scores)
        allg = gams.get("All", {}) if "skipped" not in gams else {}
        if "_fit" in allg:
            rec = from_gam(ratio, allg["_fit"], allg["score_range"], [float(r) for r in allg["optimal"]])
        else:
            reason = gams.get("skipped") or allg.get("skipped", "GAM not fitted")
            typer.echo(f"note: your sweep's GAM could not be fitted ({reason}); using the paper's findings.",
                       err=True)
    if rec is None:
        rec = from_paper(ratio)
    typer.echo(f"R_g = {ratio:.3g} ({completion_kind(ratio)}-completion data)")
    typer.echo(f"recommended PLW: {rec['plw']:g}" + ("  (flat: PLW barely matters here)" if rec["flat"] else ""))
    typer.echo(f"source: {rec['source']} — {rec['source_detail']}")
    typer.echo(f"confidence: {rec['confidence']} — {rec['explanation']}")
    if json_out is not None:
        from plw.io import write_json_atomic
        write_json_atomic(json_out, rec)
