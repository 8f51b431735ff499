"""The analysis of a results table, as a plain dict (no files): per dataset group the aggregates,
the beta GLMM with its critical PLW, the earlier OLS analysis and diagnostics; across groups the
GAM optimal PLW per R_g and the regularizer comparison. Whatever cannot be fitted is recorded as
`{"skipped": reason}` instead of raising, so tiny sweeps still get a report.
"""

from __future__ import annotations

import math

import numpy as np

from plw import P_EXPONENT
from plw.analysis import gam as gam_mod
from plw.analysis import glmm as glmm_mod
from plw.analysis.ols import earlier_model, holm
from plw.analysis.results import DIAGNOSTICS, benchmark_rows
from plw.analysis.transforms import minmax_by, relative_aggregate, simple_aggregate, squeeze

SCORES = ("raw", "minmax")
ALPHA = 0.05


def group_frames(df):
    """(name, frame) per dataset group: the dataset, or `all` when there is no dataset column."""
    if "dataset" in df.columns and df["dataset"].nunique() > 0:
        return [(str(name), d) for name, d in df.groupby("dataset", sort=True)]
    return [("all", df)]


def glmm_response(d, scores: str):
    """The GLMM response: raw scores, or per-benchmark min-max scores squeezed into (0, 1)."""
    if scores == "raw":
        return d["score"].to_numpy(dtype=float)
    return squeeze(minmax_by(d).to_numpy(dtype=float), len(d))


def fit_glmm(d, scores: str = "minmax") -> dict:
    """The paper's beta GLMM on one group, with LRT/Wald p-values and the critical PLW."""
    levels = d["plw"].nunique()
    if levels < 3:
        return {"skipped": f"the GLMM needs at least 3 PLW levels (this group has {levels})"}
    y = glmm_response(d, scores)
    if np.any(y <= 0) or np.any(y >= 1):
        return {"skipped": "raw scores must lie strictly inside (0, 1) for a beta model; "
                           "use --scores minmax"}
    wp, bench = d["wp"].to_numpy(), d["benchmark"].to_numpy()
    model = d["model"].to_numpy()
    full_m = glmm_mod.paper_model(wp, y, bench, model)
    if len(d) <= full_m.k + 1:
        return {"skipped": f"too few observations ({len(d)}) for {full_m.k} parameters"}
    try:
        full = full_m.fit()
        null = glmm_mod.paper_model(wp, y, bench, model, with_wp=False).fit()
    except (np.linalg.LinAlgError, ValueError, FloatingPointError) as err:
        return {"skipped": f"the GLMM fit failed: {err}"}
    crit = glmm_mod.critical_plw(full, P_EXPONENT)
    z = {k: full.fixef[k] / full.se[k] if full.se[k] else float("nan") for k in full.fixef}
    from scipy import stats
    re_terms = [t.name for t in full_m.terms]
    return {
        "formula": "score ~ poly(wp, 2, raw) + (0 + poly(wp, 2, raw) | benchmark) + (1 | model)",
        "random_terms": re_terms,
        "scores": scores,
        "n": full.n,
        "fixef": full.fixef,
        "se": full.se,
        "z_p_value": {k: float(2 * stats.norm.sf(abs(v))) for k, v in z.items()},
        "logLik": full.logLik,
        "aic": full.aic,
        "phi": full.phi,
        "re_cov": full.re_cov,
        "p_value": glmm_mod.lr_test(full, null, df=2),
        "p_value_wald": glmm_mod.wald_test(full),
        "null_logLik": null.logLik,
        "vertex_wp": crit["vertex_wp"],
        "critical_plw": crit["critical_plw"],
        "critical_plw_ci": crit["ci"],
        "shape": crit["shape"],
        "vertex_inside": crit.get("inside_range"),
        "converged": bool(full.converged and null.converged),
        "singular": bool(full.singular),
        "convergence": {"full": full.message, "null": null.message, "max_grad": full.max_grad,
                        "hessian_pd": full.hessian_pd, "iterations": full.iterations},
        "time_s": full.time_s,
    }


def fit_ols(d) -> dict:
    levels = d["plw"].nunique()
    if levels < 3:
        return {"skipped": f"the quadratic OLS needs at least 3 PLW levels (this group has {levels})"}
    if len(d) <= 3 + d["benchmark"].nunique():
        return {"skipped": "too few observations for the OLS model"}
    return earlier_model(d["wp"].to_numpy(), d["score"].to_numpy(dtype=float), d["benchmark"].to_numpy())


def _run_key(df):
    return ["run_id"] if "run_id" in df.columns else [c for c in ("model", "plw", "seed", "regularizer")
                                                     if c in df.columns]


