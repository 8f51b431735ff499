"""Failures: bad input stops before any work (exit 2, one line); a failing run is recorded, the
others go on, the command exits 1 and the run is retried on the next invocation."""

from __future__ import annotations

from plw.cli import main
from plw.experiment.grid import expand
from plw.experiment.spec import load_spec
from plw.results.store import ResultsStore


def test_missing_data_file_fails_before_training(tiny_spec, capsys):
    path = tiny_spec(datasets=["builtin:short?n=48", "data/missing.jsonl"])
    assert main(["sweep", "run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}:") and err.endswith("datasets[1]: no such file: data/missing.jsonl")
    assert "\n" not in err
    assert not (path.parent / "runs").exists()


def test_failed_run_is_recorded_and_retried(tiny_spec, capsys):
    # An unknown built-in data set only fails when the run loads it: a runtime failure.
    path = tiny_spec(plw=[0.0], datasets=["builtin:nosuch?n=8"])
    spec = load_spec(path)
    run = expand(spec)[0]
    store = ResultsStore(spec.store_dir())
    assert main(["sweep", "run", str(path), "--no-progress"]) == 1
    out = capsys.readouterr()
    assert "1 failed" in out.out and "unknown built-in data set" in out.err
    assert (store.run_dir(run.run_id) / "error.txt").is_file()
    assert not store.is_finished(run.run_id)
    assert len(store.dataframe()) == 0 and (store.root / "results.parquet").is_file()
    # Retried (and failing again) on the next invocation, from a clean folder.
    assert main(["sweep", "run", str(path), "--no-progress", "--fail-fast"]) == 1
    assert "0 earlier, 1 failed" in capsys.readouterr().out
