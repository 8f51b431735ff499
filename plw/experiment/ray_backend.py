"""Ray backend: one Ray task per run, with the run's CPU/GPU needs declared to the scheduler.

Workers train and evaluate and return the result dict; the driver (this process) alone writes
the store, so exactly-once holds as in the local runner. On a cluster, set `ray.address: auto`
(or `RAY_ADDRESS`) and put the store on a filesystem every node can reach, since each worker
writes its run's training outputs under `<store>/runs/<run_id>/`.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Iterator

from plw.experiment.grid import Run
from plw.experiment.spec import SweepSpec


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


class RayExecutor:
    """Runs jobs as Ray tasks, at most `ray.max_concurrent` at once (see `runner.schedule`)."""

    def __init__(self, spec: SweepSpec, *, execute_fn=None):
        self.spec, self.execute_fn = spec, execute_fn

    def results(self, jobs: Iterator) -> Iterator[tuple[Any, dict | None, BaseException | None]]:
        import ray

        jobs = iter(jobs)
        first = next(jobs, None)
        if first is None:  # nothing to run: do not start Ray
            return
        jobs = itertools.chain([first], jobs)
        started = init_ray(self.spec)
        pending: dict[Any, Any] = {}
        try:
            remote = ray.remote(num_cpus=self.spec.ray.num_cpus_per_run, num_gpus=self.spec.ray.num_gpus_per_run,
                                max_retries=0)(_task)
            limit = self.spec.ray.max_concurrent or float("inf")
            while True:
                while len(pending) < limit:
                    job = next(jobs, None)
                    if job is None:
                        break
                    ref = remote.remote(job.run, str(job.run_dir.resolve()), job.data_source,
                                        self.spec.ray.num_cpus_per_run, self.execute_fn)
                    pending[ref] = job
                if not pending:
                    return
                ready, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except Exception as err:  # RayTaskError wraps the worker's exception
                    yield job, None, getattr(err, "cause", None) or err
                else:
                    yield job, result, None
        finally:  # also when the scheduler stops early (fail_fast): cancel what is left
            for ref in pending:
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()
