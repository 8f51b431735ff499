"""Sweep spec: validation, one-line errors naming file, line and key; CLI exit code 2."""

from __future__ import annotations

import textwrap

import pytest

from plw import PAPER_PLW_LEVELS
from plw.cli import main
from plw.errors import PLWError
from plw.experiment.spec import load_spec

GOOD = """\
name: demo
datasets:
  - builtin:short?n=10
"""


def _write(tmp_path, text: str):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_spec(_write(tmp_path, GOOD))
    assert spec.plw == list(PAPER_PLW_LEVELS)
    assert spec.models == ["builtin:tiny"] and spec.seeds == [42]
    assert [r.name for r in spec.regularizers] == ["none"]
    assert spec.backend == "local"
    # Relative output paths resolve against the current directory; default runs/<name>.
    assert spec.store_dir() == tmp_path / "runs" / "demo"


def test_dataset_variants(tmp_path):
    spec = load_spec(_write(tmp_path, """\
        name: v
        datasets:
          - builtin:long
          - invert(builtin:long)
          - invert( builtin:long , target_ratio=0.042 )
          - {name: Tiny, source: builtin:long, invert: true, target_ratio: 1e-1}
        """))
    d = spec.datasets
    assert [x.invert for x in d] == [False, True, True, True]
    assert {x.source for x in d} == {"builtin:long"}
    assert d[1].name == "invert(builtin:long)" and d[1].target_ratio is None
    assert d[2].name == "invert(builtin:long, target_ratio=0.042)" and d[2].target_ratio == 0.042
    assert d[3].name == "Tiny" and d[3].target_ratio == 0.1  # 1e-1 read as a float


@pytest.mark.parametrize("body, line, field, words", [
    ("plw: [0, 0.5, 2]\n", 4, "plw[2]", "less than or equal to 1"),
    ("plw: [0, 0.1, 0.1]\n", 4, "plw", "duplicate"),
    ("plww: [0]\n", 4, "plww", "unknown key"),
    ("train:\n  learning_rate: 1e-3\n  learnin_rate: 1\n", 6, "train.learnin_rate", "unknown key"),
    ("train:\n  prompt_loss_weight: 0.1\n", 4, "train", "set per run"),
    ("eval:\n  limit: 0\n", 5, "eval.limit", "greater than 0"),
    ("backend: slurm\n", 4, "backend", "'local' or 'ray'"),
    ("regularizers:\n  - none\n  - {name: wd, train: {weight_decay: -1}}\n", 6,
     "regularizers[1].train.weight_decay", "greater than or equal to 0"),
    ("regularizers:\n  - dropout\n", 5, "regularizers[0]", "must be 'none'"),
    ("seeds: [1, 1]\n", 4, "seeds", "duplicate"),
])
def test_broken_spec_names_line_and_key(tmp_path, body, line, field, words):
    path = _write(tmp_path, GOOD + body)
    with pytest.raises(PLWError) as info:
        load_spec(path)
    err = info.value
    assert (err.file, err.line, err.field) == (str(path), line, field)
    assert words in err.problem


def test_broken_dataset_item(tmp_path):
    path = _write(tmp_path, "name: x\ndatasets:\n  - builtin:short\n  - invert(data.json, target_ratio=abc)\n")
    with pytest.raises(PLWError) as info:
        load_spec(path)
    assert (info.value.line, info.value.field) == (4, "datasets[1]")
    assert "target_ratio" in info.value.problem


def test_missing_datasets_and_bad_yaml(tmp_path):
    with pytest.raises(PLWError, match="datasets: required key is missing"):
        load_spec(_write(tmp_path, "name: x\n"))
    with pytest.raises(PLWError) as info:
        load_spec(_write(tmp_path, "name: x\ndatasets: [a\n"))
    assert "invalid YAML" in info.value.problem and info.value.line is not None


def test_cli_broken_spec_one_line_exit_2(tmp_path, capsys):
    path = _write(tmp_path, GOOD + "train:\n  num_epochs: -1\n")
    for cmd in (["sweep", "plan", str(path)], ["sweep", "run", str(path)]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: {path}:5: train.num_epochs: Input should be greater than 0"
    assert not (tmp_path / "runs").exists()  # nothing written


EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name, n_runs", [("quickstart.yaml", 12), ("sweep_paper.yaml", 60),
                                          ("sweep_regularizers.yaml", 12), ("sweep_ratio.yaml", 28)])
def test_example_specs_validate(name, n_runs):
    from plw.experiment.grid import expand

    spec = load_spec(EXAMPLES / name)
    assert len(expand(spec)) == n_runs


def test_quickstart_is_the_builtin_default():
    spec = load_spec(EXAMPLES / "quickstart.yaml")
    assert spec.models == ["builtin:tiny"] and spec.backend == "local" and spec.analysis
    assert [d.source.split("?")[0] for d in spec.datasets] == ["builtin:short", "builtin:long"]
    assert 3 <= len(spec.plw) <= 6 and spec.eval.suite == "builtin"
    assert spec.store_dir().name == "quickstart"


def test_unknown_suite_fails_up_front_in_plan_and_run(tmp_path, capsys, monkeypatch):
    """A typo in eval.suite stops `sweep plan` and `sweep run` before anything trains."""
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, GOOD + "eval:\n  limit: 4\n  suite: nosuch\n")
    for cmd in (["sweep", "plan", str(path)], ["sweep", "run", str(path)]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err
        assert err.startswith(f"error: {path}:6: eval.suite: unknown task 'nosuch'")
    assert not (tmp_path / "runs").exists()  # nothing trained or written


def test_suite_list_errors_name_the_item(tmp_path):
    path = _write(tmp_path, GOOD + "eval:\n  suite:\n    - builtin\n    - piqa\n    - builtin_mc\n")
    with pytest.raises(PLWError) as info:
        load_spec(path)
    assert (info.value.line, info.value.field) == (8, "eval.suite[2]")
    assert "requested twice" in info.value.problem
    # plw's own suite and task names are accepted without touching lm-eval's registry
    ok = _write(tmp_path, GOOD + "eval:\n  suite: [offline, truthfulqa_gen, builtin_gen]\n")
    assert load_spec(ok).eval.suite == ["offline", "truthfulqa_gen", "builtin_gen"]
