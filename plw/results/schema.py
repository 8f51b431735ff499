"""The results-table contract: columns and their types, row validation, the store's file names.

Read by `plw.analysis`, written by `plw.experiment` through `plw.results.store`.
"""

from __future__ import annotations

import math
from typing import Any

# The results-table contract (read by plw.analysis): column → dtype.
COLUMNS: dict[str, str] = {
    "run_id": "str", "config_hash": "str", "model": "str", "dataset": "str", "ratio": "float",
    "plw": "float", "wp": "float", "regularizer": "str", "seed": "int", "benchmark": "str",
    "metric": "str", "score": "float", "group": "str", "loss_rsd": "float", "weight_l2": "float",
    "weight_minkowski": "float", "memorization_bleu": "float", "generation_length": "float",
    "val_completion_nll": "float", "wall_time_s": "float", "train_tokens": "int",
}
DIAGNOSTICS = ("loss_rsd", "weight_l2", "weight_minkowski", "memorization_bleu", "generation_length",
               "val_completion_nll")
GROUPS = ("mc", "gen", "diag")
RESULT_FILE = "result.json"
SPEC_FILE = "spec.yaml"
TABLE_PARQUET = "results.parquet"
TABLE_SQLITE = "results.sqlite"
GRID_FILE = "grid.json"


def normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    """Check one row against the contract and coerce its types (missing diagnostics become NaN)."""
    missing = [c for c in ("run_id", "benchmark", "metric", "score", "group") if c not in row]
    if missing:
        raise ValueError(f"result row lacks {', '.join(missing)}")
    extra = set(row) - set(COLUMNS)
    if extra:
        raise ValueError(f"result row has unknown columns {sorted(extra)}")
    if row["group"] not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {row['group']!r}")
    out: dict[str, Any] = {}
    for col, kind in COLUMNS.items():
        v = row.get(col)
        if kind == "str":
            out[col] = "" if v is None else str(v)
        elif kind == "int":
            out[col] = -1 if v is None else int(v)
        else:
            out[col] = math.nan if v is None else float(v)
    return out


def rows_to_frame(rows: list[dict[str, Any]]):
    import pandas as pd

    df = pd.DataFrame([normalise_row(r) for r in rows], columns=list(COLUMNS))
    for col, kind in COLUMNS.items():
        df[col] = df[col].astype({"str": "string", "int": "int64", "float": "float64"}[kind])
    return df
