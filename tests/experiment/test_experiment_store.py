"""Results store: contract columns, atomic per-run results, table rebuilt exactly once per run."""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from plw.errors import PLWError
from plw.results.store import COLUMNS, ResultsStore, read_table


def _rows(run_id: str, n: int = 2, **extra):
    base = {"run_id": run_id, "config_hash": run_id * 2, "model": "m", "dataset": "d", "ratio": 0.5,
            "plw": 0.1, "wp": 0.5, "regularizer": "none", "seed": 1, "loss_rsd": 0.01,
            "wall_time_s": 3.0, "train_tokens": 1234, **extra}
    return [{**base, "benchmark": f"b{i}", "metric": "acc", "score": i / 10, "group": "mc"}
            for i in range(n)]


def _finish(store: ResultsStore, run_id: str, n: int = 2):
    store.prepare_run_dir(run_id)
    store.write_result(run_id, {"run_id": run_id, "rows": _rows(run_id, n)})


def test_table_has_contract_columns_and_types(tmp_path):
    store = ResultsStore(tmp_path / "s")
    _finish(store, "aaa")
    _finish(store, "bbb", 3)
    df = store.rebuild()
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 5 and df["run_id"].value_counts().to_dict() == {"aaa": 2, "bbb": 3}
    assert df["seed"].dtype == "int64" and df["train_tokens"].dtype == "int64"
    assert df["score"].dtype == "float64"
    # Unmeasured diagnostics are NaN, repeated on every row of the run.
    assert df["memorization_bleu"].isna().all() and (df["loss_rsd"] == 0.01).all()
    pq = pd.read_parquet(tmp_path / "s" / "results.parquet")
    pd.testing.assert_frame_equal(pq, df)
    con = sqlite3.connect(tmp_path / "s" / "results.sqlite")
    rows = con.execute("select run_id, benchmark, score, memorization_bleu from results order by run_id, benchmark").fetchall()
    assert rows[0] == ("aaa", "b0", 0.0, None) and len(rows) == 5
    assert con.execute("select count(distinct run_id) from results").fetchone() == (2,)


def test_rebuild_is_idempotent_and_never_duplicates(tmp_path):
    store = ResultsStore(tmp_path / "s")
    _finish(store, "aaa")
    for _ in range(3):
        df = store.rebuild()
    assert len(df) == 2
    with pytest.raises(RuntimeError, match="already finished"):
        store.prepare_run_dir("aaa")  # a finished run is never started again


def test_prepare_clears_an_interrupted_run(tmp_path):
    store = ResultsStore(tmp_path / "s")
    d = store.prepare_run_dir("ccc")
    (d / "train").mkdir()
    (d / "train" / "half.bin").write_bytes(b"x")
    (d / "config.yaml").write_text("x")
    (d / "keepme").mkdir()
    d2 = store.prepare_run_dir("ccc", keep=("keepme",))
    assert d2 == d and sorted(p.name for p in d.iterdir()) == ["keepme"]
    assert not store.is_finished("ccc") and store.finished_ids() == set()


def test_stale_table_is_read_from_result_files(tmp_path):
    store = ResultsStore(tmp_path / "s")
    _finish(store, "aaa")
    store.rebuild()
    assert not store.is_stale()
    _finish(store, "bbb")  # as if killed after result.json but before the rebuild
    past = (tmp_path / "s" / "results.parquet").stat().st_mtime - 5
    os.utime(tmp_path / "s" / "results.parquet", (past, past))
    assert store.is_stale()
    df = read_table(tmp_path / "s")  # read-only: the result files are the truth
    assert set(df["run_id"]) == {"aaa", "bbb"} and store.is_stale()
    store.rebuild()  # what the next `plw sweep run` does first
    assert not store.is_stale()
    assert set(pd.read_parquet(tmp_path / "s" / "results.parquet")["run_id"]) == {"aaa", "bbb"}


