"""Reading results tables: store formats, dtypes, aliases and one-line errors."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from plw.analysis.analyze import fit_glmm
from plw.analysis.results import benchmark_rows, load_results
from plw.errors import PLWError


def _table():
    return pd.DataFrame({"run_id": ["a", "a", "b", "b", "c"], "model": ["m"] * 5, "dataset": ["D"] * 5,
                         "ratio": [0.1] * 5, "plw": [0.0, 0.0, 1.0, 1.0, 0.1], "benchmark": ["x", "y", "x", "y", "train"],
                         "score": [0.3, 0.5, 0.4, 0.6, 1.2], "group": ["mc", "gen", "mc", "gen", "diag"],
                         "regularizer": ["none"] * 5}).astype({"model": "string", "benchmark": "string"})


def test_store_directory_parquet_and_sqlite(tmp_path):
    df = _table()
    (tmp_path / "p").mkdir()
    df.to_parquet(tmp_path / "p" / "results.parquet")
    (tmp_path / "s").mkdir()
    with sqlite3.connect(tmp_path / "s" / "results.sqlite") as con:
        df.astype(object).to_sql("results", con, index=False)
    for d in ("p", "s"):
        got, src = load_results(tmp_path / d)
        assert src.endswith(("results.parquet", "results.sqlite"))
        assert got["wp"].tolist() == pytest.approx([0, 0, 1, 1, 0.1 ** 0.30103], abs=1e-6)
        assert len(benchmark_rows(got)) == 4          # the diag row is not a benchmark


def test_dataframe_and_alias_r(tmp_path):
    df = _table().rename(columns={"ratio": "r"}).drop(columns=["model"])
    got, src = load_results(df)
    assert src == "<dataframe>" and "ratio" in got and set(got["model"]) == {"model"}


def test_errors_name_file_line_field(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("benchmark,model,score\nx,m,0.5\n")
    with pytest.raises(PLWError) as e:
        load_results(p)
    assert e.value.one_line() == f"{p}:1: plw: missing required column (need benchmark, model, plw, score)"
    p.write_text("benchmark,model,plw,score\nx,m,0.5,0.1\nx,,0.5,0.2\n")
    with pytest.raises(PLWError, match=r":3: model: empty value"):
        load_results(p)
    with pytest.raises(PLWError, match="not a results store"):
        load_results(tmp_path)
    with pytest.raises(PLWError, match="expected a results store"):
        load_results(tmp_path / "t.txt" if (tmp_path / "t.txt").write_text("x") else None)


def test_raw_scores_outside_unit_interval_skip_the_glmm():
    rng = np.random.default_rng(0)
    d = pd.DataFrame({"plw": np.tile([0, 0.01, 0.1, 1.0], 6), "benchmark": np.repeat(list("abc"), 8),
                      "model": "m", "score": rng.uniform(10, 60, 24)})
    d["wp"] = d["plw"] ** 0.30103
    assert "use --scores minmax" in fit_glmm(d, "raw")["skipped"]
    assert "fixef" in fit_glmm(d, "minmax")


def test_command_module_imports_stay_light():
    import subprocess
    import sys
    code = ("import sys, plw.analysis, plw.analysis.commands; "
            "print(any(m in sys.modules for m in ('pandas', 'scipy', 'matplotlib', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
