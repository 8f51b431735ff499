"""plw's imports follow the declared layer order (docs/architecture.md), with no cycles, no private
names taken across modules and no `except ImportError` around plw's own modules."""

from __future__ import annotations

import re
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


def test_readme_layout_table_lists_every_package_and_the_declared_order():
    readme = (PLW.parent / "README.md").read_text()
    table = readme[readme.index("| path | layer | concern |"):]
    table = table[:table.index("\n\n")]
    listed = set(re.findall(r"`(plw/[^`]*)`", table))
    present = {f"plw/{p.name}/" for p in PLW.iterdir() if (p / "__init__.py").is_file()}
    present |= {f"plw/{p.name}" for p in PLW.glob("*.py") if p.name != "__init__.py"}
    assert present <= listed, f"missing from the README's layout table: {sorted(present - listed)}"
    assert all((PLW.parent / p).exists() for p in listed if "*" not in p)
    order = " < ".join(", ".join(names) for names in layering.LAYERS).replace("__init__, ", "")
    flat = " ".join(readme.split())
    assert order in flat
    assert order in " ".join((PLW.parent / "docs" / "architecture.md").read_text().split())


# The checker itself: planted problems in a copy of the package are reported.


PLANTS = {  # file -> text appended to it in a copy of the package
    "loss/reference.py": "\n\ndef _planted():\n    from plw.train import config\n",
    "data/stats.py": "\n\ndef _planted():\n    from ..eval import harness\n",
    "analysis/ols.py": "\nimport plw.experiment.grid\n",
    "loss/common.py": "\n\ndef _planted():\n    from plw.loss import reference\n",
    "train/collator.py": ("\n\ndef _planted():\n    try:\n        from plw.loss.chunked import _planted_helper\n"
                          "    except ImportError:\n        pass\n    from plw.loss import common as c\n    c._x\n"),
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    copy = tmp_path_factory.mktemp("planted") / "plw"
    shutil.copytree(PLW, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, text in PLANTS.items():
        with open(copy / rel, "a") as f:
            f.write(text)
    return layering.load_graph(copy)


def test_checker_reports_an_upward_import_inside_a_function(planted):
    assert any("plw.loss.reference" in p and "upward import of plw.train.config" in p
               for p in layering.layer_violations(planted))


def test_checker_reports_a_relative_upward_import(planted):
    assert any("plw.data.stats" in p and "upward import of plw.eval.harness" in p
               for p in layering.layer_violations(planted))


def test_checker_reports_a_sideways_import(planted):
    assert any("plw.analysis.ols" in p and "on its own layer" in p for p in layering.layer_violations(planted))


def test_checker_reports_a_cycle(planted):
    assert ["plw.loss.common", "plw.loss.reference"] in layering.cycles(planted)


def test_checker_reports_private_names_and_guards(planted):
    private = layering.private_imports(planted)
    assert any("private _planted_helper from plw.loss.chunked" in p for p in private)
    assert any("private _x from plw.loss.common" in p for p in private)
    assert any("plw.train.collator" in p and "plw.loss.chunked" in p for p in layering.guarded_imports(planted))


def test_checker_on_a_synthetic_graph():
    g = layering.Graph("p", modules={"p", "p.loss", "p.loss.a", "p.data", "p.data.b", "p.data.c"})
    g.edges = [layering.Edge("p.loss.a", "p.data.b", 3),
               layering.Edge("p.data.b", "p.data.c", 1), layering.Edge("p.data.c", "p.data.b", 2)]
    assert layering.layer_violations(g) == ["p.loss.a:3: upward import of p.data.b (loss < data)"]
    assert layering.cycles(g) == [["p.data.b", "p.data.c"]]
