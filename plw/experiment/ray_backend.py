"""Ray backend: one Ray task per run, with the run's CPU/GPU needs declared to the scheduler.

Workers train and evaluate and return the result dict; the driver (this process) alone writes
the store, so exactly-once holds as in the local runner. On a cluster, set `ray.address: auto`
(or `RAY_ADDRESS`) and put the store on a filesystem every node can reach, since each worker
writes its run's training outputs under `<store>/runs/<run_id>/`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from plw.experiment.grid import Run
from plw.experiment.spec import SweepSpec
from plw.experiment.store import ResultsStore


def _task(run: Run, run_dir: str, data_source: str, num_cpus: float, execute_fn=None) -> dict[str, Any]:
    """Body of one Ray task (runs in a worker process)."""
    import torch

    # As many torch threads as CPUs declared, so concurrent runs do not oversubscribe a node.
    torch.set_num_threads(max(1, int(num_cpus)))
    if execute_fn is None:
        from plw.experiment.execute import execute as execute_fn
    return execute_fn(run, run_dir, data_source=data_source, progress=False)


def init_ray(spec: SweepSpec) -> bool:
    """Connect to a cluster (`ray.address` or RAY_ADDRESS) or start a local instance.
    Returns True when this call started Ray (and so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = spec.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    return True


def run_on_ray(spec: SweepSpec, store: ResultsStore, todo: list[Run], outcome, *, console,
               fail_fast: bool = False, execute_fn=None) -> None:
    import ray

    from plw.experiment.runner import _fmt_s, _record_failure, _summary, data_source, describe, prepare, prune

    if not todo:
        return
    started = init_ray(spec)
    try:
        remote = ray.remote(num_cpus=spec.ray.num_cpus_per_run, num_gpus=spec.ray.num_gpus_per_run,
                            max_retries=0)(_task)
        limit = spec.ray.max_concurrent or len(todo)
        pending: dict[Any, Run] = {}
        queue = list(todo)
        t0 = time.time()
        done = 0

        def submit() -> None:
            while queue and len(pending) < limit:
                run = queue.pop(0)
                run_dir = prepare(store, run)
                ref = remote.remote(run, str(run_dir.resolve()), data_source(run), spec.ray.num_cpus_per_run,
                                    execute_fn)
                pending[ref] = run
                console.print(f"  submitted {describe(run)}")

        submit()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            run = pending.pop(ref)
            done += 1
            try:
                result = ray.get(ref)
            except Exception as err:  # RayTaskError wraps the worker's exception
                cause = getattr(err, "cause", None) or err
                _record_failure(store.run_dir(run.run_id), cause, outcome, run, console)
                if fail_fast:
                    queue.clear()
                    for r in list(pending):
                        ray.cancel(r, force=True)
                    pending.clear()
                    break
            else:
                store.write_result(run.run_id, result)
                store.rebuild()
                prune(store, run, spec.keep)
                outcome.finished.append(run.run_id)
                console.print(f"[{done}/{len(todo)}, {_fmt_s(time.time() - t0)}] finished {run.run_id}: "
                              + _summary(result))
            submit()
    finally:
        if started:
            ray.shutdown()
