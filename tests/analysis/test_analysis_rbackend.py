"""The optional glmmTMB backend agrees with the built-in fit (skips without R/glmmTMB).

One `plw analyze --backend r` run (one R process) covers the reference sweep and two subsets
with few benchmarks, whose covariance fits are singular: both engines must reach the same optimum."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from plw.cli import main


def _has_glmmtmb() -> bool:
    if shutil.which("Rscript") is None:
        return False
    r = subprocess.run(["Rscript", "-e", "library(glmmTMB)"], capture_output=True)
    return r.returncode == 0


pytestmark = pytest.mark.skipif(not _has_glmmtmb(), reason="R with glmmTMB is not installed")


def test_backend_r_matches_python(shared, tmp_path):
    d = pd.read_csv(shared / "reference" / "glmm" / "sweep_scores.csv")
    rng = np.random.default_rng(5)
    parts = [d.assign(dataset="reference")]
    for nb in (3, 5):
        s = d[d.benchmark.isin(rng.choice(d.benchmark.unique(), nb, replace=False))].copy()
        s["score"] = np.clip(s.score + rng.normal(0, 0.03, len(s)), 0.01, 0.99)
        parts.append(s.assign(dataset=f"subset{nb}"))
    csv = tmp_path / "scores.csv"
    pd.concat(parts).to_csv(csv, index=False)
    out = tmp_path / "out"
    assert main(["analyze", str(csv), "-o", str(out), "--scores", "raw", "--backend", "r"]) == 0
    groups = json.loads((out / "analysis.json").read_text())["groups"]
    ref = json.loads((shared / "reference" / "glmm" / "glmmtmb_fit.json").read_text())
    for k in ("intercept", "wp", "wp2"):
        assert groups["reference"]["glmm_r"]["fixef"][k] == pytest.approx(ref["fixef"][k], rel=1e-5)
    assert "R glmmTMB" in (out / "report.html").read_text()
    for name, g in groups.items():
        py, r = g["glmm"], g["glmm_r"]
        if r["logLik"] is not None:   # glmmTMB reports NA for some singular fits
            assert py["logLik"] == pytest.approx(r["logLik"], abs=1e-4), name
        for k in ("intercept", "wp", "wp2"):
            assert py["fixef"][k] == pytest.approx(r["fixef"][k], rel=1e-3, abs=1e-4), (name, k)
            assert py["se"][k] == pytest.approx(r["se"][k], rel=1e-3), (name, k)
    assert groups["subset3"]["glmm"]["singular"]
