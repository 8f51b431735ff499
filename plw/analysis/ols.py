"""The earlier version's analysis (arXiv v1, §4): OLS `score ~ w^2 + w + C(benchmark)` per dataset
group, w = w_p shifted and scaled to [-1, 1], with Holm–Bonferroni over every p-value tested.

Plain numpy/scipy (QR least squares, t tests) so it does not pull in statsmodels at import time.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def ols(y, X, names):
    """Least squares with classical standard errors and two-sided t-test p-values."""
    y, X = np.asarray(y, dtype=float), np.asarray(X, dtype=float)
    n, p = X.shape
    Q, R = np.linalg.qr(X)
    beta = np.linalg.solve(R, Q.T @ y)
    resid = y - X @ beta
    df = n - p
    sigma2 = float(resid @ resid / df) if df > 0 else float("nan")
    Rinv = np.linalg.inv(R)
    cov = sigma2 * Rinv @ Rinv.T
    se = np.sqrt(np.diag(cov))
    t = beta / se
    pv = 2 * stats.t.sf(np.abs(t), df) if df > 0 else np.full(p, np.nan)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {"coef": dict(zip(names, beta.tolist())), "se": dict(zip(names, se.tolist())),
            "t": dict(zip(names, t.tolist())), "p": dict(zip(names, pv.tolist())),
            "df_resid": int(df), "r2": 1 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan")}


def earlier_model(wp, y, benchmark):
    """score ~ w^2 + w + C(benchmark), treatment contrasts against the first benchmark (sorted)."""
    wp = np.asarray(wp, dtype=float)
    w = 2 * wp - 1
    b = np.asarray(benchmark).astype(str)
    levels = sorted(set(b))
    cols = [np.ones(wp.size), w, w**2] + [(b == lv).astype(float) for lv in levels[1:]]
    names = ["intercept", "w", "w2"] + [f"benchmark[{lv}]" for lv in levels[1:]]
    return ols(y, np.column_stack(cols), names)


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj
