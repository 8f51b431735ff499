"""`/v1/fine_tuning/jobs` and the legacy `/v1/fine-tunes` (being written).

Contract for other routers: a job's training metrics are plw train's `metrics.jsonl` in
`Settings.job_dir(job_id) / "run"`; `job_metrics(state, job_id)` reads them (one dict per logged
step: step, epoch, step_loss, loss, prompt_nll, completion_nll, eval_loss, eval_completion_nll…).
The same figures reach the API as `type="metrics"` events (`data`: step, train_loss, prompt_nll,
completion_nll, valid_loss) and as checkpoint metrics.
"""

from __future__ import annotations

from fastapi import APIRouter

from plw.serve.state import ServeState

router = APIRouter(prefix="/v1", tags=["fine-tuning"])


def run_dir(state: ServeState, job_id: str):
    """The job's `plw train` output directory."""
    return state.settings.job_dir(job_id) / "run"


def job_metrics(state: ServeState, job_id: str) -> list[dict]:
    """The job's metrics.jsonl rows (empty before its first step)."""
    import json

    path = run_dir(state, job_id) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line being written right now
            break
    return rows
