"""Figures of the analysis (matplotlib, Agg): each saved as PNG and SVG, atomically.

fig. 1 aggregate score vs w_p per dataset (with the GLMM's population curve); per-benchmark panels;
fig. 2 diagnostics box plots; Table 4 regularizer comparison; fig. 10 GAM contour over (PLW, R_g).
Every function returns a list of {"name", "title", "png", "svg", "caption"} (paths relative to
the output directory) and draws nothing when its data are absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from plw.analysis.transforms import minmax_by, to_wp
from plw.io import atomic_path

FIG_DIR = "figures"
DIAG_LABELS = {
    "loss_rsd": "training-loss RSD (5-step windows)",
    "weight_l2": "L2 distance to pre-trained weights",
    "weight_minkowski": "Minkowski distance to pre-trained weights",
    "memorization_bleu": "memorisation BLEU-4",
    "generation_length": "generation length (tokens)",
    "val_completion_nll": "validation completion NLL",
}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out_dir: Path, name: str, title: str, caption: str) -> dict:
    plt = _plt()
    rel = {}
    for ext in ("png", "svg"):
        path = out_dir / FIG_DIR / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=100)
        rel[ext] = f"{FIG_DIR}/{name}.{ext}"
    plt.close(fig)
    return {"name": name, "title": title, "caption": caption, **rel}


def _wp_axis(ax):
    """x axis on the w_p scale, ticks labelled with PLW values."""
    levels = [0, 1e-3, 1e-2, 0.1, 0.5, 1]
    ax.set_xticks(to_wp(levels))
    ax.set_xticklabels([f"{v:g}" for v in levels])
    ax.set_xlabel("PLW (w_p scale: PLW^0.30103)")
    ax.set_xlim(-0.02, 1.02)


def short_name(value) -> str:
    """A legend label: a local model path by its file or folder name (a full path overflows the
    legend); Hub names and dataset names as they are."""
    text = str(value)
    return Path(text).name or text if text.startswith(("/", "./", "../", "~")) else text


def aggregate_figure(groups: dict, analysis: dict, out_dir: Path) -> list[dict]:
    plt = _plt()
    names = list(groups)
    n = len(names)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        d = groups[name].copy()
        d["rel"] = minmax_by(d)
        agg = d.groupby(["model", "wp"])["rel"].mean().reset_index()
        for model, a in agg.groupby("model"):
            ax.plot(a["wp"], a["rel"], "o-", ms=4, label=short_name(model))
        m = analysis["groups"][name].get("glmm", {})
        if "fixef" in m and analysis.get("scores") == "minmax":
            x = np.linspace(0, 1, 201)
            f = m["fixef"]
            ax.plot(x, 1 / (1 + np.exp(-(f["intercept"] + f["wp"] * x + f["wp2"] * x**2))), "k--",
                    lw=1.5, label="GLMM (population)")
            if m.get("vertex_inside") and m.get("shape") == "maximum":
                ax.axvline(m["vertex_wp"], color="0.4", lw=1, ls=":")
        ax.set_title(name)
        ax.set_ylabel("relative aggregate score")
        _wp_axis(ax)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return [_save(fig, out_dir, "aggregate_vs_wp", "Aggregate score against PLW (paper fig. 1)",
                  "Relative aggregate (each benchmark min-max scaled within the dataset group, then "
                  "averaged) per model; dashed: the beta GLMM's population curve; dotted: the critical PLW.")]


def benchmark_figure(bench, out_dir: Path) -> list[dict]:
    plt = _plt()
    names = sorted(bench["benchmark"].unique())
    n = len(names)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.0 * rows), squeeze=False)
    series = ["dataset", "model"] if "dataset" in bench.columns else ["model"]
    for ax, b in zip(axes.flat, names):
        d = bench[bench["benchmark"] == b]
        mean = d.groupby(series + ["wp"])["score"].mean().reset_index()
        for key, a in mean.groupby(series):
            label = " / ".join(short_name(k) for k in (key if isinstance(key, tuple) else (key,)))
            ax.plot(a["wp"], a["score"], ".-", ms=3, lw=1, label=label)
        ax.set_title(b, fontsize=9)
        _wp_axis(ax)
        ax.xaxis.label.set_size(7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if len(labels) <= 12:
        # reserve room under the panels for the shared legend (its height in inches -> fraction)
        leg_rows = int(np.ceil(len(labels) / 4))
        height = fig.get_size_inches()[1]
        bottom = (0.15 + 0.2 * leg_rows) / height
        fig.tight_layout(rect=(0, bottom, 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7,
                   bbox_to_anchor=(0.5, 0.0))
    else:
        fig.tight_layout()
    return [_save(fig, out_dir, "benchmarks_vs_wp", "Per-benchmark scores against PLW",
                  "Raw benchmark scores (mean over seeds) per dataset and model.")]


def diagnostics_figure(analysis: dict, out_dir: Path) -> list[dict]:
    plt = _plt()
    per = {}
    for gname, g in analysis["groups"].items():
        for col, byplw in g.get("diagnostics", {}).items():
            per.setdefault(col, {}).setdefault(gname, byplw)
    if not per:
        return []
    cols = list(per)
    ncol = min(len(cols), 3)
    nrow = int(np.ceil(len(cols) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.2 * nrow), squeeze=False)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    groups = list(analysis["groups"])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.06 / max(1, len(groups))
    for ax, col in zip(axes.flat, cols):
        # one box series per dataset group, side by side: datasets can sit far apart (R_g ≪ 1
        # against R_g ≫ 1) and a pooled box would hide both
        for i, gname in enumerate(groups):
            byplw = per[col].get(gname)
            if not byplw:
                continue
            keys = sorted(float(k) for k in byplw)
            values = [byplw[next(k for k in byplw if float(k) == key)] for key in keys]
            shift = (i - (len(groups) - 1) / 2) * width * 1.2
            colour = colours[i % len(colours)]
            positions = [w + shift for w in to_wp(keys)]
            ax.boxplot(values, positions=positions, widths=width,
                       manage_ticks=False, boxprops={"color": colour}, whiskerprops={"color": colour},
                       capprops={"color": colour}, medianprops={"color": colour},
                       flierprops={"markeredgecolor": colour})
            ax.plot(positions, [float(np.median(v)) for v in values], "-", color=colour, lw=0.8, alpha=0.6)
        ax.set_title(DIAG_LABELS.get(col, col), fontsize=9)
        _wp_axis(ax)
        ax.set_xlim(-0.06, 1.06)  # room for the side-by-side boxes at PLW 0 and 1
    handles = [plt.Line2D([], [], color=colours[i % len(colours)], label=short_name(g))
               for i, g in enumerate(groups)]
    if len(groups) > 1:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(groups), 4), fontsize=7)
        fig.tight_layout(rect=(0, 0.06 + 0.03 * ((len(groups) - 1) // 4), 1, 1))
    else:
        fig.tight_layout()
    return [_save(fig, out_dir, "diagnostics", "Mechanism diagnostics by PLW (paper fig. 2)",
                  "One value per run, boxed per PLW level and dataset group (models and seeds "
                  "pooled within a group).")]


def regularizer_figure(analysis: dict, out_dir: Path) -> list[dict]:
    plt = _plt()
    groups = {n: g["regularizers"]["rows"] for n, g in analysis["groups"].items() if g.get("regularizers")}
    if not groups:
        return []
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.6), squeeze=False)
    for ax, (name, rows) in zip(axes.flat, groups.items()):
        labels = [f"{r['regularizer']}\nPLW {r['plw']:g}" for r in rows]
        vals = [r["relative"] for r in rows]
        colors = ["tab:orange" if r["regularizer"] in ("none", "") else "tab:blue" for r in rows]
        ax.bar(range(len(rows)), vals, color=colors)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=60, fontsize=7, ha="right")
        ax.set_ylabel("relative aggregate")
        ax.set_title(name)
    fig.tight_layout()
    return [_save(fig, out_dir, "regularizers", "Alternative regularizers vs PLW (paper Table 4)",
                  "Relative aggregate per regularizer and PLW (orange: no regularizer, PLW only).")]


def gam_figure(gam: dict, out_dir: Path) -> list[dict]:
    plt = _plt()
    fits = {n: g for n, g in gam.items() if isinstance(g, dict) and "_fit" in g}
    if not fits:
        return []
    fig, axes = plt.subplots(1, len(fits), figsize=(4.8 * len(fits), 3.9), squeeze=False)
    for ax, (name, g) in zip(axes.flat, fits.items()):
        fit = g["_fit"]
        rs = [float(k) for k in g["optimal"]]
        w = np.linspace(0, 1, 101)
        r = np.linspace(min(rs), max(rs), 81)
        W, R = np.meshgrid(w, r)
        F = fit.smooth(W.ravel(), R.ravel()).reshape(W.shape)
        cs = ax.contourf(W, R, F, levels=15, cmap="viridis")
        fig.colorbar(cs, ax=ax, fraction=0.046)
        best = w[np.argmax(F, axis=1)]
        ax.plot(best, r, "w--", lw=1.2, label="optimal PLW")
        ax.set_xlabel("PLW")
        ax.set_ylabel("R_g")
        ax.set_title(f"GAM te(w, r): {name}")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return [_save(fig, out_dir, "gam_contour", "GAM score surface over PLW and R_g (paper fig. 10)",
                  "Fitted te(w, r, k=3) component (benchmark level removed); dashed: the PLW that "
                  "maximises it at each R_g.")]


def all_figures(bench, groups: dict, analysis: dict, out_dir: Path) -> list[dict]:
    out_dir = Path(out_dir)
    figs = []
    figs += aggregate_figure(groups, analysis, out_dir)
    figs += benchmark_figure(bench, out_dir)
    figs += diagnostics_figure(analysis, out_dir)
    figs += regularizer_figure(analysis, out_dir)
    figs += gam_figure(analysis.get("gam", {}), out_dir)
    return figs

