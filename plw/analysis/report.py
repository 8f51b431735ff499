"""`analyze_results`: results table -> analysis.json, figures and a self-contained HTML report."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from plw.errors import PLWError
from plw.io import write_json_atomic, write_text_atomic
from plw.ui import progress_bar


class AnalyzeConfig(BaseModel):
    """The options of one analysis, saved as `analyze.yaml` beside its outputs."""

    model_config = ConfigDict(extra="forbid")
    source: str
    scores: Literal["raw", "minmax"] = "minmax"


def analyze_results(results, out_dir, *, scores: str = "minmax", progress: bool = False) -> dict:
    """Analyse a results store directory, a CSV/Parquet/SQLite table or a DataFrame.

    Writes `out_dir/report.html`, `out_dir/analysis.json`, `out_dir/analyze.yaml` and
    `out_dir/figures/*.{png,svg}`; returns the analysis dict (as written to JSON)."""
    from plw.analysis.analyze import analyze_table, group_frames, jsonable
    from plw.analysis.figures import all_figures
    from plw.analysis.results import benchmark_rows, load_results

    if scores not in ("raw", "minmax"):
        raise PLWError(f"must be raw or minmax, got {scores!r}", field="scores")
    df, src = load_results(results)           # validates before anything is written
    cfg = AnalyzeConfig(source=src, scores=scores)
    out_dir = Path(os.fspath(out_dir))
    bench = benchmark_rows(df)
    if bench.empty:
        raise PLWError("no benchmark rows (every row is a diagnostics row or has no score)", file=src)
    groups = dict(group_frames(bench))
    prepare_out_dir(out_dir)                   # fail before the (long) fit, not after it

    with _steps(progress, total=len(groups) + 3) as advance:
        analysis = analyze_table(df, scores, step=advance)
        try:
            advance("drawing figures")
            figs = all_figures(bench, groups, analysis, out_dir)
            advance("writing the report")
            result = jsonable(analysis)
            result["source"] = src
            result["figures"] = figs
            import yaml
            write_text_atomic(out_dir / "analyze.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))
            write_json_atomic(out_dir / "analysis.json", result)
            write_text_atomic(out_dir / "report.html", render_html(result))
        except OSError as err:
            raise PLWError(f"cannot write the report: {err.strerror or err}",
                           file=str(err.filename or out_dir)) from None
    return result


def prepare_out_dir(out_dir: Path) -> None:
    """Create the output directory and check that it can be written; a one-line PLWError if not."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PLWError(f"cannot create the output directory: {err.strerror or err}",
                       file=str(out_dir)) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise PLWError("the output directory is not writable", file=str(out_dir))


class _steps:
    """The analysis steps on one progress bar: `advance(desc)` names the step now running."""

    def __init__(self, enabled: bool, total: int):
        self.bar = progress_bar(enabled, "analysing", total)
        self.started = False

    def __enter__(self):
        self.bar.__enter__()

        def advance(desc: str):
            if self.started:
                self.bar.advance(1)
            self.started = True
            self.bar.update(description=desc)
        return advance

    def __exit__(self, *exc):
        self.bar.update(completed=self.bar.total)
        return self.bar.__exit__(*exc)
        return False


