"""A 2 × 2 sweep end to end (tiny model, real training and evaluation), killed with SIGKILL during
its second run and rerun: every run ends up in the table exactly once, finished runs are not
retrained, and the interrupted run restarts from a clean folder."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from plw.cli import main
from plw.experiment.grid import expand
from plw.experiment.spec import load_spec
from plw.results.store import COLUMNS, ResultsStore

REPO = Path(__file__).resolve().parents[2]


def _kill_during_second_run(spec_path: Path, store_root: Path, timeout: float = 180.0,
                            after: str = "train") -> str:
    """Start `plw sweep run` in a subprocess; SIGKILL it once the second run has `after` (a glob
    inside its folder: its training started, or a checkpoint was saved)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "plw.cli", "sweep", "run", str(spec_path), "--no-progress"],
                            cwd=spec_path.parent, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    runs = store_root / "runs"
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise AssertionError("sweep ended before it could be killed: "
                                     + proc.stderr.read().decode()[-2000:])
            dirs = [d for d in runs.iterdir()] if runs.is_dir() else []
            done = [d for d in dirs if (d / "result.json").exists()]
            started = [d for d in dirs if not (d / "result.json").exists() and any(d.glob(after))]
            if len(done) == 1 and started:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return started[0].name
            time.sleep(0.02)
        raise AssertionError("the second run never started")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_sweep_2x2_kill_and_resume(tiny_spec, capsys):
    spec_path = tiny_spec()
    spec = load_spec(spec_path)
    store = ResultsStore(spec.store_dir())
    runs = expand(spec)
    assert len(runs) == 4

    killed = _kill_during_second_run(spec_path, store.root)
    first = store.finished_ids()
    assert len(first) == 1 and killed not in first
    first_id = next(iter(first))
    first_result = (store.run_dir(first_id) / "result.json").read_bytes()
    assert not store.is_finished(killed)  # the killed run left no result

    # `plan` sees one finished, one interrupted, two pending.
    assert main(["sweep", "plan", str(spec_path)]) == 0
    out = capsys.readouterr().out
    assert "1 finished, 1 interrupted (restart), 2 pending" in out

    # Leftover of a table write cut short (as atomic_path names its temp files).
    (store.root / ".results.parquet.abc123.tmp").write_bytes(b"partial")
    # Rerun (in process): only the three unfinished runs are trained.
    assert main(["sweep", "run", str(spec_path), "--no-progress"]) == 0
    assert "3 run(s) finished now, 1 earlier, 0 failed" in capsys.readouterr().out
    assert (store.run_dir(first_id) / "result.json").read_bytes() == first_result  # not retrained
    assert not list(store.root.glob("**/*.tmp"))

    df = pd.read_parquet(store.root / "results.parquet")
    assert list(df.columns) == list(COLUMNS)
    # Each run exactly once: 4 runs, and no (run, benchmark, metric) row twice.
    assert set(df["run_id"]) == {r.run_id for r in runs}
    assert not df.duplicated(["run_id", "benchmark", "metric"]).any()
    per_run = df.groupby("run_id").size()
    assert per_run.nunique() == 1 and per_run.iloc[0] >= 3
    con = sqlite3.connect(store.root / "results.sqlite")
    assert con.execute("select count(*) from results").fetchone()[0] == len(df)

    # The table describes the factors and the measurements.
    bench = df[df["group"] != "diag"]
    assert set(bench["group"]) <= {"mc", "gen"} and {"builtin_mc", "builtin_gen"} <= set(bench["benchmark"])
    assert ((bench["score"] >= 0) & (bench["score"] <= 1)).all()
    assert set(df["plw"]) == {0.0, 1.0} and set(df["wp"]) == {0.0, 1.0}
    ratios = df.groupby("dataset")["ratio"].first()
    assert ratios["builtin:short?n=48"] < 1 < ratios["builtin:long?n=48"]  # short vs long completions
    assert (df["train_tokens"] > 0).all() and (df["wall_time_s"] > 0).all()
    for col in ("weight_l2", "memorization_bleu", "generation_length", "val_completion_nll"):
        assert df[col].notna().all(), col
    diag = df[df["group"] == "diag"]
    assert {"weight_l2", "memorization_bleu", "generation_length"} <= set(diag["metric"])
    result = json.loads((store.run_dir(killed) / "result.json").read_text())
    assert result["config_hash"].startswith(killed) and result["train_config"]["prompt_loss_weight"] in (0.0, 1.0)

    # A third invocation has nothing to do; `plw results` shows and exports the same table.
    assert main(["sweep", "run", str(spec_path), "--no-progress"]) == 0
    assert "0 run(s) finished now, 4 earlier" in capsys.readouterr().out
    csv = spec_path.parent / "out" / "table.csv"
    assert main(["results", str(spec_path), "--csv", str(csv), "--parquet", str(csv.with_suffix(".parquet"))]) == 0
    assert f"{len(df)} rows, 4 runs" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(csv.with_suffix(".parquet")), df)
    assert len(pd.read_csv(csv)) == len(df)


def test_interrupted_run_resumes_from_its_checkpoint(tiny_spec):
    """Killed after the second run saved a complete checkpoint: the rerun resumes from it."""
    spec_path = tiny_spec(name="ckpt", plw=[0.0, 1.0], datasets=["builtin:short?n=64"],
                          train_extra={"save_steps": 1})
    spec = load_spec(spec_path)
    store = ResultsStore(spec.store_dir())
    killed = _kill_during_second_run(spec_path, store.root, after="train/checkpoint-*/trainer_state.json")
    assert main(["sweep", "run", str(spec_path), "--no-progress"]) == 0
    result = json.loads((store.run_dir(killed) / "result.json").read_text())
    assert result["metrics"]["resumed_from"], "the interrupted run did not resume from its checkpoint"
    assert not list((store.run_dir(killed) / "train").glob("checkpoint-*"))  # pruned once finished
    df = pd.read_parquet(store.root / "results.parquet")
    assert df["run_id"].nunique() == 2 and not df.duplicated(["run_id", "benchmark", "metric"]).any()
