"""Regression tests for review findings: cr extrapolation, stale stores, metrics, clamped critical
PLW, output-dir errors, recommend wording, fig. 2 runs and pooled-R_g caveat."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from plw.analysis.analyze import analyze_table, fit_gams
from plw.analysis.gam import CRSpline
from plw.analysis.glmm import critical_plw
from plw.analysis.recommend import from_paper
from plw.analysis.results import benchmark_rows, load_results
from plw.analysis.transforms import to_wp
from plw.cli import main


# 1. cr basis beyond the end knots ------------------------------------------------------------
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


def test_recommend_outside_the_swept_range_is_low_confidence(shared, tmp_path, capsys):
    js = tmp_path / "rec.json"
    gam_csv = shared / "reference" / "gam" / "sweep_scores_by_ratio.csv"
    assert main(["recommend", "--ratio", "20", "--from", str(gam_csv), "--scores", "raw",
                 "--json", str(js)]) == 0
    rec = json.loads(js.read_text())
    assert rec["source"] == "your sweep" and rec["confidence"] == "low"
    assert "outside the range your sweep covered" in rec["explanation"]
    assert 0 <= rec["plw"] <= 1


# 2. a stale store table ----------------------------------------------------------------------
def test_stale_store_table_reads_the_result_files(tmp_path):
    from plw.results.store import ResultsStore

    store = ResultsStore(tmp_path / "store")

    def result(i, plw):
        return {"rows": [{"run_id": f"r{i}", "model": "m", "plw": plw, "benchmark": b, "metric": "acc",
                          "score": 0.5, "group": "mc"} for b in ("arc", "piqa")]}

    store.write_result("r0", result(0, 0.0))
    store.write_result("r1", result(1, 0.5))
    store.rebuild()
    table = tmp_path / "store" / "results.parquet"
    before = table.read_bytes()
    os.utime(table, (1, 1))                    # the table predates the next run's result file
    store.write_result("r2", result(2, 1.0))   # killed before the table was rebuilt
    df, _ = load_results(tmp_path / "store")
    assert sorted(df["plw"].unique()) == [0.0, 0.5, 1.0]
    assert len(df) == 6
    assert table.read_bytes() == before        # read only: nothing rewritten


# 3. several metrics per benchmark -------------------------------------------------------------
def test_each_metric_is_its_own_benchmark():
    df = pd.DataFrame({"benchmark": ["arc", "arc", "piqa", "train", "train"],
                       "metric": ["acc", "acc_norm", "acc", "loss_rsd", "weight_l2"],
                       "group": ["mc", "mc", "mc", "diag", "diag"],
                       "model": "m", "plw": 0.1, "score": [0.4, 0.5, 0.6, 0.1, 1.0]})
    out, _ = load_results(df)
    assert list(out["benchmark"]) == ["arc/acc", "arc/acc_norm", "piqa", "train", "train"]
    assert set(benchmark_rows(out)["benchmark"]) == {"arc/acc", "arc/acc_norm", "piqa"}


# 4. critical PLW beyond [0, 1] ----------------------------------------------------------------
@pytest.mark.parametrize("b1,b2,inside", [(2.4, -1.0, False), (0.5, 1.0, False), (1.0, -1.0, True)])
def test_critical_plw_and_ci_are_clamped(b1, b2, inside):
    fit = SimpleNamespace(fixef={"intercept": 0.0, "wp": b1, "wp2": b2},
                          cov_fixef=np.diag([0.01, 0.001, 0.0001]))
    c = critical_plw(fit, 0.30103)
    lo, hi = c["ci"]
    assert 0 <= c["critical_plw"] <= 1
    assert 0 <= lo <= hi <= 1
    assert c["inside_range"] is inside
    if b1 == 2.4:
        assert c["critical_plw"] == 1.0 and lo == hi == 1.0


# 5. output directory and --scores errors ------------------------------------------------------
def test_unwritable_output_dir_fails_before_the_fit(tmp_path, capsys, monkeypatch):
    import plw.analysis.analyze as an

    def boom(*a, **k):
        raise AssertionError("the fit ran before the output directory was checked")

    monkeypatch.setattr(an, "analyze_table", boom)
    csv = tmp_path / "t.csv"
    csv.write_text("benchmark,model,plw,score\na,m,0.1,0.5\n")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "x"
    assert main(["analyze", str(csv), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {out}: cannot create the output directory") and "\n" not in err


def test_recommend_rejects_unknown_scores(capsys):
    assert main(["recommend", "--ratio", "0.5", "--scores", "bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--scores" in err and "bogus" in err and "\n" not in err


# 6. recommend wording -------------------------------------------------------------------------
def test_recommend_ratio_one_is_not_called_short(capsys):
    assert main(["recommend", "--ratio", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "R_g = 1 (long-completion data)" in out
    assert "short-completion" not in out
    assert "recommended PLW: 0.155" in out and "R_g ≤ 1.0" in out


def test_recommend_between_table5_rows_two_and_two_and_a_half():
    rec = from_paper(2.2)
    assert rec["kind"] == "long" and rec["plw"] == 0.239 and not rec["flat"]
    assert "between Table 5's rows at R_g 2 (optimum PLW 0.239) and 2.5" in rec["explanation"]
    assert "no significant effect" not in rec["explanation"]
    assert from_paper(0.5)["kind"] == "short" and "short-completion" in from_paper(0.5)["explanation"]
    assert from_paper(3.0)["flat"]


# 7 and 8. fig. 2 runs and pooled R_g ---------------------------------------------------------
def _table(with_dataset: bool):
    rng = np.random.default_rng(1)
    rows = []
    for r in (0.08, 1.0, 3.27):
        for reg, plws in (("none", (0.0, 0.1, 0.5, 1.0)), ("weight_decay", (0.0,))):
            for plw in plws:
                for b in ("arc", "piqa", "tqa"):
                    rows.append({"dataset": f"d{r:g}", "ratio": r, "model": "m", "plw": plw,
                                 "regularizer": reg, "benchmark": b, "group": "mc",
                                 "score": 0.5 + 0.1 * to_wp(plw) + rng.normal(0, 0.01),
                                 "weight_l2": 99.0 if reg != "none" else 1.0 + plw})
    df = pd.DataFrame(rows)
    return df if with_dataset else df.drop(columns="dataset")


def test_diagnostics_use_only_unregularized_runs():
    df, _ = load_results(_table(True))
    a = analyze_table(df, "raw")
    for g in a["groups"].values():
        assert g["diagnostics"]["weight_l2"]["0"] == [1.0]
        assert g["regularizers"]["rows"]       # the comparison still has its own table


def test_pooled_ratios_keep_group_all_with_a_caveat():
    df, _ = load_results(_table(False))
    a = analyze_table(df, "raw")
    assert set(a["groups"]) == {"all"}
    assert "Caveat: this group pools 3 different R_g values (0.08, 1, 3.27)" in a["groups"]["all"]["conclusion"]
    df, _ = load_results(_table(True))
    assert all("Caveat" not in g["conclusion"] for g in analyze_table(df, "raw")["groups"].values())