# ---- HTML ----------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.note{color:#666;font-size:.9em}
.concl{background:#f6f9ff;border-left:4px solid #4a74d6;padding:.5em 1em;margin:.6em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
"""


def _f(v, digits=4):
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.2e}"
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _table(header, rows, left=1) -> str:
    h = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(str(c))}</th>' for i, c in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{_f(c) if not isinstance(c, str) else html.escape(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _glmm_html(m: dict) -> str:
    if "skipped" in m:
        return f'<p class="note">Beta GLMM not fitted: {html.escape(m["skipped"])}.</p>'
    rows = [[k, m["fixef"][k], m["se"][k], m["z_p_value"][k]] for k in m["fixef"]]
    ci = m.get("critical_plw_ci") or [None, None]
    lam = (f"critical PLW λ = {_f(m['critical_plw'])} (95% CI {_f(ci[0])}–{_f(ci[1])}; vertex at "
           f"w_p = {_f(m['vertex_wp'])}, a {m['shape']})" if m.get("critical_plw") is not None
           else "no critical PLW (no curvature)")
    return (f"<p><code>{html.escape(m['formula'])}</code> — beta family, logit link, Laplace ML; "
            f"scores: {html.escape(m['scores'])}; random terms: {html.escape(', '.join(m['random_terms']) or 'none')}.</p>"
            + _table(["term", "estimate", "std. error", "p (z)"], rows)
            + f"<p>logLik = {_f(m['logLik'], 8)}, AIC = {_f(m['aic'], 6)}, precision φ = {_f(m['phi'])}; "
              f"PLW terms: likelihood-ratio p = {_f(m['p_value'])}, Wald p = {_f(m['p_value_wald'])}; "
              f"converged: {_f(m['converged'])} ({html.escape(m['convergence']['full'])}).</p>"
            + f"<p><b>{lam}</b></p>")


def _ols_html(o: dict) -> str:
    if "skipped" in o:
        return f'<p class="note">OLS not fitted: {html.escape(o["skipped"])}.</p>'
    holm = o.get("p_holm", {})
    rows = [[k, o["coef"][k], o["se"][k], o["p"][k], holm.get(k)] for k in o["coef"]]
    return ("<p>Earlier version: <code>score ~ w² + w + C(benchmark)</code>, w = w_p scaled to [−1, 1]; "
            "Holm–Bonferroni over every p-value of every group.</p>"
            + _table(["term", "coef", "std. error", "p", "p (Holm)"], rows)
            + f"<p>R² = {_f(o['r2'])}</p>")


def _gam_html(gam: dict) -> str:
    if "skipped" in gam:
        return f'<p class="note">GAM not fitted: {html.escape(gam["skipped"])}.</p>'
    parts = []
    for name, g in gam.items():
        if "skipped" in g:
            parts.append(f'<p class="note">{html.escape(name)}: {html.escape(g["skipped"])}.</p>')
            continue
        rows = [[f"R_g = {r}", v["plw"], v["spread"], "flat *" if v["flat"] else ""]
                for r, v in list(g["optimal"].items()) + [(k, v) for k, v in g["table"].items()
                                                          if k not in g["optimal"]]]
        rows.sort(key=lambda row: float(row[0].split("= ")[1]))
        parts.append(f"<h3>{html.escape(name)} benchmarks</h3><p><code>{html.escape(g['formula'])}</code>, "
                     f"GCV smoothing parameters {', '.join(_f(s) for s in g['sp'])}, EDF {_f(g['edf'])}, "
                     f"R² {_f(g['r2'])}, n = {g['n']}.</p>"
                     + _table(["ratio", "optimal PLW", "predicted max − min", ""], rows)
                     + '<p class="note">* the predicted max − min over PLW is under 5% of the score '
                       "range: PLW barely matters there.</p>")
    return "".join(parts)


def render_html(a: dict) -> str:
    out = ["<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>plw analysis</title>",
           f"<style>{_CSS}</style></head><body>",
           "<h1>Prompt loss weight analysis</h1>",
           f"<p class=note>Source: {html.escape(a.get('source', ''))}; {a['n_benchmark_rows']} benchmark "
           f"rows; GLMM scores: {html.escape(a['scores'])}. Method: Huerta-Enochian &amp; Ko, "
           "“Instruction Fine-Tuning: Does Prompt Loss Matter?” (EMNLP 2024).</p>",
           "<h2>Conclusions</h2>"]
    for g in a["groups"].values():
        out.append(f'<div class="concl">{html.escape(g["conclusion"])}</div>')
    figs = {f["name"]: f for f in a.get("figures", [])}

    def fig(name):
        f = figs.get(name)
        if not f:
            return ""
        return (f'<figure><img src="{html.escape(f["png"])}" alt="{html.escape(f["title"])}">'
                f'<figcaption><b>{html.escape(f["title"])}.</b> {html.escape(f["caption"])} '
                f'(<a href="{html.escape(f["svg"])}">SVG</a>)</figcaption></figure>')

    out.append(fig("aggregate_vs_wp"))
    for name, g in a["groups"].items():
        out.append(f"<h2>Group: {html.escape(name)}</h2>")
        out.append(f"<p class=note>{g['n']} rows; {len(g['benchmarks'])} benchmarks; models: "
                   f"{html.escape(', '.join(g['models']))}; PLW levels: "
                   f"{html.escape(', '.join(f'{x:g}' for x in g['plw_levels']))}.</p>")
        out.append("<h3>Beta GLMM (§5.2)</h3>" + _glmm_html(g["glmm"]))
        if g.get("glmm_r"):
            r = g["glmm_r"]
            out.append(_table(["R glmmTMB", "intercept", "wp", "wp2", "logLik", "critical PLW"],
                              [["estimate", *r["fixef"].values(), r["logLik"], r["critical_plw"]],
                               ["std. error", *r["se"].values(), None, None]]))
        out.append("<h3>OLS (earlier version)</h3>" + _ols_html(g["ols"]))
        if g.get("regularizers"):
            out.append("<h3>Regularizers (Table 4)</h3>" + _table(
                ["regularizer", "PLW", "relative aggregate", "runs"],
                [[r["regularizer"], r["plw"], r["relative"], r["runs"]] for r in g["regularizers"]["rows"]], left=1))
        aggs = g.get("aggregates", [])
        if aggs:
            out.append("<h3>Aggregates</h3>" + _table(
                ["model", "PLW", "simple", "relative"],
                [[r.get("model", ""), r["plw"], r["simple"], r["relative"]] for r in aggs]))
    out.append("<h2>Per-benchmark scores</h2>" + fig("benchmarks_vs_wp"))
    if "diagnostics" in figs:
        out.append("<h2>Diagnostics</h2>" + fig("diagnostics"))
    if "regularizers" in figs:
        out.append("<h2>Regularizers</h2>" + fig("regularizers"))
    out.append("<h2>Optimal PLW from R_g (GAM, Appendix D)</h2>" + _gam_html(a.get("gam", {})) + fig("gam_contour"))
    out.append("</body></html>\n")
    return "\n".join(out)
