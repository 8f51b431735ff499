"""Analysis groups: fig. 2 diagnostics use only unregularized runs; pooled R_g keeps group `all`
with a caveat."""

from __future__ import annotations

import numpy as np
import pandas as pd

from plw.analysis.analyze import analyze_table
from plw.analysis.results import load_results
from plw.analysis.transforms import to_wp

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
