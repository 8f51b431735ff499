"""GAM `score ~ te(w, r, k=3) + factor(benchmark)` as mgcv builds and fits it (paper Appendix D).

What mgcv does, reproduced here:
- each margin is a cubic regression spline ("cr"): a natural cubic spline parameterised by its
  values at k knots placed at evenly spaced quantiles of the *unique* covariate values, with the
  exact penalty S = D^T B^-1 D of the integrated squared second derivative (Wood 2017, §5.3.1);
- `te` scales each marginal penalty by its largest eigenvalue, forms the row-wise tensor product
  basis with penalties S_w (x) I and I (x) S_r, and absorbs the sum-to-zero constraint through a
  QR null-space basis. Its np=TRUE re-parameterisation (coefficients = values at evenly spaced
  points) is *not* applied to "cr" margins, which are already value-parameterised: checked
  against mgcv 1.8-41, where only np_reparam=False reproduces its optima on perturbed data
  (the option is kept for other margins' behaviour and for that comparison);
- the Gaussian identity model is a penalised least-squares fit whose two smoothing parameters
  minimise GCV, V = n ||y - A y||^2 / (n - tr A)^2 (mgcv's default for `gam()`).
The optimal PLW per ratio maximises the smooth over a fine PLW grid; the benchmark factor only
shifts the level, so it does not move the optimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize


def place_knots(x, k: int) -> np.ndarray:
    """mgcv's place.knots: k knots at evenly spaced positions through the sorted unique values."""
    u = np.unique(np.asarray(x, dtype=float))
    if k > u.size:
        raise ValueError(f"need at least {k} distinct values, got {u.size}")
    if k == u.size:
        return u
    pos = np.linspace(0, u.size - 1, k)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, u.size - 1)
    frac = pos - lo
    return u[lo] * (1 - frac) + u[hi] * frac


