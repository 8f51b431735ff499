"""Ray backend: one task per run on a small local Ray instance (CPU), same store semantics.

Ray ≥ 2.4x removed `local_mode`, so this starts a real single-node instance with 2 CPUs.
The sweep includes a prompt-inverted dataset, whose R_g is recorded per run.
"""

from __future__ import annotations

import pandas as pd
import pytest

from plw.experiment.grid import expand
from plw.experiment.runner import run_sweep
from plw.experiment.spec import load_spec

ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield
    ray.shutdown()


def test_ray_backend_runs_each_cell_once(tiny_spec, local_ray):
    spec_path = tiny_spec(plw=[1.0], backend="ray",
                          datasets=["builtin:long?n=48", "invert(builtin:long?n=48, target_ratio=0.5)"],
                          ray={"num_cpus_per_run": 1, "num_gpus_per_run": 0})
    spec = load_spec(spec_path)
    outcome = run_sweep(spec, progress=False)
    runs = expand(spec)
    assert sorted(outcome.finished) == sorted(r.run_id for r in runs) and not outcome.failed
    df = pd.read_parquet(outcome.store_dir / "results.parquet")
    assert set(df["run_id"]) == {r.run_id for r in runs}
    assert not df.duplicated(["run_id", "benchmark", "metric"]).any()
    ratio = df.groupby("dataset")["ratio"].first()
    original, inverted = ratio["builtin:long?n=48"], ratio["invert(builtin:long?n=48, target_ratio=0.5)"]
    assert original > 1 > inverted  # inversion turned long completions into short ones
    # The inverted data were materialised beside the run, as the trainer read them.
    inv = next(r for r in runs if r.dataset.invert)
    assert (outcome.store_dir / "runs" / inv.run_id / "data.jsonl").is_file()

    again = run_sweep(spec, progress=False)  # resumable on Ray too: nothing left to do
    assert again.finished == [] and sorted(again.skipped) == sorted(outcome.finished)
