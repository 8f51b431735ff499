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
from typing import Any, Callable

import yaml

from plw.errors import PLWError
from plw.experiment.grid import Run, expand
from plw.experiment.spec import SweepSpec
from plw.experiment.store import SPEC_FILE, ResultsStore
from plw.io import write_text_atomic


@dataclass
class SweepOutcome:
    store_dir: Path
    finished: list[str] = field(default_factory=list)   # run IDs completed by this invocation
    skipped: list[str] = field(default_factory=list)    # already finished before
    failed: dict[str, str] = field(default_factory=dict)  # run ID → one-line error
    analysis_dir: Path | None = None
    analysis_note: str | None = None


def run_sweep(spec: SweepSpec, *, backend: str | None = None, progress: bool = True,
              console=None, fail_fast: bool = False, analysis: bool | None = None,
              execute_fn: Callable[..., dict] | None = None) -> SweepOutcome:
    """Run every unfinished cell of `spec`; return what happened. Safe to call again after a crash."""
    from rich.console import Console

    console = console or Console(stderr=True)
    backend = backend or spec.backend
    store = ResultsStore(spec.store_dir())
    runs = expand(spec)
    outcome = SweepOutcome(store_dir=store.root)
    with store.lock():
        for tmp in store.root.glob(".*.tmp"):  # temp files of writes cut short by a kill
            tmp.unlink()
        write_text_atomic(store.root / SPEC_FILE,
                          yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
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
            from plw.experiment.ray_backend import run_on_ray

            run_on_ray(spec, store, todo, outcome, console=console, fail_fast=fail_fast,
                       execute_fn=execute_fn)
        else:
            if spec.threads and todo:
                import torch

                torch.set_num_threads(spec.threads)
            _run_local(store, todo, outcome, console=console, progress=progress,
                       fail_fast=fail_fast, execute_fn=execute_fn, keep=spec.keep)
        store.rebuild()
    if outcome.failed:
        console.print(f"[red]{len(outcome.failed)} run(s) failed[/] (rerun to retry): "
                      + "; ".join(f"{k}: {v}" for k, v in outcome.failed.items()))
    if (spec.analysis if analysis is None else analysis) and not outcome.failed:
        _analyse(store, outcome, console)
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


def _run_local(store: ResultsStore, todo: list[Run], outcome: SweepOutcome, *, console, progress: bool,
               fail_fast: bool, execute_fn, keep: str = "weights") -> None:
    from plw.experiment.execute import execute

    execute_fn = execute_fn or execute
    durations: list[float] = []
    for i, run in enumerate(todo, 1):
        eta = ""
        if durations:
            eta = f"  (≈{_fmt_s(sum(durations) / len(durations) * (len(todo) - i + 1))} left)"
        console.rule(f"[bold]run {i}/{len(todo)}[/] {describe(run)}{eta}", align="left")
        t0 = time.time()
        run_dir = prepare(store, run)
        try:
            result = execute_fn(run, run_dir, data_source=data_source(run), progress=progress)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # one failed cell must not lose the others; it reruns next time
            _record_failure(run_dir, err, outcome, run, console)
            if fail_fast:
                break
            continue
        store.write_result(run.run_id, result)
        store.rebuild()
        prune(store, run, keep)
        durations.append(time.time() - t0)
        outcome.finished.append(run.run_id)
        console.print(f"  finished in {_fmt_s(durations[-1])}: " + _summary(result))


def _record_failure(run_dir: Path, err: BaseException, outcome: SweepOutcome, run: Run, console) -> None:
    msg = err.one_line() if isinstance(err, PLWError) else f"{type(err).__name__}: {err}".splitlines()[0]
    outcome.failed[run.run_id] = msg
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    write_text_atomic(run_dir / "error.txt", tb)
    console.print(f"  [red]failed[/]: {msg} (traceback in {run_dir / 'error.txt'})")


def _summary(result: dict[str, Any]) -> str:
    parts = [f"R_g={result.get('ratio', float('nan')):.3g}"]
    for r in result["rows"]:
        if r["group"] != "diag":
            parts.append(f"{r['benchmark']}/{r['metric']}={r['score']:.3g}")
    return "  ".join(parts[:8])


def _analyse(store: ResultsStore, outcome: SweepOutcome, console) -> None:
    try:
        from plw.analysis import analyze_results  # type: ignore[attr-defined]
    except ImportError:
        outcome.analysis_note = "plw.analysis.analyze_results is not available; analysis skipped"
        console.print(f"[yellow]note[/]: {outcome.analysis_note}")
        return
    out = store.root / "analysis"
    console.rule("[bold]analysis[/]", align="left")
    try:
        analysis = analyze_results(store.root, out, progress=True)
    except Exception as err:  # the runs are safe in the table; say why the report is missing
        msg = err.one_line() if isinstance(err, PLWError) else f"{type(err).__name__}: {err}"
        outcome.analysis_note = f"analysis failed: {msg} (rerun it with `plw analyze {store.root}`)"
        console.print(f"[yellow]note[/]: {outcome.analysis_note}", soft_wrap=True)
        return
    outcome.analysis_dir = out
    for line in _conclusions(analysis):
        console.print(f"• {line}", soft_wrap=True)
    console.print(f"analysis report → {out / 'report.html'}")


def _conclusions(analysis: dict) -> list[str]:
    """One plain-language line per dataset group (from plw.analysis), for the end of a sweep."""
    try:
        from plw.analysis.analyze import conclusion
    except ImportError:
        return []
    return [g.get("conclusion") or conclusion(name, g) for name, g in analysis.get("groups", {}).items()]


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
