"""`plw sweep run`: train and evaluate every unfinished cell, locally or on Ray, resumably.

The driver alone writes the store (one writer, guarded by a file lock): after each run finishes
its `result.json` is written atomically, then the table is rebuilt atomically from all result
files. Finished runs are skipped on the next invocation; an unfinished run's folder is cleared
and the run starts again (keeping complete trainer checkpoints, from which `train` resumes).
"""

from __future__ import annotations

import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from plw.errors import PLWError
from plw.experiment.grid import Run, expand
from plw.experiment.spec import SweepSpec
from plw.io import write_text_atomic
from plw.results.store import ResultsStore
from plw.ui import console as ui_console, fmt_seconds


@dataclass
class SweepOutcome:
    store_dir: Path
    finished: list[str] = field(default_factory=list)   # run IDs completed by this invocation
    skipped: list[str] = field(default_factory=list)    # already finished before
    failed: dict[str, str] = field(default_factory=dict)  # run ID → one-line error
    analysis_dir: Path | None = None
    analysis_note: str | None = None


def run_sweep(spec: SweepSpec, *, backend: str | None = None, progress: bool = True,
              console=None, fail_fast: bool = False,
              execute_fn: Callable[..., dict] | None = None) -> SweepOutcome:
    """Run every unfinished cell of `spec`; return what happened. Safe to call again after a crash.
    (`plw sweep run` then analyses the table: `plw.experiment.commands.analyse_sweep`.)"""
    console = console or ui_console(stderr=True)
    backend = backend or spec.backend
    store = ResultsStore(spec.store_dir())
    runs = expand(spec)
    outcome = SweepOutcome(store_dir=store.root)
    with store.lock():
        for tmp in store.root.glob(".*.tmp"):  # temp files of writes cut short by a kill
            tmp.unlink()
        store.write_spec(spec.model_dump(mode="json"), [r.run_id for r in runs])
        # The result files are the truth: catch up after a kill between a result file and the
        # table rebuild, or after run folders were deleted by hand to rerun them.
        store.rebuild()
        todo = [r for r in runs if not store.is_finished(r.run_id)]
        outcome.skipped = [r.run_id for r in runs if store.is_finished(r.run_id)]
        stray = store.finished_ids() - {r.run_id for r in runs}  # left out of the table
        console.print(f"[bold]sweep {spec.name}[/]: {len(runs)} runs, {len(outcome.skipped)} already "
                      f"finished, {len(todo)} to run → {store.root}")
        if stray:
            console.print(f"[yellow]note[/]: {len(stray)} finished run(s) in the store are not in this "
                          "spec's grid (an earlier version of it?); they stay on disk, out of the table")
        if backend == "ray":
            from plw.experiment.ray_backend import RayExecutor

            executor = RayExecutor(spec, execute_fn=execute_fn)
        else:
            if spec.threads and todo:
                import torch

                torch.set_num_threads(spec.threads)
            executor = LocalExecutor(execute_fn=execute_fn, progress=progress)
        schedule(store, todo, outcome, executor, console=console, fail_fast=fail_fast, keep=spec.keep)
        store.rebuild()
    if outcome.failed:
        console.print(f"[red]{len(outcome.failed)} run(s) failed[/] (rerun to retry): "
                      + "; ".join(f"{k}: {v}" for k, v in outcome.failed.items()))
    return outcome


def prepare(store: ResultsStore, run: Run) -> Path:
    """Clear what an interrupted attempt left behind, keeping complete trainer checkpoints."""
    path = store.run_dir(run.run_id)
    train_dir = path / "train"
    keep: tuple[str, ...] = ()
    if run.train_overrides.get("resume", True) and train_dir.is_dir():
        for ckpt in train_dir.glob("checkpoint-*"):
            # A checkpoint cut short by kill -9 lacks trainer_state.json (HF writes it last).
            if not (ckpt / "trainer_state.json").is_file():
                shutil.rmtree(ckpt)
        if any(train_dir.glob("checkpoint-*")):
            keep = ("train",)
    return store.prepare_run_dir(run.run_id, keep=keep)


