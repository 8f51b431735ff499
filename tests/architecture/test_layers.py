"""plw's imports follow the declared layer order (docs/architecture.md), with no cycles, no private
names taken across modules and no `except ImportError` around plw's own modules."""

from __future__ import annotations

import shutil
from pathlib import Path

import layering
import pytest

PLW = Path(__file__).resolve().parents[2] / "plw"


@pytest.fixture(scope="module")
def graph():
    return layering.load_graph(PLW)


def test_every_top_level_name_has_a_layer(graph):
    comps = {layering.component(m, "plw") for m in graph.modules}
    assert [c for c in comps if layering.level_of(c) is None] == []


def test_no_upward_or_sideways_import(graph):
    assert layering.layer_violations(graph) == []


def test_no_import_cycle(graph):
    assert layering.cycles(graph) == []


def test_no_private_name_across_modules(graph):
    assert layering.private_imports(graph) == []


def test_no_import_error_guard_around_plw(graph):
    assert layering.guarded_imports(graph) == []


# The checker itself: planted problems in a copy of the package are reported.


def _plant(tmp_path: Path, rel: str, text: str) -> layering.Graph:
    copy = tmp_path / "plw"
    shutil.copytree(PLW, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / rel, "a") as f:
        f.write(text)
    return layering.load_graph(copy)


def test_checker_reports_an_upward_import_inside_a_function(tmp_path):
    g = _plant(tmp_path, "loss/reference.py", "\n\ndef _planted():\n    from plw.train import config\n")
    assert any("plw.loss.reference" in p and "upward import of plw.train.config" in p
               for p in layering.layer_violations(g))


def test_checker_reports_a_relative_upward_import(tmp_path):
    g = _plant(tmp_path, "data/stats.py", "\n\ndef _planted():\n    from ..eval import harness\n")
    assert any("plw.data.stats" in p and "upward import of plw.eval.harness" in p
               for p in layering.layer_violations(g))


def test_checker_reports_a_sideways_import(tmp_path):
    g = _plant(tmp_path, "analysis/ols.py", "\nimport plw.experiment.grid\n")
    assert any("plw.analysis.ols" in p and "on its own layer" in p for p in layering.layer_violations(g))


def test_checker_reports_a_cycle(tmp_path):
    g = _plant(tmp_path, "loss/common.py", "\n\ndef _planted():\n    from plw.loss import reference\n")
    assert ["plw.loss.common", "plw.loss.reference"] in [c for c in layering.cycles(g) if len(c) == 2]


def test_checker_reports_private_names_and_guards(tmp_path):
    text = ("\n\ndef _planted():\n    try:\n        from plw.loss.chunked import _planted_helper\n"
            "    except ImportError:\n        pass\n    from plw.loss import common as c\n    c._x\n")
    g = _plant(tmp_path, "train/collator.py", text)
    private = layering.private_imports(g)
    assert any("private _planted_helper from plw.loss.chunked" in p for p in private)
    assert any("private _x from plw.loss.common" in p for p in private)
    assert any("plw.train.collator" in p and "plw.loss.chunked" in p for p in layering.guarded_imports(g))


def test_checker_on_a_synthetic_graph():
    g = layering.Graph("p", modules={"p", "p.loss", "p.loss.a", "p.data", "p.data.b", "p.data.c"})
    g.edges = [layering.Edge("p.loss.a", "p.data.b", 3),
               layering.Edge("p.data.b", "p.data.c", 1), layering.Edge("p.data.c", "p.data.b", 2)]
    assert layering.layer_violations(g) == ["p.loss.a:3: upward import of p.data.b (loss < data)"]
    assert layering.cycles(g) == [["p.data.b", "p.data.c"]]
