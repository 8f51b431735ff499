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
