"""Reading results: a stale store is read from its result files, each metric is its own
benchmark, and an unwritable output directory fails before the fit."""

from __future__ import annotations

import os

import pandas as pd

from plw.analysis.analyze import analyze_table
from plw.analysis.results import benchmark_rows, load_results
from plw.cli import main

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


def test_each_metric_is_its_own_benchmark():
    df = pd.DataFrame({"benchmark": ["arc", "arc", "piqa", "train", "train"],
                       "metric": ["acc", "acc_norm", "acc", "loss_rsd", "weight_l2"],
                       "group": ["mc", "mc", "mc", "diag", "diag"],
                       "model": "m", "plw": 0.1, "score": [0.4, 0.5, 0.6, 0.1, 1.0]})
    out, _ = load_results(df)
    assert list(out["benchmark"]) == ["arc/acc", "arc/acc_norm", "piqa", "train", "train"]
    assert set(benchmark_rows(out)["benchmark"]) == {"arc/acc", "arc/acc_norm", "piqa"}


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
