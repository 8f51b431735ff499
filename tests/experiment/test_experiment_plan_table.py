"""`plw sweep plan`'s table stays readable at 80 columns."""

from __future__ import annotations

import io
import textwrap

from rich.console import Console

from plw.cli import main
from plw.experiment.commands import plan_table
from plw.experiment.plan import plan
from plw.experiment.spec import load_spec

LEVELS = ["0", "0.0005", "0.01", "0.2463", "1"]


def _render(spec_text: str, tmp_path, width: int = 80) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(spec_text))
    sweep = load_spec(path)
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    for part in plan_table(sweep, plan(sweep)):
        console.print(part, soft_wrap=isinstance(part, str))
    return console.export_text()


def test_plan_table_at_80_columns_constant_factors_in_header(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = _render(f"""\
        name: p
        plw: [{", ".join(LEVELS)}]
        datasets: ["builtin:short?n=1000", "builtin:long?n=1000"]
        """, tmp_path)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines[1:])  # [0]: the title, with the store path
    assert "…" not in text
    assert "model: builtin:tiny" in text and "regularizer: none" in text and "seed: 42" in text
    header = next(line for line in lines if line.startswith("run_id"))
    assert "model" not in header and "reg" not in header and "seed" not in header
    rows = [line.split() for line in lines if line[:12].isalnum() and line[:12] != "run_id"]
    assert len(rows) == 10
    assert sorted({r[1] for r in rows}) == ["builtin:long?n=1000", "builtin:short?n=1000"]
    assert [r[2] for r in rows[:5]] == LEVELS  # full PLW values
    assert [r[3] for r in rows[:5]] == ["0.000", "0.101", "0.250", "0.656", "1.000"]
    assert all(r[5].replace(",", "").isdigit() and int(r[5].replace(",", "")) > 1000 for r in rows)


def test_plan_table_varying_factors_keep_numbers_whole(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = _render(f"""\
        name: p
        plw: [{", ".join(LEVELS)}]
        datasets: ["builtin:short?n=200", "invert(builtin:long?n=200, target_ratio=0.042)"]
        regularizers: [none, {{name: label_smoothing, plw: [0, 1], train: {{regularizers: {{label_smoothing: 0.1}}}}}}]
        seeds: [1, 2]
        """, tmp_path)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines[1:])  # [0]: the title, with the store path and "…" not in text
    header = next(line for line in lines if line.startswith("run_id"))
    assert header.split() == ["run_id", "dataset", "reg", "PLW", "w_p", "seed", "status", "tokens",
                              "time"]
    rows = [line for line in lines if line[:12].isalnum() and line[:12] != "run_id"]
    assert len(rows) == 2 * (5 + 2) * 2
    for level in LEVELS:
        assert any(f" {level} " in row for row in rows)
    # long dataset names fold onto more lines instead of being cut
    assert "".join(line[14:].split("  ")[0].strip() for line in lines[3:]).count(
        "invert(builtin:long?n=200,target_ratio=0.042)") == 14
    assert all(row.rstrip().endswith("s") for row in rows)  # the time column is not cropped


def test_plan_cli_at_80_columns(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    path = tmp_path / "q.yaml"
    path.write_text('name: q\nplw: [0, 0.0005, 1]\ndatasets: ["builtin:short?n=1000"]\n')
    assert main(["sweep", "plan", str(path)]) in (0, None)
    out = capsys.readouterr().out
    assert "0.0005" in out and "builtin:short?n=1000" in out and "…" not in out
    assert "model: builtin:tiny" in out and "3 runs:" in out
