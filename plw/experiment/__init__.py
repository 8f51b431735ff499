"""plw.experiment: factorial PLW sweeps (`plw sweep plan|run`) and their results store (`plw results`).

spec (YAML → `SweepSpec`) → grid (`expand` → `Run`s with stable IDs) → runner (one run loop,
`schedule`, with a local or a Ray executor; `execute` = train → evaluate → rows) → `plw.results`
store (per-run `result.json` → `results.parquet` + `results.sqlite`, rebuilt atomically), which
`plw.analysis` reads. `ResultsStore`, `read_table` and `COLUMNS` are re-exported from there.

Light to import: each name loads its module on first use.
"""

__all__ = ["SweepSpec", "load_spec", "Run", "expand", "run_sweep", "SweepOutcome", "ResultsStore",
           "read_table", "COLUMNS", "plan"]

_LAZY = {"SweepSpec": "plw.experiment.spec", "load_spec": "plw.experiment.spec",
         "Run": "plw.experiment.grid", "expand": "plw.experiment.grid",
         "run_sweep": "plw.experiment.runner", "SweepOutcome": "plw.experiment.runner",
         "ResultsStore": "plw.results.store", "read_table": "plw.results.store",
         "COLUMNS": "plw.results.schema", "plan": "plw.experiment.plan"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'plw.experiment' has no attribute {name!r}")