def test_result_rows_are_validated(tmp_path):
    store = ResultsStore(tmp_path / "s")
    store.prepare_run_dir("r")
    with pytest.raises(ValueError, match="group"):
        store.write_result("r", {"rows": [{**_rows("r")[0], "group": "bench"}]})
    with pytest.raises(ValueError, match="unknown columns"):
        store.write_result("r", {"rows": [{**_rows("r")[0], "accuracy": 1}]})
    with pytest.raises(ValueError, match="run_id"):
        store.write_result("r", {"rows": _rows("other")})
    assert not store.is_finished("r")


def test_write_is_atomic_when_serialisation_fails(tmp_path):
    store = ResultsStore(tmp_path / "s")
    store.prepare_run_dir("r")
    with pytest.raises(TypeError):
        store.write_result("r", {"rows": _rows("r"), "bad": object()})
    assert not store.is_finished("r")
    assert [p.name for p in store.run_dir("r").iterdir()] == []  # no temp file left behind


def test_lock_allows_one_writer(tmp_path):
    store = ResultsStore(tmp_path / "s")
    with store.lock():
        with pytest.raises(PLWError, match="another"):
            with ResultsStore(tmp_path / "s").lock():
                pass
    with store.lock():  # released
        pass


def test_read_table_errors_and_csv(tmp_path):
    with pytest.raises(PLWError, match="not a results store"):
        read_table(tmp_path)
    with pytest.raises(PLWError, match="no such file"):
        read_table(tmp_path / "nope.csv")
    store = ResultsStore(tmp_path / "s")
    _finish(store, "aaa")
    df = store.rebuild()
    df.to_csv(tmp_path / "t.csv", index=False)
    back = read_table(tmp_path / "t.csv")
    assert len(back) == 2 and math.isnan(back["memorization_bleu"][0])


def test_prune_keeps_what_the_spec_says(tmp_path):
    from plw.experiment.grid import expand
    from plw.experiment.runner import prune
    from plw.experiment.spec import SweepSpec

    run = expand(SweepSpec(name="p", plw=[0.0], datasets=["builtin:short"]))[0]
    store = ResultsStore(tmp_path / "s")
    train = store.prepare_run_dir(run.run_id) / "train"
    (train / "checkpoint-10").mkdir(parents=True)
    (train / "checkpoint-10" / "optimizer.pt").write_bytes(b"x")
    for name in ("model.safetensors", "config.json", "metrics.json"):
        (train / name).write_text("x")
    prune(store, run, "all")
    assert (train / "checkpoint-10").exists()
    prune(store, run, "weights")
    assert sorted(p.name for p in train.iterdir()) == ["config.json", "metrics.json", "model.safetensors"]
    prune(store, run, "none")
    assert sorted(p.name for p in train.iterdir()) == ["config.json", "metrics.json"]


def test_deleted_run_folder_makes_table_stale(tmp_path):
    import shutil

    store = ResultsStore(tmp_path / "s")
    _finish(store, "aaa")
    _finish(store, "bbb")
    store.rebuild()
    shutil.rmtree(store.run_dir("bbb"))  # the documented way to rerun one run
    assert store.is_stale() and set(read_table(tmp_path / "s")["run_id"]) == {"aaa"}


def test_table_holds_the_current_grid_only(tmp_path):
    import yaml

    from plw.experiment.grid import expand
    from plw.experiment.spec import SweepSpec, load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "examples" / "sweep_regularizers.yaml")
    store = ResultsStore(tmp_path / "s")
    (tmp_path / "s").mkdir()
    ids = [r.run_id for r in expand(spec)]
    store.write_spec(spec.model_dump(mode="json"), ids)  # as `sweep run` does
    assert store.grid_ids() == set(ids)
    # The spec as saved reloads to the same run IDs (hash stable through the dump).
    saved = SweepSpec.model_validate(yaml.safe_load((tmp_path / "s" / "spec.yaml").read_text()))
    assert [r.run_id for r in expand(saved)] == ids
    _finish(store, ids[0])
    _finish(store, "0ld0ld0ld0ld")  # finished under an earlier version of the spec
    df = store.rebuild()
    assert set(df["run_id"]) == {ids[0]} and not store.is_stale()
    assert store.finished_ids() == {ids[0], "0ld0ld0ld0ld"}  # kept on disk