def diagnostics(d) -> dict:
    """Per diagnostic and PLW: the values over runs (one per run), for the box plots."""
    out = {}
    cols = [c for c in DIAGNOSTICS if c in d.columns and d[c].notna().any()]
    if not cols:
        return out
    runs = d.drop_duplicates(_run_key(d))
    for c in cols:
        per = {}
        for plw, g in runs.groupby("plw"):
            vals = g[c].dropna().to_numpy(dtype=float)
            if vals.size:
                per[f"{plw:g}"] = vals.tolist()
        out[c] = per
    return out


def unregularized(d):
    """The runs without an alternative regularizer (regularizer "none"), as the paper's fig. 2 shows;
    the regularizer comparison has its own table and figure. Unchanged without such a column/rows."""
    if "regularizer" not in d.columns:
        return d
    keep = d["regularizer"].isin(["none", ""])
    return d[keep] if keep.any() else d


def regularizers(d) -> dict | None:
    """Table 4: relative aggregate per (regularizer, PLW), benchmarks min-max scaled over all runs."""
    if "regularizer" not in d.columns or set(d["regularizer"]) <= {"none", ""}:
        return None
    b = d[d["score"].notna()]
    if "group" in b.columns:
        b = b[b["group"] != "diag"]
    b = b.copy()
    b["rel"] = minmax_by(b)
    keys = _run_key(b)
    per_run = b.groupby(list(dict.fromkeys(keys + ["regularizer", "plw"])), dropna=False)["rel"].mean()
    tab = per_run.groupby(["regularizer", "plw"]).agg(["mean", "count"]).reset_index()
    return {"rows": [{"regularizer": r.regularizer, "plw": float(r.plw), "relative": float(r["mean"]),
                      "runs": int(r["count"])} for _, r in tab.iterrows()]}


def fit_gams(df, scores: str = "minmax") -> dict:
    """GAM optimal PLW per R_g for All / MC / Gen benchmark groups (Appendix D, Table 5)."""
    if "ratio" not in df.columns:
        return {"skipped": "no ratio column: the GAM needs each run's dataset R_g"}
    d = df[df["ratio"].notna()]
    nr, npl = d["ratio"].nunique(), d["plw"].nunique()
    if nr < 3 or npl < 3:
        return {"skipped": f"te(w, r, k=3) needs at least 3 distinct R_g values and 3 PLW levels "
                           f"(have {nr} and {npl})"}
    out = {}
    sets = {"All": d}
    if "group" in d.columns:
        sets["MC"] = d[d["group"] == "mc"]
        sets["Gen"] = d[d["group"] == "gen"]
    for name, s in sets.items():
        if s["ratio"].nunique() < 3 or s["plw"].nunique() < 3 or len(s) < 15:
            if name == "All" or len(s):
                out[name] = {"skipped": "not enough distinct R_g / PLW values in this benchmark group"}
            continue
        y = s["score"].to_numpy(dtype=float) if scores == "raw" else minmax_by(s).to_numpy(dtype=float)
        fit = gam_mod.fit_gam(s["plw"].to_numpy(), s["ratio"].to_numpy(), y, s["benchmark"].to_numpy())
        score_range = float(np.max(y) - np.min(y))
        ratios = sorted(s["ratio"].unique())
        lo, hi = min(ratios), max(ratios)
        table_r = [r for r in np.arange(0.5, hi + 1e-9, 0.5) if r >= lo]
        out[name] = {
            "formula": "score ~ te(w, r, k=3) + factor(benchmark)",
            "scores": scores, "n": int(len(s)), "sp": fit.sp.tolist(), "edf": fit.edf,
            "gcv": fit.gcv, "r2": fit.r2, "score_range": score_range,
            "optimal": gam_mod.optimal_plw(fit, ratios, score_range),
            "table": gam_mod.optimal_plw(fit, table_r, score_range),
            "_fit": fit,   # removed before serialisation; used by the contour figure
        }
        out[name]["optimal_plw"] = {k: v["plw"] for k, v in out[name]["optimal"].items()}
    return out


def conclusion(name: str, g: dict) -> str:
    """A plain-language conclusion for one dataset group, with a caveat when the group pools
    several R_g values (a table with a ratio column but no dataset column: the group stays `all`,
    as analysis.json's contract says, but its GLMM averages over data of different R_g)."""
    text = _conclusion(name, g)
    rs = g.get("ratios") or []
    if len(rs) > 1:
        text += (f" Caveat: this group pools {len(rs)} different R_g values ({', '.join(f'{r:g}' for r in rs)}), "
                 "so its regression averages PLW's effect over data where it may differ; add a "
                 "`dataset` column to fit each separately (the GAM models R_g explicitly).")
    return text