class CRSpline:
    """Cubic regression spline basis (values at knots) with its exact wiggliness penalty."""

    def __init__(self, knots):
        self.knots = np.asarray(knots, dtype=float)
        xk, k = self.knots, self.knots.size
        h = np.diff(xk)
        D = np.zeros((k - 2, k))
        B = np.zeros((k - 2, k - 2))
        for i in range(k - 2):
            D[i, i], D[i, i + 1], D[i, i + 2] = 1 / h[i], -1 / h[i] - 1 / h[i + 1], 1 / h[i + 1]
            B[i, i] = (h[i] + h[i + 1]) / 3
            if i < k - 3:
                B[i, i + 1] = B[i + 1, i] = h[i + 1] / 6
        Fm = np.linalg.solve(B, D)
        self.F = np.vstack([np.zeros(k), Fm, np.zeros(k)])   # second derivatives at knots = F beta
        self.S = D.T @ Fm
        self.h = h

    def basis(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        xk, k, h = self.knots, self.knots.size, self.h
        j = np.clip(np.searchsorted(xk, x, side="right") - 1, 0, k - 2)
        X = np.zeros((x.size, k))
        rows = np.arange(x.size)
        inside = (x >= xk[0]) & (x <= xk[-1])
        hj = h[j]
        am, ap = (xk[j + 1] - x) / hj, (x - xk[j]) / hj
        cm = ((xk[j + 1] - x) ** 3 / hj - hj * (xk[j + 1] - x)) / 6
        cp = ((x - xk[j]) ** 3 / hj - hj * (x - xk[j])) / 6
        X[rows, j] += am
        X[rows, j + 1] += ap
        X += cm[:, None] * self.F[j] + cp[:, None] * self.F[j + 1]
        if not inside.all():
            # mgcv (crspl in mgcv's C code) and patsy's cr: beyond an end knot the spline continues
            # linearly, f(x) = f(x_end) + (x - x_end) f'(x_end). The natural spline has zero second
            # derivative there, so the slope is that of the end interval's cubic at its end knot.
            out = ~inside
            below = x[out] < xk[0]
            X[out] = np.where(below[:, None], self._end_value(0), self._end_value(k - 1))
            X[out] += (x[out] - np.where(below, xk[0], xk[-1]))[:, None] * np.where(
                below[:, None], self._end_slope(0), self._end_slope(k - 1))
        return X

    def _end_value(self, i: int) -> np.ndarray:
        v = np.zeros(self.knots.size)
        v[i] = 1.0
        return v

    def _end_slope(self, i: int) -> np.ndarray:
        """d/dx of the basis at end knot i (0 or k-1), from the adjacent interval's cubic."""
        k, h = self.knots.size, self.h
        d = np.zeros(k)
        if i == 0:
            hj = h[0]
            d[0], d[1] = -1 / hj, 1 / hj
            return d - hj / 3 * self.F[0] - hj / 6 * self.F[1]
        hj = h[-1]
        d[k - 2], d[k - 1] = -1 / hj, 1 / hj
        return d + hj / 6 * self.F[k - 2] + hj / 3 * self.F[k - 1]
        return X


class TensorCR:
    """te(w, r, k=(kw, kr)) with cr margins, built as mgcv builds it (scaled marginal penalties,
    sum-to-zero constraint absorbed). Smoothing parameters are on plw's penalty scale, which
    differs from mgcv's by a constant factor per penalty; fitted values do not depend on it."""

    def __init__(self, w, r, k=(3, 3), np_reparam: bool = False):
        self.margins, self.XP, self.S = [], [], []
        for x, kk in zip((w, r), k):
            sp = CRSpline(place_knots(x, kk))
            XP = np.eye(kk)
            if np_reparam:
                grid = np.linspace(np.min(x), np.max(x), kk)
                XP = np.linalg.inv(sp.basis(grid))
            S = XP.T @ sp.S @ XP
            S = S / np.linalg.eigvalsh(S).max()
            self.margins.append(sp)
            self.XP.append(XP)
            self.S.append(0.5 * (S + S.T))
        raw = self.raw_basis(w, r)
        C = raw.sum(axis=0)[:, None]
        Q, _ = np.linalg.qr(C, mode="complete")
        self.Zc = Q[:, 1:]
        kw, kr = k
        self.penalties = [self.Zc.T @ np.kron(self.S[0], np.eye(kr)) @ self.Zc,
                          self.Zc.T @ np.kron(np.eye(kw), self.S[1]) @ self.Zc]

    def raw_basis(self, w, r):
        Xw = self.margins[0].basis(w) @ self.XP[0]
        Xr = self.margins[1].basis(r) @ self.XP[1]
        return (Xw[:, :, None] * Xr[:, None, :]).reshape(len(Xw), -1)   # first margin slowest

    def basis(self, w, r):
        return self.raw_basis(np.atleast_1d(w), np.atleast_1d(r)) @ self.Zc


@dataclass
class GAMFit:
    coef: np.ndarray
    sp: np.ndarray
    gcv: float
    edf: float
    te: TensorCR
    n_param: int
    levels: list
    r2: float

    def smooth(self, w, r):
        """The te(w, r) component (centred), i.e. the prediction up to the benchmark level."""
        B = self.te.basis(w, r)
        return B @ self.coef[self.n_param:]


def fit_gam(w, r, y, benchmark=None, k=(3, 3), np_reparam=False) -> GAMFit:
    """Penalised least squares with two smoothing parameters chosen by GCV."""
    w, r, y = (np.asarray(a, dtype=float) for a in (w, r, y))
    n = y.size
    te = TensorCR(w, r, k, np_reparam=np_reparam)
    cols, levels = [np.ones(n)], []
    if benchmark is not None:
        levels = sorted(set(np.asarray(benchmark).astype(str)))
        bvals = np.asarray(benchmark).astype(str)
        cols += [(bvals == lv).astype(float) for lv in levels[1:]]   # treatment contrasts
    Xp = np.column_stack(cols)
    X = np.hstack([Xp, te.basis(w, r)])
    npar = Xp.shape[1]
    p = X.shape[1]
    XtX, Xty = X.T @ X, X.T @ y
    Sfull = []
    for S in te.penalties:
        Sf = np.zeros((p, p))
        Sf[npar:, npar:] = S
        Sfull.append(Sf)

    def solve(rho):
        lam = np.exp(rho)
        M = XtX + lam[0] * Sfull[0] + lam[1] * Sfull[1]
        Minv = np.linalg.pinv(M, hermitian=True)
        beta = Minv @ Xty
        tr = float(np.trace(Minv @ XtX))
        rss = float(np.sum((y - X @ beta) ** 2))
        return beta, tr, rss

    def gcv(rho):
        _, tr, rss = solve(rho)
        return n * rss / (n - tr) ** 2

    # coarse grid then local refinement: GCV can have flat regions and local minima
    grid = np.linspace(-12, 12, 13)
    best = min(((gcv(np.array([a, b])), (a, b)) for a in grid for b in grid))
    res = optimize.minimize(gcv, np.array(best[1]), method="Nelder-Mead",
                            options={"xatol": 1e-6, "fatol": 1e-12, "maxiter": 2000})
    rho = res.x if res.fun <= best[0] else np.array(best[1])
    beta, tr, rss = solve(rho)
    r2 = 1 - rss / float(np.sum((y - y.mean()) ** 2))
    return GAMFit(coef=beta, sp=np.exp(rho), gcv=float(gcv(rho)), edf=tr, te=te, n_param=npar,
                  levels=levels, r2=r2)


def optimal_plw(fit: GAMFit, ratios, score_range: float, grid_size: int = 1001,
                flat_fraction: float = 0.05) -> dict:
    """Per ratio: the PLW maximising the fitted smooth over [0, 1], flagged `flat` when the
    predicted max - min over PLW is under `flat_fraction` of the score range (paper Table 5's *)."""
    wg = np.linspace(0.0, 1.0, grid_size)
    out = {}
    for r in ratios:
        f = fit.smooth(wg, np.full_like(wg, float(r)))
        i = int(np.argmax(f))
        spread = float(f.max() - f.min())
        out[_ratio_key(r)] = {"plw": round(float(wg[i]), 9), "spread": spread,
                              "flat": bool(spread < flat_fraction * score_range)}
    return out


def _ratio_key(r) -> str:
    return f"{float(r):g}"
