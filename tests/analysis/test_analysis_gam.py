"""GAM te(w, r, k=3) + factor(b): basis, penalty, and mgcv 1.8-41's optimal PLW per ratio."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from plw.analysis.gam import CRSpline, TensorCR, fit_gam, optimal_plw, place_knots


@pytest.fixture(scope="module")
def sweep(shared):
    return pd.read_csv(shared / "reference" / "gam" / "sweep_scores_by_ratio.csv")


def test_place_knots_like_mgcv():
    assert place_knots([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 3) == pytest.approx([0, 4.5, 9])
    assert place_knots([0.042, 0.08, 1.0, 3.27, 7.83] * 3, 3) == pytest.approx([0.042, 1.0, 7.83])


def test_cr_basis_matches_patsy():
    patsy = pytest.importorskip("patsy")
    x = np.linspace(0, 1, 57) ** 2
    knots = np.array([0.0, 0.1, 0.45, 1.0])
    ours = CRSpline(knots).basis(x)
    ref = np.asarray(patsy.dmatrix("cr(x, knots=k, lower_bound=0, upper_bound=1) - 1",
                                   {"x": x, "k": knots[1:-1]}))
    assert ours == pytest.approx(ref, abs=1e-12)


def test_cr_penalty_is_integrated_squared_second_derivative():
    knots = np.array([0.0, 0.2, 0.3, 0.7, 1.0])
    sp = CRSpline(knots)
    x = np.linspace(0, 1, 20001)
    h = x[1] - x[0]
    rng = np.random.default_rng(0)
    for _ in range(3):
        beta = rng.normal(size=knots.size)
        f = sp.basis(x) @ beta
        f2 = (f[2:] - 2 * f[1:-1] + f[:-2]) / h**2
        integral = np.trapezoid(f2**2, dx=h)
        assert beta @ sp.S @ beta == pytest.approx(integral, rel=1e-4)


def test_tensor_constraint_and_penalties():
    rng = np.random.default_rng(0)
    w, r = rng.uniform(0, 1, 100), rng.uniform(0, 8, 100)
    te = TensorCR(w, r)
    B = te.basis(w, r)
    assert B.shape == (100, 8)
    assert np.abs(B.sum(axis=0)).max() < 1e-10          # sum-to-zero over the data
    for S in te.penalties:
        assert np.linalg.eigvalsh(S).min() > -1e-10     # positive semi-definite


def test_optimal_plw_matches_mgcv(shared, sweep):
    ref = json.loads((shared / "reference" / "gam" / "mgcv_optimal_plw.json").read_text())["optimal_plw"]
    fit = fit_gam(sweep["plw"], sweep["r"], sweep["score"], sweep["benchmark"])
    got = optimal_plw(fit, sorted(sweep["r"].unique()), float(np.ptp(sweep["score"])))
    assert set(got) == set(ref)
    for r, v in ref.items():
        assert got[r]["plw"] == pytest.approx(v, abs=0.02), r
        assert got[r]["plw"] == pytest.approx(v, abs=1.5e-3), r   # in fact to the grid step


def test_flat_flag():
    rng = np.random.default_rng(0)
    w = np.tile([0, 0.01, 0.1, 0.25, 0.5, 1.0], 15)
    r = np.repeat([0.1, 0.5, 1, 3, 8], 18)
    b = np.tile(np.repeat(["a", "b", "c"], 6), 5)
    # strong PLW effect at small r, none at large r
    y = 0.5 + np.exp(-r) * 0.3 * np.sin(np.pi * w) + rng.normal(0, 0.005, w.size)
    fit = fit_gam(w, r, y, b)
    res = optimal_plw(fit, [0.1, 8], float(np.ptp(y)))
    assert not res["0.1"]["flat"] and res["8"]["flat"]
    assert res["0.1"]["plw"] == pytest.approx(0.5, abs=0.1)


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed")
def test_fitted_values_match_mgcv_on_perturbed_data(sweep, tmp_path):
    script = tmp_path / "gam.R"
    script.write_text(
        "suppressPackageStartupMessages(library(mgcv))\n"
        "d <- read.csv(commandArgs(TRUE)[1]); d$b <- factor(d$benchmark)\n"
        "f <- gam(score ~ te(plw, r, k=3) + factor(b), data=d)\n"
        "writeLines(sprintf('%.12g', c(f$gcv.ubre, fitted(f))))\n")
    rng = np.random.default_rng(7)
    s = sweep[sweep["benchmark"].isin(["bench01", "bench04", "bench07", "bench10"])].copy()
    s["score"] = s["score"] + rng.normal(0, 0.05, len(s))
    s.to_csv(tmp_path / "s.csv", index=False)
    out = subprocess.run(["Rscript", "--vanilla", str(script), str(tmp_path / "s.csv")],
                         capture_output=True, text=True, check=True).stdout.split()
    gcv_r, fitted_r = float(out[0]), np.array(out[1:], dtype=float)
    fit = fit_gam(s["plw"], s["r"], s["score"], s["benchmark"])
    # the same model: our GCV optimum is at least as good as mgcv's (its Newton stops a little early)
    assert fit.gcv <= gcv_r * (1 + 1e-7)
    assert fit.gcv == pytest.approx(gcv_r, rel=1e-5)
    levels = fit.levels
    Xp = np.column_stack([np.ones(len(s))] + [(s["benchmark"].to_numpy() == lv).astype(float) for lv in levels[1:]])
    ours = Xp @ fit.coef[:fit.n_param] + fit.smooth(s["plw"].to_numpy(), s["r"].to_numpy())
    assert ours == pytest.approx(fitted_r, abs=5e-4)