def _conclusion(name: str, g: dict) -> str:
    r = g.get("ratio")
    kind = ""
    if r is not None:
        kind = f" (R_g = {r:.3g}: {'short' if r < 1 else 'long'}-completion data)"
    m = g.get("glmm", {})
    if "skipped" in m:
        return f"{name}{kind}: no regression fitted — {m['skipped']}."
    p = m["p_value"]
    ptxt = "p < 0.001" if p < 0.001 else f"p = {p:.3g}"
    conv = "" if m["converged"] else " (warning: the fit did not converge cleanly; treat with care)"
    if m.get("singular"):
        conv += (" (note: singular fit — the random-effect covariance is degenerate, usually because "
                 "there are too few benchmarks to estimate it; the fixed effects are still usable)")
    if p >= ALPHA:
        return (f"{name}{kind}: no significant effect of PLW on performance ({ptxt}, likelihood-ratio "
                f"test); PLW can be chosen freely for this data.{conv}")
    lam, ci = m.get("critical_plw"), m.get("critical_plw_ci", [None, None])
    if m.get("shape") == "maximum" and m.get("vertex_inside"):
        citxt = f" (95% CI {ci[0]:.3g}–{ci[1]:.3g})" if ci and ci[0] is not None else ""
        return (f"{name}{kind}: PLW significantly affects performance ({ptxt}); the fitted curve peaks "
                f"at PLW ≈ {lam:.3g}{citxt}, so a small non-zero PLW beats both prompt masking "
                f"(PLW = 0) and full-sequence training (PLW = 1).{conv}")
    direction = "rises" if m["fixef"]["wp"] + 2 * m["fixef"]["wp2"] > 0 else "falls"
    return (f"{name}{kind}: PLW significantly affects performance ({ptxt}); performance {direction} "
            f"with PLW over [0, 1] without an interior peak.{conv}")


def analyze_table(df, scores: str = "minmax", step=None) -> dict:
    """Run every analysis that the table supports. `df` comes from `results.load_results`;
    `step(description)` is called as each piece of work starts (for progress bars)."""
    step = step or (lambda _desc: None)
    if scores not in SCORES:
        raise ValueError(f"scores must be one of {SCORES}")
    bench = benchmark_rows(df)
    out = {"scores": scores, "p_exponent": P_EXPONENT, "n_rows": int(len(df)),
           "n_benchmark_rows": int(len(bench)), "groups": {}}
    for name, d in group_frames(bench):
        step(f"fitting group {name}")
        g = {"n": int(len(d)), "benchmarks": sorted(d["benchmark"].unique()),
             "models": sorted(d["model"].unique()), "plw_levels": sorted(float(x) for x in d["plw"].unique())}
        if "ratio" in d.columns and d["ratio"].notna().any():
            rs = sorted(d["ratio"].dropna().unique())
            g["ratio"] = float(rs[0]) if len(rs) == 1 else None
            g["ratios"] = [float(x) for x in rs]
        g["aggregates"] = _aggregates(d)
        g["glmm"] = fit_glmm(d, scores)
        g["ols"] = fit_ols(d)
        full = df[df["dataset"] == name] if "dataset" in df.columns and name != "all" else df
        g["diagnostics"] = diagnostics(unregularized(full))   # fig. 2: PLW runs only
        reg = regularizers(full)
        if reg:
            g["regularizers"] = reg
        out["groups"][name] = g
    _holm_over_groups(out)
    step("fitting the GAM")
    out["gam"] = fit_gams(bench, scores)
    for name, g in out["groups"].items():
        g["gam"] = _group_gam(out["gam"], g)
        g["conclusion"] = conclusion(name, g)
    return out


def _aggregates(d) -> list[dict]:
    simple = simple_aggregate(d)
    rel = relative_aggregate(d)
    m = simple.merge(rel, on=[c for c in ("model", "plw") if c in simple.columns])
    return [{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()}
            for row in m.to_dict("records")]


def _holm_over_groups(out):
    """The earlier version corrects every OLS p-value across all groups with Holm–Bonferroni."""
    keys = []
    for name, g in out["groups"].items():
        if "p" in g["ols"]:
            keys += [(name, k) for k in g["ols"]["p"] if k != "intercept"]
    if not keys:
        return
    pv = [out["groups"][n]["ols"]["p"][k] for n, k in keys]
    adj = holm(pv)
    for (n, k), a in zip(keys, adj):
        out["groups"][n]["ols"].setdefault("p_holm", {})[k] = float(a)
    for g in out["groups"].values():
        if "p_holm" in g["ols"]:
            g["ols"]["significant_holm"] = {k: v < ALPHA for k, v in g["ols"]["p_holm"].items()}


def _group_gam(gam: dict, g: dict) -> dict:
    """The group's slice of the All-benchmarks GAM: optimal PLW at the group's own R_g values."""
    allg = gam.get("All", {}) if "skipped" not in gam else {}
    if "optimal" not in allg:
        reason = gam.get("skipped") or allg.get("skipped") or "GAM not fitted"
        return {"skipped": reason}
    ratios = g.get("ratios") or []
    fit = allg["_fit"]
    res = gam_mod.optimal_plw(fit, ratios, allg["score_range"])
    return {"optimal_plw": {k: v["plw"] for k, v in res.items()}, "optimal": res}


def jsonable(obj):
    """Strip private fit objects and turn NaN/inf into None so the JSON is standard."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