def data_source(run: Run) -> str:
    """Local dataset paths made absolute (a Ray worker's working directory may differ)."""
    src = run.dataset.source
    path = Path(src)
    return str(path.resolve()) if path.exists() else src


def describe(run: Run) -> str:
    return (f"{run.run_id}  model={run.model}  data={run.dataset.name}  PLW={run.plw:g}  "
            f"reg={run.regularizer.name}  seed={run.seed}")


def prune(store: ResultsStore, run: Run, keep: str) -> None:
    """Free disk after a run finished (its rows are safe in result.json): see `SweepSpec.keep`."""
    if keep == "all":
        return
    train_dir = store.run_dir(run.run_id) / "train"
    if not train_dir.is_dir():
        return
    for ckpt in train_dir.glob("checkpoint-*"):
        shutil.rmtree(ckpt, ignore_errors=True)
    if keep == "none":
        for f in train_dir.iterdir():
            if f.is_file() and (f.suffix in (".safetensors", ".bin", ".pt") or f.name.endswith(".index.json")):
                f.unlink()


@dataclass(frozen=True)
class Job:
    """One run handed to an executor: its prepared folder and its data source."""

    run: Run
    run_dir: Path
    data_source: str


class LocalExecutor:
    """Runs jobs one after another in this process."""

    def __init__(self, *, execute_fn: Callable[..., dict] | None = None, progress: bool = True):
        self.execute_fn, self.progress = execute_fn, progress

    def results(self, jobs: Iterator[Job]) -> Iterator[tuple[Job, dict | None, BaseException | None]]:
        from plw.experiment.execute import execute

        execute_fn = self.execute_fn or execute
        for job in jobs:
            try:
                result = execute_fn(job.run, job.run_dir, data_source=job.data_source, progress=self.progress)
            except Exception as err:  # one failed cell must not lose the others; it reruns next time
                yield job, None, err
            else:
                yield job, result, None


def schedule(store: ResultsStore, todo: list[Run], outcome: SweepOutcome, executor, *, console,
             fail_fast: bool = False, keep: str = "weights") -> None:
    """The run loop, for every executor: hand out prepared jobs, then record each result as it
    comes back (the driver alone writes the store). `executor.results(jobs)` pulls a job when it
    can start it and yields `(job, result, error)` as runs end; closing it cancels the rest."""
    t0 = time.time()
    done = 0

    def jobs() -> Iterator[Job]:
        for i, run in enumerate(todo, 1):
            eta = ""
            if done:
                eta = f" (≈{fmt_seconds((time.time() - t0) / done * (len(todo) - done))} left)"
            # The ETA before the run's description, which a narrow terminal cuts.
            console.rule(f"[bold]run {i}/{len(todo)}[/]{eta} {describe(run)}", align="left")
            yield Job(run, prepare(store, run), data_source(run))

    results = executor.results(jobs())
    try:
        for job, result, err in results:
            done += 1
            if err is not None:
                record_failure(job.run_dir, err, outcome, job.run, console)
                if fail_fast:
                    break
                continue
            store.write_result(job.run.run_id, result)
            store.rebuild()
            prune(store, job.run, keep)
            outcome.finished.append(job.run.run_id)
            console.print(f"  [{done}/{len(todo)}, {fmt_seconds(time.time() - t0)}] finished "
                          f"{job.run.run_id}: " + summary(result))
    finally:
        results.close()


def record_failure(run_dir: Path, err: BaseException, outcome: SweepOutcome, run: Run, console) -> None:
    """Note a failed run in the outcome, its traceback in `error.txt` and one line on the console."""
    msg = err.one_line() if isinstance(err, PLWError) else f"{type(err).__name__}: {err}".splitlines()[0]
    outcome.failed[run.run_id] = msg
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    write_text_atomic(run_dir / "error.txt", tb)
    console.print(f"  [red]failed[/]: {msg} (traceback in {run_dir / 'error.txt'})")


def summary(result: dict[str, Any]) -> str:
    """A run's R_g and first scores, on one line."""
    parts = [f"R_g={result.get('ratio', float('nan')):.3g}"]
    for r in result["rows"]:
        if r["group"] != "diag":
            parts.append(f"{r['benchmark']}/{r['metric']}={r['score']:.3g}")
    return "  ".join(parts[:8])
