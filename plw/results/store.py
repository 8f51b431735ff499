"""The results store: per-run result files, and the tidy table rebuilt from them.

Below both `plw.experiment` (which writes it) and `plw.analysis` (which reads it).

    <store>/
      spec.yaml                  the validated sweep spec (as last run)
      grid.json                  the run IDs of that spec's grid (the runs the table holds)
      results.parquet            the tidy table (one row per run × benchmark metric)
      results.sqlite             the same table, table name `results`
      runs/<run_id>/config.yaml  the run's canonical config and resolved TrainConfig
      runs/<run_id>/train/       the trainer's output directory
      runs/<run_id>/result.json  written last and atomically: its presence means "finished"

Exactly-once: a run's rows exist only in its own `result.json`, which appears atomically (temp
file + rename) after the run finished. The table files are rebuilt from all `result.json` files
and replaced atomically, so `kill -9` at any moment leaves either the old or the new table, and
a rerun can never add a run twice. `result.json` files are the source of truth.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from plw.errors import PLWError
from plw.io import atomic_path, write_json_atomic, write_text_atomic
from plw.results.schema import (COLUMNS, DIAGNOSTICS, GRID_FILE, GROUPS, RESULT_FILE, SPEC_FILE,  # noqa: F401
                                TABLE_PARQUET, TABLE_SQLITE, normalise_row, rows_to_frame)


class ResultsStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # ---- per-run folders -----------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def is_finished(self, run_id: str) -> bool:
        return (self.run_dir(run_id) / RESULT_FILE).is_file()

    def finished_ids(self) -> set[str]:
        runs = self.root / "runs"
        if not runs.is_dir():
            return set()
        return {p.parent.name for p in runs.glob(f"*/{RESULT_FILE}")}

    def grid_ids(self) -> set[str] | None:
        """Run IDs of the grid of the sweep last run here (`grid.json`), None without one."""
        path = self.root / GRID_FILE
        if not path.is_file():
            return None
        return set(_read_json(path))

    def write_spec(self, spec: dict[str, Any], run_ids: list[str]) -> None:
        """Record the sweep about to run: its validated spec and its grid's run IDs (which the
        table holds; written here so readers need not expand the spec)."""
        import yaml

        write_text_atomic(self.root / SPEC_FILE, yaml.safe_dump(spec, sort_keys=False))
        write_json_atomic(self.root / GRID_FILE, sorted(run_ids))

    def table_ids(self) -> set[str]:
        """The runs the table holds: finished runs of the current grid. Finished runs of an earlier
        version of the spec stay on disk (and come back if the spec does) but are left out, so
        the table never mixes two configurations of one cell."""
        finished, grid = self.finished_ids(), self.grid_ids()
        return finished if grid is None else finished & grid

    def prepare_run_dir(self, run_id: str, *, keep: tuple[str, ...] = ()) -> Path:
        """A clean folder for a run that has not finished: leftovers of an interrupted attempt are
        removed, except the entries named in `keep` (e.g. the trainer's checkpoints, to resume)."""
        path = self.run_dir(run_id)
        if (path / RESULT_FILE).exists():
            raise RuntimeError(f"run {run_id} has already finished")
        if path.exists():
            for child in path.iterdir():
                if child.name in keep:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_result(self, run_id: str, result: dict[str, Any]) -> Path:
        """Atomically mark a run finished with its rows (validated against the table contract)."""
        rows = [normalise_row(r) for r in result["rows"]]
        if any(r["run_id"] != run_id for r in rows):
            raise ValueError("every row of a run must carry its run_id")
        path = self.run_dir(run_id) / RESULT_FILE
        write_json_atomic(path, {**result, "rows": rows})
        return path

    def read_result(self, run_id: str) -> dict[str, Any]:
        return _read_json(self.run_dir(run_id) / RESULT_FILE)

    # ---- the tidy table -----------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """All rows of the table's runs (`table_ids`), in run-ID order (deterministic)."""
        out: list[dict[str, Any]] = []
        for run_id in sorted(self.table_ids()):
            out.extend(self.read_result(run_id)["rows"])
        return out

    def dataframe(self):
        """The tidy table as a pandas DataFrame with the contract's columns and dtypes."""
        return rows_to_frame(self.rows())

    def rebuild(self):
        """Rewrite results.parquet and results.sqlite from the result files (each atomically)."""
        df = self.dataframe()
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.root / TABLE_PARQUET) as tmp:
            df.to_parquet(tmp, index=False)
        with atomic_path(self.root / TABLE_SQLITE) as tmp:
            _write_sqlite(df, tmp)
        return df

    def is_stale(self) -> bool:
        """True when the table does not reflect the result files: a result file is newer (killed
        between the two writes) or the set of runs differs (e.g. a run folder was deleted)."""
        import pandas as pd

        table = self.root / TABLE_PARQUET
        finished = self.table_ids()
        if not table.exists():
            return bool(finished)
        t = table.stat().st_mtime
        if any((self.run_dir(i) / RESULT_FILE).stat().st_mtime > t for i in finished):
            return True
        return set(pd.read_parquet(table, columns=["run_id"])["run_id"]) != finished

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One writer per store. The OS drops the lock when its holder dies (even by kill -9)."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PLWError("another `plw sweep run` is using this results store",
                               file=str(self.root)) from None
            yield
        finally:
            os.close(fd)


def read_table(path: str | os.PathLike):
    """The tidy table of a store directory (rebuilt from result files when stale) or a results file."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        store = ResultsStore(path)
        if not (path / "runs").is_dir() and not (path / TABLE_PARQUET).exists():
            raise PLWError("not a results store (no runs/ or results.parquet)", file=str(path))
        if store.is_stale() or not (path / TABLE_PARQUET).exists():
            return store.dataframe()  # read-only: rebuilt in memory from the result files
        return pd.read_parquet(path / TABLE_PARQUET)
    if not path.exists():
        raise PLWError("no such file or directory", file=str(path))
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise PLWError("expected a results store directory, a .parquet or a .csv file", file=str(path))


def _write_sqlite(df, path: Path) -> None:
    import sqlite3

    if path.exists():
        path.unlink()  # atomic_path creates an empty file; sqlite wants its own
    con = sqlite3.connect(path)
    try:
        out = df.astype(object).where(df.notna(), None)
        out.to_sql("results", con, index=False, if_exists="replace",
                   dtype={c: {"str": "TEXT", "int": "INTEGER", "float": "REAL"}[k] for c, k in COLUMNS.items()})
        con.execute("CREATE INDEX IF NOT EXISTS results_run ON results(run_id)")
        con.commit()
    finally:
        con.close()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:  # cannot happen via write_json_atomic; a hand edit can
        raise PLWError(f"corrupt result file: {err.msg}", file=str(path), line=err.lineno) from None
