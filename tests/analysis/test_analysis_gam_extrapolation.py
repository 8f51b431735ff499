"""The GAM's cubic regression spline basis extrapolates linearly (as patsy's does), and the GAM
fits a sweep without PLW 0."""

from __future__ import annotations

import numpy as np
import pytest

from plw.analysis.analyze import fit_gams
from plw.analysis.gam import CRSpline
from plw.analysis.results import benchmark_rows, load_results

def test_cr_basis_extrapolates_linearly_without_recursion():
    sp = CRSpline([0.0, 0.5, 1.0])
    x = np.array([-0.2, -0.1, 0.0, 1.0, 1.1, 1.2])
    B = sp.basis(x)
    assert np.all(np.isfinite(B))
    assert B[1] - B[0] == pytest.approx(B[2] - B[1], abs=1e-12)   # linear below the first knot
    assert B[4] - B[3] == pytest.approx(B[5] - B[4], abs=1e-12)   # and above the last
    assert B[0] == pytest.approx([1.5, -0.6, 0.1], abs=1e-12)
    assert B.sum(axis=1) == pytest.approx(np.ones(len(x)))        # constants stay exact


def test_cr_extrapolation_matches_patsy():
    patsy = pytest.importorskip("patsy")
    knots = np.array([0.0, 0.2, 0.5, 1.0])
    x = np.array([-0.3, -0.01, 0.3, 1.05, 1.7])
    ref = np.asarray(patsy.dmatrix("cr(x, knots=k, lower_bound=0, upper_bound=1) - 1",
                                   {"x": x, "k": knots[1:-1]}))
    assert CRSpline(knots).basis(x) == pytest.approx(ref, abs=1e-12)


def test_gam_on_reference_sweep_without_plw_zero(shared):
    df, _ = load_results(shared / "reference" / "gam" / "sweep_scores_by_ratio.csv")
    d = df[df["plw"] > 0]
    gams = fit_gams(benchmark_rows(d), "raw")
    opt = gams["All"]["optimal_plw"]
    assert set(opt) == {"0.042", "0.08", "1", "3.27", "7.83"}
    assert all(0 <= v <= 1 for v in opt.values())
