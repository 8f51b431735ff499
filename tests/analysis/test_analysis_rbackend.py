"""The optional glmmTMB backend agrees with the built-in fit (skips without R/glmmTMB)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from plw.cli import main


def _has_glmmtmb() -> bool:
    if shutil.which("Rscript") is None:
        return False
    r = subprocess.run(["Rscript", "-e", "library(glmmTMB)"], capture_output=True)
    return r.returncode == 0


pytestmark = pytest.mark.skipif(not _has_glmmtmb(), reason="R with glmmTMB is not installed")


def test_backend_r_matches_python(shared, tmp_path):
    csv = shared / "reference" / "glmm" / "sweep_scores.csv"
    assert main(["analyze", str(csv), "-o", str(tmp_path), "--scores", "raw", "--backend", "r"]) == 0
    g = json.loads((tmp_path / "analysis.json").read_text())["groups"]["all"]
    ref = json.loads((shared / "reference" / "glmm" / "glmmtmb_fit.json").read_text())
    for k in ("intercept", "wp", "wp2"):
        assert g["glmm_r"]["fixef"][k] == pytest.approx(ref["fixef"][k], rel=1e-5)
        assert g["glmm"]["fixef"][k] == pytest.approx(g["glmm_r"]["fixef"][k], rel=1e-4)
        assert g["glmm"]["se"][k] == pytest.approx(g["glmm_r"]["se"][k], rel=1e-3)
    assert g["glmm"]["logLik"] == pytest.approx(g["glmm_r"]["logLik"], abs=1e-4)


def test_singular_fits_match_glmmtmb(shared):
    """Subsets with few benchmarks give singular covariances; both engines must land on the same
    optimum (same logLik, fixed effects and SEs)."""
    import numpy as np
    import pandas as pd

    from plw.analysis.glmm import paper_model
    from plw.analysis.rbackend import fit_glmmtmb
    from plw.analysis.transforms import to_wp

    d = pd.read_csv(shared / "reference" / "glmm" / "sweep_scores.csv")
    rng = np.random.default_rng(5)
    frames = []
    for i, nb in enumerate([3, 5]):
        s = d[d.benchmark.isin(rng.choice(d.benchmark.unique(), nb, replace=False))]
        y = np.clip(s.score + rng.normal(0, 0.03, len(s)), 0.01, 0.99)
        frames.append(pd.DataFrame({"group_": f"g{i}", "y": y, "wp": to_wp(s.plw), "benchmark": s.benchmark,
                                    "model": s.model}))
    frame = pd.concat(frames)
    ref = fit_glmmtmb(frame)
    for g, s in frame.groupby("group_"):
        fit = paper_model(s.wp, s.y, s.benchmark, s.model).fit()
        assert fit.logLik >= ref[g]["logLik"] - 1e-4 if ref[g]["logLik"] is not None else True
        for k in ("intercept", "wp", "wp2"):
            assert fit.fixef[k] == pytest.approx(ref[g]["fixef"][k], rel=1e-3, abs=1e-4)
            assert fit.se[k] == pytest.approx(ref[g]["se"][k], rel=1e-3)
