"""The w_p transform, the beta squeeze and the paper's score aggregates (§5.1–5.2)."""

from __future__ import annotations

import numpy as np

from plw import P_EXPONENT


def to_wp(plw):
    """w_p = PLW ** p with p = log 0.5 / log 0.1, so that PLW 0.1 maps to 0.5 and [0, 1] to [0, 1]."""
    return np.power(np.asarray(plw, dtype=float), P_EXPONENT)


def from_wp(wp):
    """Inverse of `to_wp`: PLW = w_p ** (1 / p)."""
    return np.power(np.asarray(wp, dtype=float), 1.0 / P_EXPONENT)


def squeeze(y, n: int | None = None):
    """Smithson & Verkuilen's squeeze (y(n-1) + 0.5) / n, mapping [0, 1] into (0, 1) for a beta model.

    `n` defaults to the number of observations, as in the reference glmmTMB fits.
    """
    y = np.asarray(y, dtype=float)
    n = y.size if n is None else n
    return (y * (n - 1) + 0.5) / n


def minmax(scores):
    """Min-max scale to [0, 1]; a constant series maps to 0.5 (no information about its order)."""
    s = np.asarray(scores, dtype=float)
    lo, hi = np.nanmin(s), np.nanmax(s)
    if not np.isfinite(hi - lo) or hi - lo <= 0:
        return np.full_like(s, 0.5)
    return (s - lo) / (hi - lo)


def minmax_by(df, by="benchmark", col="score"):
    """Min-max `col` within each level of `by` (the paper scales each benchmark across models)."""
    return df.groupby(by, sort=False)[col].transform(lambda s: minmax(s.to_numpy()))


def simple_aggregate(df, keys=("model", "plw")):
    """Simple aggregate: unweighted mean of benchmark scores per run (keys)."""
    keys = [k for k in keys if k in df.columns]
    return df.groupby(keys, sort=True, dropna=False)["score"].mean().rename("simple").reset_index()


def relative_aggregate(df, keys=("model", "plw")):
    """Relative aggregate: each benchmark min-max scaled within the frame (a dataset group, across
    models), then averaged per run. Callers pass one dataset group at a time."""
    keys = [k for k in keys if k in df.columns]
    d = df.copy()
    d["rel"] = minmax_by(d)
    return d.groupby(keys, sort=True, dropna=False)["rel"].mean().rename("relative").reset_index()
