"""plw.analysis: turn a PLW sweep's results table into the paper's statistics, figures and report.

Heavy imports (pandas, scipy, matplotlib) happen inside the functions, so importing this package
is cheap.
"""

from __future__ import annotations


def analyze_results(results, out_dir, *, scores: str = "minmax", progress: bool = False) -> dict:
    """Analyse a results store directory, a CSV/Parquet path or a DataFrame into `out_dir`
    (report.html, analysis.json, figures/); returns the analysis dict."""
    from plw.analysis.report import analyze_results as _run

    return _run(results, out_dir, scores=scores, progress=progress)


__all__ = ["analyze_results"]
