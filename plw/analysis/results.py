"""Read and validate a results table: a sweep's results store, a CSV/Parquet/SQLite file or a DataFrame.

Required columns: benchmark, model, plw, score. Optional: dataset, ratio (alias r), group,
regularizer, seed, metric and the diagnostics columns of the results-table contract. A benchmark
reported under several metrics becomes one benchmark per metric, named `benchmark/metric`. Bad input raises a
PLWError naming file, line (CSV: the 1-based line in the file) and field.
"""

from __future__ import annotations

import os
from pathlib import Path

from plw.errors import PLWError
from plw.analysis.transforms import to_wp
from plw.results.schema import DIAGNOSTICS

REQUIRED = ("benchmark", "model", "plw", "score")


def read_table(results):
    """Return (DataFrame, source name) for a store directory, a table file or a DataFrame."""
    import pandas as pd

    if isinstance(results, pd.DataFrame):
        return results.copy(), "<dataframe>"
    path = Path(os.fspath(results))
    src = str(path)
    if path.is_dir():
        if (path / "runs").is_dir():
            # a sweep's store: its own reader rebuilds the table in memory from the per-run result
            # files when results.parquet is stale or missing (a sweep killed between writing a run's
            # result.json and rebuilding the table), without writing anything
            from plw.results.store import read_table as store_table

            return store_table(path), str(path)
        if (path / "results.parquet").is_file():
            return pd.read_parquet(path / "results.parquet"), str(path / "results.parquet")
        if (path / "results.sqlite").is_file():
            return _read_sqlite(path / "results.sqlite"), str(path / "results.sqlite")
        if (path / "results.csv").is_file():
            return _read_csv(path / "results.csv"), str(path / "results.csv")
        raise PLWError("not a results store (no results.parquet or results.sqlite)", file=src)
    if not path.exists():
        raise PLWError("no such file or directory", file=src)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _read_csv(path), src
        if suffix == ".parquet":
            return pd.read_parquet(path), src
        if suffix in (".sqlite", ".db"):
            return _read_sqlite(path), src
    except PLWError:
        raise
    except Exception as err:  # unreadable file: say so in one line
        raise PLWError(f"cannot read table: {type(err).__name__}: {err}", file=src) from None
    raise PLWError("expected a results store directory or a .csv, .parquet or .sqlite file", file=src)


def _read_csv(path):
    import pandas as pd

    try:
        return pd.read_csv(path)
    except pd.errors.ParserError as err:
        raise PLWError(f"malformed CSV: {err}", file=str(path)) from None
    except pd.errors.EmptyDataError:
        raise PLWError("empty file", file=str(path)) from None


def _read_sqlite(path):
    import sqlite3

    import pandas as pd

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return pd.read_sql_query("SELECT * FROM results", con)
    except Exception as err:
        raise PLWError(f"cannot read table `results`: {err}", file=str(path)) from None
    finally:
        con.close()


def load_results(results):
    """Read and validate; returns (DataFrame with a `wp` column and normalised optional columns, source)."""
    import numpy as np
    import pandas as pd

    df, src = read_table(results)
    is_csv = src.endswith(".csv")
    if "r" in df.columns and "ratio" not in df.columns:
        df = df.rename(columns={"r": "ratio"})
    if "model" not in df.columns and "benchmark" in df.columns and "plw" in df.columns:
        df["model"] = "model"   # a single-model sweep may leave the column out
    for col in REQUIRED:
        if col not in df.columns:
            raise PLWError(f"missing required column (need {', '.join(REQUIRED)})", file=src,
                           line=1 if is_csv else None, field=col)
    if len(df) == 0:
        raise PLWError("the table has no rows", file=src)

    def line_of(i):  # CSV header is line 1, so data row i (0-based) is line i + 2
        return int(i) + 2 if is_csv else None

    for col in ("plw", "score") + tuple(c for c in ("ratio",) if c in df.columns):
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = vals.isna() & df[col].notna()    # a missing score or ratio is allowed, garbage is not
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise PLWError(f"not a number: {df[col].iloc[i]!r}", file=src, line=line_of(i), field=col)
        df[col] = vals.astype(float)
    bad = (df["plw"] < 0) | (df["plw"] > 1) | df["plw"].isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise PLWError(f"PLW must lie in [0, 1], got {df['plw'].iloc[i]}", file=src, line=line_of(i),
                       field="plw")
    if "ratio" in df.columns:
        bad = df["ratio"].notna() & (df["ratio"] < 0)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise PLWError("ratio R_g must be >= 0", file=src, line=line_of(i), field="ratio")
    for col in ("benchmark", "model"):
        miss = df[col].isna()
        if miss.any():
            i = int(np.flatnonzero(miss.to_numpy())[0])
            raise PLWError("empty value", file=src, line=line_of(i), field=col)
        df[col] = df[col].astype(str)
    if "group" in df.columns:
        df["group"] = df["group"].fillna("").astype(str).str.lower()
    df = split_metrics(df)
    if "regularizer" in df.columns:
        df["regularizer"] = df["regularizer"].fillna("none").astype(str)
    if "dataset" in df.columns:
        df["dataset"] = df["dataset"].fillna("").astype(str)
    df["wp"] = to_wp(df["plw"].to_numpy())
    return df.reset_index(drop=True), src


def split_metrics(df):
    """A benchmark scored by several metrics (e.g. `acc` and `acc_norm`) is several series, not one:
    when a `metric` column exists, each benchmark row with more than one distinct metric is renamed
    `benchmark/metric`, so every metric gets its own random effect, min-max scaling and panel.
    Benchmarks with a single metric keep their name; diagnostics rows are left alone."""
    if "metric" not in df.columns:
        return df
    metric = df["metric"].astype("object").where(df["metric"].notna(), "").astype(str)
    rows = metric != ""
    if "group" in df.columns:
        rows &= df["group"] != "diag"
    if not rows.any():
        return df
    n = metric[rows].groupby(df.loc[rows, "benchmark"]).nunique()
    multi = rows & df["benchmark"].isin(n[n > 1].index)
    if multi.any():
        df = df.copy()
        df.loc[multi, "benchmark"] = df.loc[multi, "benchmark"] + "/" + metric[multi]
    return df


def benchmark_rows(df):
    """Rows that are benchmark scores (not diagnostics) with a finite score, at regularizer "none"."""
    keep = df["score"].notna()
    if "group" in df.columns:
        keep &= df["group"] != "diag"
    if "regularizer" in df.columns:
        keep &= df["regularizer"].isin(["none", ""])
    return df[keep]
