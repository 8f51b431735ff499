"""Optional exact backend: fit the paper's GLMM with R glmmTMB through `Rscript`.

`plw analyze --backend r` runs it after the built-in fit and records, per group,
`glmm_r` (glmmTMB's fixed effects, SEs, logLik, precision and critical PLW) beside the Python
fit, so the two can be compared. R with glmmTMB must be installed (`apt-get install
r-cran-glmmtmb`); nothing else in plw needs R.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from plw import P_EXPONENT
from plw.errors import PLWError

R_SCRIPT = r"""
suppressPackageStartupMessages(library(glmmTMB))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], stringsAsFactors = TRUE)
num <- function(x) if (is.finite(x)) sprintf("%.10g", x) else "null"
out <- c()
for (g in unique(as.character(d$group_))) {
  s <- droplevels(d[d$group_ == g, ])
  re <- c()
  if (nlevels(s$benchmark) > 1) re <- c(re, "(0 + poly(wp, 2, raw = TRUE) | benchmark)")
  if (nlevels(s$model) > 1) re <- c(re, "(1 | model)")
  fml <- as.formula(paste(c("y ~ poly(wp, 2, raw = TRUE)", re), collapse = " + "))
  t0 <- proc.time()[["elapsed"]]
  f <- glmmTMB(fml, data = s, family = beta_family())
  secs <- proc.time()[["elapsed"]] - t0
  b <- fixef(f)$cond
  se <- sqrt(diag(vcov(f)$cond))
  conv <- f$fit$convergence == 0 && isTRUE(f$sdr$pdHess)
  out <- c(out, sprintf(
    '"%s": {"fixef": {"intercept": %s, "wp": %s, "wp2": %s}, "se": {"intercept": %s, "wp": %s, "wp2": %s}, "logLik": %s, "phi": %s, "converged": %s, "time_s": %s}',
    g, num(b[[1]]), num(b[[2]]), num(b[[3]]), num(se[[1]]), num(se[[2]]), num(se[[3]]),
    num(as.numeric(logLik(f))), num(sigma(f)), if (conv) "true" else "false", num(secs)))
}
cat("{", paste(out, collapse = ", "), "}\n")
"""


def rscript() -> str | None:
    return shutil.which("Rscript")


def fit_glmmtmb(frame) -> dict:
    """Fit every group of `frame` (columns group_, y, wp, benchmark, model) with glmmTMB."""
    exe = rscript()
    if exe is None:
        raise PLWError("Rscript not found: install R and glmmTMB, or use --backend python",
                       field="--backend")
    with tempfile.TemporaryDirectory(prefix="plw-r-") as tmp:
        csv, script = Path(tmp) / "data.csv", Path(tmp) / "fit.R"
        frame.to_csv(csv, index=False)
        script.write_text(R_SCRIPT)
        proc = subprocess.run([exe, "--vanilla", str(script), str(csv)], capture_output=True, text=True,
                              env={**os.environ, "LC_ALL": "C"})
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise PLWError(f"glmmTMB failed: {last}", field="--backend")
    res = json.loads(proc.stdout)
    for g in res.values():
        b1, b2 = g["fixef"]["wp"], g["fixef"]["wp2"]
        v = -b1 / (2 * b2) if b2 else None
        g["vertex_wp"] = v
        g["critical_plw"] = (max(v, 0.0) ** (1 / P_EXPONENT)) if v is not None else None
        g["engine"] = "glmmTMB"
    return res


def glmm_frame(df, scores: str):
    """The per-group GLMM data exactly as the Python backend sees it."""
    import pandas as pd

    from plw.analysis.analyze import glmm_response, group_frames
    from plw.analysis.results import benchmark_rows

    parts = []
    for name, d in group_frames(benchmark_rows(df)):
        if d["plw"].nunique() < 3:
            continue
        parts.append(pd.DataFrame({"group_": name, "y": glmm_response(d, scores), "wp": d["wp"].to_numpy(),
                                   "benchmark": d["benchmark"].to_numpy(), "model": d["model"].to_numpy()}))
    return pd.concat(parts, ignore_index=True) if parts else None


def compare_with_r(results, out_dir, *, scores: str, analysis: dict) -> dict:
    """Add glmmTMB's fit per group (`glmm_r`) to the analysis and rewrite analysis.json."""
    from plw.analysis.results import load_results
    from plw.io import write_json_atomic

    df, _ = load_results(results)
    frame = glmm_frame(df, scores)
    if frame is None:
        return analysis
    res = fit_glmmtmb(frame)
    for name, g in res.items():
        if name in analysis["groups"]:
            analysis["groups"][name]["glmm_r"] = g
    from plw.analysis.report import render_html
    from plw.io import write_text_atomic

    write_json_atomic(Path(out_dir) / "analysis.json", analysis)
    write_text_atomic(Path(out_dir) / "report.html", render_html(analysis))
    return analysis
