"""analyze_results / `plw analyze` / `plw recommend`: outputs, report links, tiny sweeps, errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plw.analysis import analyze_results
from plw.analysis.transforms import to_wp
from plw.cli import main

LEVELS = [0.0, 0.01, 0.1, 0.5, 1.0]


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.refs.append(a["src"])
        if tag == "a" and "href" in a:
            self.refs.append(a["href"])


def assert_report_resolves(out: Path) -> list[str]:
    p = _Refs()
    p.feed((out / "report.html").read_text())
    assert p.refs, "report has no figures"
    for ref in p.refs:
        f = out / ref
        assert f.is_file(), ref
        if ref.endswith(".png"):
            assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            import matplotlib.image as mpimg
            assert mpimg.imread(f).shape[0] > 50
        if ref.endswith(".svg"):
            assert ET.parse(f).getroot().tag.endswith("svg")
    return p.refs


def make_store(root: Path, seed=0) -> Path:
    """A results store as the sweep runner writes it: 2 models x 3 datasets x 5 PLW x 4 benchmarks,
    diagnostics rows, diagnostics columns and two regularizer runs per dataset."""
    rng = np.random.default_rng(seed)
    rows = []
    datasets = {"Short": 0.08, "Medium": 1.0, "Long": 3.27}
    benches = {"arc": "mc", "piqa": "mc", "tqa_gen": "gen", "alpaca_eval": "gen"}
    runs = [(m, d, plw, "none") for m in ("llama1", "llama2") for d in datasets for plw in LEVELS]
    runs += [("llama2", d, plw, "weight_decay") for d in datasets for plw in (0.0, 1.0)]
    for i, (model, ds, plw, reg) in enumerate(runs):
        r = datasets[ds]
        wp = to_wp(plw)
        effect = (2.0 * wp - 1.6 * wp**2) * np.exp(-r)   # PLW matters only for short completions
        diag = dict(loss_rsd=0.05 + 0.1 * wp + rng.normal(0, 0.01), weight_l2=1 + wp, weight_minkowski=0.5,
                    memorization_bleu=80 - 40 * wp, generation_length=100 + 50 * wp,
                    val_completion_nll=2.0, wall_time_s=10.0, train_tokens=1000)
        base = dict(run_id=f"r{i:03d}", config_hash=f"h{i}", model=model, dataset=ds, ratio=r, plw=plw,
                    wp=wp, regularizer=reg, seed=42)
        for b, grp in benches.items():
            score = 0.4 + 0.1 * (b == "piqa") + 0.1 * effect + 0.02 * (model == "llama2") + rng.normal(0, 0.01)
            rows.append({**base, "benchmark": b, "metric": "acc", "score": score, "group": grp, **diag})
        rows.append({**base, "benchmark": "train", "metric": "loss_rsd", "score": diag["loss_rsd"],
                     "group": "diag", **diag})
    df = pd.DataFrame(rows)
    root.mkdir(parents=True, exist_ok=True)
    df.to_parquet(root / "results.parquet")
    return root


@pytest.fixture(scope="module")
def store_analysis(tmp_path_factory):
    root = make_store(tmp_path_factory.mktemp("store") / "runs")
    out = root.parent / "analysis"
    return root, out, analyze_results(root, out)


def test_store_analysis_outputs(store_analysis):
    root, out, a = store_analysis
    on_disk = json.loads((out / "analysis.json").read_text())
    assert on_disk["groups"].keys() == {"Short", "Medium", "Long"}
    for name, g in on_disk["groups"].items():
        m = g["glmm"]
        assert set(m["fixef"]) == {"intercept", "wp", "wp2"} and set(m["se"]) == {"intercept", "wp", "wp2"}
        for key in ("logLik", "p_value", "critical_plw", "converged"):
            assert key in m, key
        assert g["gam"]["optimal_plw"].keys() == {f"{g['ratio']:g}"}
        assert "weight_decay" in {r["regularizer"] for r in g["regularizers"]["rows"]}
        assert set(g["diagnostics"]) >= {"loss_rsd", "memorization_bleu", "generation_length"}
    # PLW matters for the short data set (strong simulated effect), not for the long one
    assert on_disk["groups"]["Short"]["glmm"]["p_value"] < 0.01
    assert set(on_disk["gam"]) >= {"All", "MC", "Gen"}
    assert (out / "analyze.yaml").is_file()


def test_report_references_resolve(store_analysis):
    _, out, a = store_analysis
    refs = assert_report_resolves(out)
    names = {Path(r).stem for r in refs}
    assert names >= {"aggregate_vs_wp", "benchmarks_vs_wp", "diagnostics", "regularizers", "gam_contour"}
    html = (out / "report.html").read_text()
    assert "critical PLW" in html and "Conclusions" in html


def test_tiny_sweep_reports_what_it_cannot_fit(tmp_path):
    rows = [{"model": "m", "dataset": ds, "ratio": r, "plw": plw, "benchmark": b, "score": s}
            for ds, r in (("A", 0.1), ("B", 3.0)) for plw in (0.0, 1.0) for b, s in (("x", 0.3 + plw / 10), ("y", 0.6))]
    csv = tmp_path / "tiny.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    a = analyze_results(csv, tmp_path / "out")
    for g in a["groups"].values():
        assert "at least 3 PLW levels" in g["glmm"]["skipped"]
        assert "skipped" in g["gam"]
    assert_report_resolves(tmp_path / "out")
    assert "no regression fitted" in (tmp_path / "out" / "report.html").read_text()


def test_reference_table_through_the_cli(shared, tmp_path, capsys):
    ref = json.loads((shared / "reference" / "glmm" / "glmmtmb_fit_minmax.json").read_text())
    out = tmp_path / "o"
    assert main(["analyze", str(shared / "reference" / "glmm" / "sweep_scores.csv"), "-o", str(out)]) == 0
    g = json.loads((out / "analysis.json").read_text())["groups"]["all"]["glmm"]
    assert g["fixef"]["wp"] == pytest.approx(ref["fixef"]["wp"], rel=1e-3)
    assert round(g["critical_plw"], 3) == round(ref["critical_plw"], 3)
    assert_report_resolves(out)


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    csv = tmp_path / "bad.csv"
    csv.write_text("benchmark,model,plw,score\na,m,0.1,0.5\na,m,1.5,0.4\n")
    out = tmp_path / "out"
    assert main(["analyze", str(csv), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {csv}:3: plw: PLW must lie in [0, 1], got 1.5"
    assert not out.exists()
    csv.write_text("benchmark,plw,score\na,0.1,oops\n")
    assert main(["analyze", str(csv), "-o", str(out), "--scores", "raw"]) == 2
    assert "score: not a number" in capsys.readouterr().err
    assert main(["analyze", str(csv), "-o", str(out), "--scores", "logit"]) == 2
    assert not out.exists()


def test_recommend_from_paper_and_from_sweep(shared, tmp_path, capsys):
    assert main(["recommend", "--ratio", "0.08"]) == 0
    text = capsys.readouterr().out
    assert "recommended PLW: 0.155" in text and "source: paper" in text
    js = tmp_path / "rec.json"
    gam_csv = shared / "reference" / "gam" / "sweep_scores_by_ratio.csv"
    assert main(["recommend", "--ratio", "3.27", "--from", str(gam_csv), "--scores", "raw", "--json", str(js)]) == 0
    rec = json.loads(js.read_text())
    assert rec["source"] == "your sweep" and rec["plw"] == pytest.approx(0.344, abs=0.02)


def test_recommend_measures_the_data(capsys):
    assert main(["recommend", "builtin:short"]) == 0
    out = capsys.readouterr().out
    assert "short-completion" in out and "recommended PLW" in out


def test_legend_labels_name_local_models_by_file_name():
    from plw.analysis.figures import short_name

    assert short_name("/work/shared/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") == \
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert short_name("../models/llama-7b/") == "llama-7b"
    assert short_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert short_name("AlpacaDataShort") == "AlpacaDataShort"
