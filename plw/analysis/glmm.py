"""Beta GLMM with the Laplace approximation, in numpy/scipy (the paper's glmmTMB model, §5.2).

    logit E[y] = X beta + Z b,   y ~ Beta(mu phi, (1 - mu) phi),   b ~ N(0, blockdiag(Sigma_t))

Maximum likelihood as glmmTMB/TMB does it: for every outer parameter vector
theta = (beta, log phi, log-Cholesky of each random-effect *precision*) an inner Newton finds the
conditional mode b_hat, and the marginal log-likelihood is approximated by
    log L = l(y | b_hat) + log N(b_hat; 0, Sigma) + q/2 log 2 pi - 1/2 log det H,
H the exact Hessian of the joint negative log-density in b. The outer gradient is analytic
(envelope theorem + the implicit derivative of b_hat through log det H), so the fit of the
paper's model on a few hundred rows takes a fraction of a second. Standard errors come from the
Hessian of -log L over *all* outer parameters jointly (as TMB's sdreport does), obtained by
central differences of the analytic gradient. Parameterising the precision instead of the
covariance does not change the ML fit or the fixed-effect standard errors (both are invariant
to smooth reparameterisations of the variance parameters).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, special, stats


@dataclass
class RandomTerm:
    """(0 + cols | group): a correlated random vector per level of `group`, with design `cols`."""

    name: str
    group: np.ndarray          # integer codes 0..G-1, length n
    cols: np.ndarray           # n x d design of the random vector
    levels: list = field(default_factory=list)

    @property
    def d(self) -> int:
        return self.cols.shape[1]

    @property
    def G(self) -> int:
        return int(self.group.max()) + 1


@dataclass
class GLMMFit:
    fixef: dict
    se: dict
    cov_fixef: np.ndarray
    logLik: float
    phi: float
    re_cov: dict               # term name -> covariance matrix (list of lists)
    converged: bool
    message: str
    n: int
    n_params: int
    iterations: int
    time_s: float
    max_grad: float
    hessian_pd: bool
    theta: np.ndarray
    names: list
    singular: bool = False

    @property
    def aic(self) -> float:
        return -2 * self.logLik + 2 * self.n_params


def _loglik(eta, y, phi):
    mu = np.clip(special.expit(eta), 1e-15, 1 - 1e-15)
    a, c = mu * phi, (1 - mu) * phi
    return (special.gammaln(phi) - special.gammaln(a) - special.gammaln(c)
            + (a - 1) * np.log(y) + (c - 1) * np.log1p(-y))


def _loglik_derivs(eta, y, phi, order=3):
    """Per-observation beta log-density and its derivatives in eta (logit link) and log phi."""
    mu = special.expit(eta)
    mu = np.clip(mu, 1e-15, 1 - 1e-15)
    a, c = mu * phi, (1 - mu) * phi
    ly, l1y = np.log(y), np.log1p(-y)
    ll = special.gammaln(phi) - special.gammaln(a) - special.gammaln(c) + (a - 1) * ly + (c - 1) * l1y
    g = mu * (1 - mu)
    D = (ly - l1y) - (special.digamma(a) - special.digamma(c))
    t1a, t1c = special.zeta(2, a), special.zeta(2, c)          # trigamma (polygamma is slower)
    T1 = t1a + t1c
    d1 = phi * g * D
    g1 = g * (1 - 2 * mu)
    d2 = phi * g1 * D - phi**2 * g**2 * T1
    out = {"ll": ll, "d1": d1, "d2": d2, "fisher": phi**2 * g**2 * T1}
    if order >= 3:
        t2a, t2c = -2 * special.zeta(3, a), -2 * special.zeta(3, c)   # tetragamma
        T2 = t2a - t2c
        g2 = g1 * (1 - 2 * mu) - 2 * g**2
        out["d3"] = phi * g2 * D - 3 * phi**2 * g * g1 * T1 - phi**3 * g**3 * T2
        # derivatives in log phi (chain rule: d/dlogphi = phi d/dphi)
        E = mu * t1a - (1 - mu) * t1c
        Gm = mu * t2a + (1 - mu) * t2c
        dll_dphi = (special.digamma(phi) - mu * special.digamma(a) - (1 - mu) * special.digamma(c)
                    + mu * ly + (1 - mu) * l1y)
        out["ll_lp"] = phi * dll_dphi
        out["d1_lp"] = phi * (g * D - phi * g * E)
        out["d2_lp"] = phi * (g1 * D - phi * g1 * E - 2 * phi * g**2 * T1 - phi**2 * g**2 * Gm)
    return out


class BetaGLMM:
    """Beta GLMM (logit link) with correlated random-effect terms, fitted by Laplace ML."""

    def __init__(self, y, X, terms: list[RandomTerm], xnames: list[str]):
        self.y = np.asarray(y, dtype=float)
        if np.any(~np.isfinite(self.y)) or np.any(self.y <= 0) or np.any(self.y >= 1):
            raise ValueError("beta responses must lie strictly inside (0, 1)")
        self.X = np.asarray(X, dtype=float)
        self.terms = terms
        self.xnames = xnames
        self.n, self.p = self.X.shape
        # dense Z (n x q): small problems (q ~ 30), dense BLAS beats sparse bookkeeping here
        self.offsets, q = [], 0
        for t in terms:
            self.offsets.append(q)
            q += t.G * t.d
        self.q = q
        self.Z = np.zeros((self.n, q))
        rows = np.arange(self.n)
        for t, off in zip(terms, self.offsets):
            for j in range(t.d):
                self.Z[rows, off + t.group * t.d + j] = t.cols[:, j]
        self.ntheta = [t.d * (t.d + 1) // 2 for t in terms]
        self.k = self.p + 1 + sum(self.ntheta)
        self._b = np.zeros(q)

    # ----- parameter plumbing -------------------------------------------------------------
    def _precisions(self, theta):
        """Per term: precision Lambda = L L^T (L lower, log diagonal) and dLambda/dtheta_j."""
        out, pos = [], self.p + 1
        for t, m in zip(self.terms, self.ntheta):
            d = t.d
            L = np.zeros((d, d))
            idx = np.tril_indices(d)
            vals = theta[pos:pos + m]
            L[idx] = vals
            diag = np.arange(d)
            L[diag, diag] = np.exp(L[diag, diag])
            dLams = []
            for k, (i, j) in enumerate(zip(*idx)):
                dL = np.zeros((d, d))
                dL[i, j] = L[i, j] if i == j else 1.0
                dLams.append(dL @ L.T + L @ dL.T)
            out.append((L @ L.T, L, dLams))
            pos += m
        return out

    def _P(self, precs):
        P = np.zeros((self.q, self.q))
        for t, off, (Lam, _, _) in zip(self.terms, self.offsets, precs):
            for g in range(t.G):
                s = off + g * t.d
                P[s:s + t.d, s:s + t.d] = Lam
        return P

    # ----- inner problem --------------------------------------------------------------------
    def _inner(self, beta, phi, P, b0):
        """Newton for the conditional mode b_hat of the joint log-density."""
        Xb = self.X @ beta
        b = b0.copy()
        if self.q == 0:   # no random effects: nothing to integrate
            return b

        def joint(bv):
            return -_loglik(Xb + self.Z @ bv, self.y, phi).sum() + 0.5 * bv @ P @ bv

        f = joint(b)
        for _ in range(100):
            der = _loglik_derivs(Xb + self.Z @ b, self.y, phi, order=2)
            grad = -self.Z.T @ der["d1"] + P @ b
            w = -der["d2"]
            H = self.Z.T @ (w[:, None] * self.Z) + P
            try:
                step = -np.linalg.solve(H, grad) if np.all(np.linalg.eigvalsh(H) > 0) else None
            except np.linalg.LinAlgError:
                step = None
            if step is None:   # not convex here: fall back to Fisher scoring
                Hf = self.Z.T @ (der["fisher"][:, None] * self.Z) + P
                step = -np.linalg.solve(Hf, grad)
            t = 1.0
            while True:
                fn = joint(b + t * step)
                if np.isfinite(fn) and fn <= f + 1e-12 * abs(f):
                    break
                t *= 0.5
                if t < 1e-10:
                    fn, t = f, 0.0
                    break
            b = b + t * step
            conv = np.max(np.abs(t * step)) < 1e-11 or abs(f - fn) < 1e-14 * max(1.0, abs(f))
            f = fn
            if conv or t == 0.0:
                break
        return b

    # ----- outer objective -----------------------------------------------------------------
    def objective(self, theta, grad=True):
        """-log L (Laplace) and its gradient with respect to theta."""
        theta = np.asarray(theta, dtype=float)
        beta, lphi = theta[:self.p], theta[self.p]
        if not np.all(np.isfinite(theta)) or lphi > 30:
            return (np.inf, np.zeros_like(theta)) if grad else np.inf
        phi = math.exp(lphi)
        precs = self._precisions(theta)
        P = self._P(precs)
        b = self._inner(beta, phi, P, self._b)
        self._b = b
        eta = self.X @ beta + self.Z @ b
        der = _loglik_derivs(eta, self.y, phi, order=3 if grad else 2)
        w = -der["d2"]
        H = self.Z.T @ (w[:, None] * self.Z) + P
        try:
            cH = np.linalg.cholesky(H)
        except np.linalg.LinAlgError:
            return (np.inf, np.zeros_like(theta)) if grad else np.inf
        logdetH = 2 * np.log(np.diag(cH)).sum()
        logdetP = sum(t.G * 2 * np.log(np.diag(L)).sum() for t, (_, L, _) in zip(self.terms, precs))
        nll = -der["ll"].sum() + 0.5 * b @ P @ b - 0.5 * logdetP + 0.5 * logdetH
        if not grad:
            return nll
        Hinv = np.linalg.inv(H)
        ZH = self.Z @ Hinv
        h = np.einsum("ij,ij->i", ZH, self.Z)           # diag(Z H^-1 Z^T)
        w3 = -der["d3"]                                  # dW/deta
        g = np.zeros_like(theta)
        # fixed effects
        for j in range(self.p):
            xj = self.X[:, j]
            db = -Hinv @ (self.Z.T @ (w * xj))
            deta = xj + self.Z @ db
            g[j] = -(der["d1"] * xj).sum() + 0.5 * (h * w3 * deta).sum()
        # log phi
        db = Hinv @ (self.Z.T @ der["d1_lp"])
        dw = -der["d2_lp"] + w3 * (self.Z @ db)
        g[self.p] = -der["ll_lp"].sum() + 0.5 * (h * dw).sum()
        # precision parameters
        pos = self.p + 1
        for t, off, (Lam, L, dLams) in zip(self.terms, self.offsets, precs):
            sl = slice(off, off + t.G * t.d)
            B = b[sl].reshape(t.G, t.d)
            Hblk = Hinv[sl, sl]
            Ssum = sum(Hblk[i * t.d:(i + 1) * t.d, i * t.d:(i + 1) * t.d] for i in range(t.G))
            Laminv = np.linalg.inv(Lam)
            for dLam in dLams:
                dPb = np.zeros(self.q)
                dPb[sl] = (B @ dLam.T).ravel()
                db = -Hinv @ dPb
                g[pos] = (0.5 * np.trace(dLam @ B.T @ B) - 0.5 * t.G * np.trace(Laminv @ dLam)
                          + 0.5 * np.trace(Ssum @ dLam) + 0.5 * (h * w3 * (self.Z @ db)).sum())
                pos += 1
        return nll, g

    # ----- fit ----------------------------------------------------------------------------
    def start(self):
        """Start: least squares on logit(y) for beta, a moment estimate of phi, unit precisions."""
        ly = special.logit(self.y)
        beta = np.linalg.lstsq(self.X, ly, rcond=None)[0]
        mu = special.expit(self.X @ beta)
        v = np.mean((self.y - mu) ** 2 / (mu * (1 - mu)))
        phi = max(1.0 / max(v, 1e-6) - 1.0, 1.0)
        theta = [beta, [math.log(phi)]] + [np.zeros(m) for m in self.ntheta]
        return np.concatenate(theta)

    def fit(self, start=None, gtol=1e-6, maxiter=200) -> GLMMFit:
        t0 = time.perf_counter()
        x0 = self.start() if start is None else np.asarray(start, dtype=float)
        self._b = np.zeros(self.q)
        history = []

        def stall(intermediate_result):
            # A singular random-effect covariance sends its parameters off to infinity while the
            # likelihood no longer moves: stop instead of chasing the boundary for ever.
            # (1e-3 in log-likelihood over 20 iterations is far below what any test can resolve)
            history.append(intermediate_result.fun)
            if len(history) > 20 and history[-21] - history[-1] < 1e-3:
                raise StopIteration

        res = optimize.minimize(self.objective, x0, jac=True, method="BFGS", callback=stall,
                                options={"gtol": gtol, "maxiter": maxiter})
        theta = res.x
        # polish with quasi-Newton steps (BFGS's inverse Hessian) to a tight gradient
        Hinv = getattr(res, "hess_inv", None)
        for _ in range(3 if isinstance(Hinv, np.ndarray) else 0):
            f, gr = self.objective(theta)
            step = Hinv @ gr
            if not np.all(np.isfinite(step)) or np.max(np.abs(step)) > 1.0:
                break
            fn, _ = self.objective(theta - step)
            if not fn <= f + 1e-9:
                break
            theta = theta - step
            if np.max(np.abs(step)) < 1e-10:
                break
        H = self.hessian(theta)
        keep, _ = self._kept(theta)
        if len(keep) < len(theta):
            # singular fit: finish the other parameters by Newton with the flat ones held fixed
            for _ in range(10):
                f, gr = self.objective(theta)
                Hk = H[np.ix_(keep, keep)]
                try:
                    step = np.linalg.solve(Hk, gr[keep])
                except np.linalg.LinAlgError:
                    break
                t = 1.0
                while t > 1e-4:
                    trial = theta.copy()
                    trial[keep] -= t * step
                    if self.objective(trial, grad=False) <= f:
                        break
                    t *= 0.5
                else:
                    break
                theta = trial
                if np.max(np.abs(t * step)) < 1e-9:
                    break
                H = self.hessian(theta)
        nll, gr = self.objective(theta)
        return self._summarise(theta, nll, gr, H, res, time.perf_counter() - t0)

    def _kept(self, theta):
        """Indices of parameters that are not in a singular random-effect term, and whether any is."""
        keep, pos, singular = list(range(self.p + 1)), self.p + 1, False
        for m, (Lam, _, _) in zip(self.ntheta, self._precisions(theta)):
            Sig = np.linalg.inv(Lam)
            sd = np.sqrt(np.diag(Sig))
            corr_min = np.linalg.eigvalsh(Sig / np.outer(sd, sd)).min()
            if sd.min() < 1e-4 or corr_min < 1e-4:
                singular = True
            else:
                keep += list(range(pos, pos + m))
            pos += m
        return np.array(keep), singular

    def hessian(self, theta, h=1e-5):
        k = len(theta)
        H = np.zeros((k, k))
        b_save = self._b.copy()
        for i in range(k):
            e = np.zeros(k)
            e[i] = h
            self._b = b_save.copy()
            gp = self.objective(theta + e)[1]
            self._b = b_save.copy()
            gm = self.objective(theta - e)[1]
            H[i] = (gp - gm) / (2 * h)
        self._b = b_save
        return 0.5 * (H + H.T)

    def _summarise(self, theta, nll, gr, H, res, secs) -> GLMMFit:
        pd = bool(np.linalg.eigvalsh(H).min() > 0)
        # A singular random-effect covariance (a variance -> 0 or a correlation -> +-1) leaves flat
        # directions in its parameters, which then drift off to infinity. Hold such a term's
        # parameters fixed (as for a singular lme4/glmmTMB fit) and take the SEs from the rest.
        keep, singular = self._kept(theta)
        Hk = H[np.ix_(keep, keep)]
        pd_k = bool(np.linalg.eigvalsh(Hk).min() > 0)
        cov = np.linalg.inv(Hk) if pd_k else np.full_like(Hk, np.nan)
        covb = cov[:self.p, :self.p]
        se = np.sqrt(np.clip(np.diag(covb), 0, None))
        re_cov = {}
        for t, (Lam, _, _) in zip(self.terms, self._precisions(theta)):
            re_cov[t.name] = np.linalg.inv(Lam).tolist()
        max_grad = float(np.max(np.abs(gr[keep])))
        converged = bool(np.isfinite(nll) and pd_k and max_grad < 1e-3)
        if not pd_k:
            msg = "Hessian not positive definite"
        elif max_grad >= 1e-3:
            msg = f"gradient not small (max |g| = {max_grad:.2g})"
        elif singular:
            msg = ("singular fit: a random-effect variance is ~0 or a correlation is ~+-1 "
                   "(the random-effect structure is richer than the data support)")
        else:
            msg = "ok"
        return GLMMFit(
            fixef=dict(zip(self.xnames, theta[:self.p].tolist())),
            se=dict(zip(self.xnames, se.tolist())), cov_fixef=covb, logLik=float(-nll),
            phi=float(math.exp(theta[self.p])), re_cov=re_cov, converged=converged, message=msg,
            n=self.n, n_params=self.k, iterations=int(res.nit), time_s=secs, max_grad=max_grad,
            hessian_pd=pd, theta=theta, names=list(self.xnames), singular=singular)


def _codes(values):
    levels, codes = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return codes, list(levels)


def paper_model(wp, y, benchmark, model=None, with_wp=True) -> BetaGLMM:
    """score ~ poly(wp, 2, raw) + (0 + poly(wp, 2, raw) | benchmark) + (1 | model).

    A grouping factor with a single level carries no information about its variance and is left
    out (glmmTMB would drive that variance to zero)."""
    wp = np.asarray(wp, dtype=float)
    n = wp.size
    W = np.column_stack([wp, wp**2])
    X = np.column_stack([np.ones(n), W]) if with_wp else np.ones((n, 1))
    names = ["intercept", "wp", "wp2"] if with_wp else ["intercept"]
    terms = []
    bc, bl = _codes(benchmark)
    if len(bl) > 1:
        terms.append(RandomTerm("benchmark", bc, W, bl))
    if model is not None:
        mc, ml = _codes(model)
        if len(ml) > 1:
            terms.append(RandomTerm("model", mc, np.ones((n, 1)), ml))
    return BetaGLMM(y, X, terms, names)


def critical_plw(fit: GLMMFit, p_exponent: float, level: float = 0.95) -> dict:
    """Vertex of the quadratic in w_p, back-transformed to PLW, with a delta-method CI.

    The CI is built on the w_p scale (where the estimate is closer to normal) and mapped back."""
    b1, b2 = fit.fixef["wp"], fit.fixef["wp2"]
    out = {"vertex_wp": None, "critical_plw": None, "ci": [None, None], "shape": None}
    if b2 == 0 or not np.isfinite(b2):
        return out
    v = -b1 / (2 * b2)
    out["shape"] = "maximum" if b2 < 0 else "minimum"
    out["vertex_wp"] = float(v)
    inside = 0 <= v <= 1
    out["inside_range"] = bool(inside)
    out["critical_plw"] = float(max(v, 0.0) ** (1 / p_exponent)) if v >= 0 else 0.0
    cov = fit.cov_fixef
    if np.all(np.isfinite(cov)):
        grad = np.array([0.0, -1 / (2 * b2), b1 / (2 * b2**2)])
        se_v = float(np.sqrt(grad @ cov @ grad))
        z = stats.norm.ppf(0.5 + level / 2)
        lo, hi = v - z * se_v, v + z * se_v
        out["se_vertex_wp"] = se_v
        out["ci"] = [float(max(lo, 0.0) ** (1 / p_exponent)), float(min(max(hi, 0.0), 1.0) ** (1 / p_exponent))]
        out["ci_level"] = level
    return out


def wald_test(fit: GLMMFit, names=("wp", "wp2")) -> float:
    idx = [fit.names.index(n) for n in names]
    b = np.array([fit.fixef[n] for n in names])
    V = fit.cov_fixef[np.ix_(idx, idx)]
    try:
        stat = float(b @ np.linalg.solve(V, b))
    except np.linalg.LinAlgError:
        return float("nan")
    return float(stats.chi2.sf(stat, len(names)))


def lr_test(full: GLMMFit, null: GLMMFit, df: int = 2) -> float:
    stat = max(2 * (full.logLik - null.logLik), 0.0)
    return float(stats.chi2.sf(stat, df))
