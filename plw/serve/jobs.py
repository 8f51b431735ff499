"""`/v1/fine_tuning/jobs` and the legacy `/v1/fine-tunes` (being written).

Contract for other routers: a job's training metrics are plw train's `metrics.jsonl` in
`Settings.job_dir(job_id) / "run"`; `job_metrics(state, job_id)` reads them (one dict per logged
step: step, epoch, step_loss, loss, prompt_nll, completion_nll, eval_loss, eval_completion_nll…).
The same figures reach the API as `type="metrics"` events (`data`: step, train_loss, prompt_nll,
completion_nll, valid_loss) and as checkpoint metrics.
"""

from __future__ import annotations

import math
import re
import secrets
from typing import Optional

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from plw.serve.auth import Caller, current_caller
from plw.serve.db import Checkpoint, Event, Job, new_id, now
from plw.serve.errors import APIError, not_found
from plw.serve.files import copy_file, get_file
from plw.serve.paging import cursor_page
from plw.serve.schemas import (CheckpointMetrics, FineTuningJob, Hyperparameters, JobCheckpoint, JobCreate,
                               JobError, JobEvent, JobHyperparameters, JobMethod, LegacyFineTuneCreate,
                               ListPage)
from plw.serve.state import ServeState

SUFFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")

router = APIRouter(prefix="/v1", tags=["fine-tuning"])


def run_dir(state: ServeState, job_id: str):
    """The job's `plw train` output directory."""
    return state.settings.job_dir(job_id) / "run"


def job_metrics(state: ServeState, job_id: str) -> list[dict]:
    """The job's metrics.jsonl rows (empty before its first step)."""
    from plw.serve.worker import read_rows

    return read_rows(run_dir(state, job_id) / "metrics.jsonl")


# ---- creating jobs -------------------------------------------------------------------------

RANGES = {"n_epochs": (1, 50), "batch_size": (1, 256), "learning_rate_multiplier": (0, 10),
          "prompt_loss_weight": (0, 1)}
ACTIVE = ("validating_files", "queued", "running")


def merge_hyperparameters(body: JobCreate) -> dict:
    """method.supervised.hyperparameters over hyperparameters over a top-level prompt_loss_weight."""
    hp: dict = {}
    if body.prompt_loss_weight is not None:
        hp["prompt_loss_weight"] = body.prompt_loss_weight
    layers = [body.hyperparameters]
    if body.method is not None and body.method.supervised is not None:
        layers.append(body.method.supervised.hyperparameters)
    for layer in layers:
        if layer is not None:
            hp.update({k: v for k, v in layer.model_dump().items() if v is not None})
    where = "method.supervised.hyperparameters" if len(layers) > 1 else "hyperparameters"
    for key, value in hp.items():
        lo, hi = RANGES[key]
        if value == "auto":
            continue
        if key in ("n_epochs", "batch_size") and float(value) != int(value):
            raise APIError(400, f"{key} must be an integer or 'auto'", param=f"{where}.{key}")
        ok = math.isfinite(value) and (lo < value <= hi if key == "learning_rate_multiplier" else lo <= value <= hi)
        if not ok:
            bounds = f"({lo}, {hi}]" if key == "learning_rate_multiplier" else f"[{lo}, {hi}]"
            raise APIError(400, f"{key} must be 'auto' or a number in {bounds}, got {value!r}",
                           param=f"{where}.{key}", code="invalid_hyperparameter")
    return hp


def create_job(caller: Caller, body: JobCreate) -> Job:
    settings = caller.state.settings
    if body.model not in settings.base_models:
        raise APIError(400, f"Model {body.model!r} is not available for fine-tuning; this server offers "
                            f"{', '.join(settings.base_models)}", param="model", code="model_not_available")
    if body.method is not None and body.method.type != "supervised":
        raise APIError(400, "only the supervised method is supported", param="method.type")
    if body.suffix is not None and not SUFFIX.fullmatch(body.suffix):
        raise APIError(400, "suffix may hold up to 64 letters, digits, - and _", param="suffix")
    hp = merge_hyperparameters(body)
    training = get_file(caller, body.training_file, "training_file")
    validation = get_file(caller, body.validation_file, "validation_file") if body.validation_file else None
    job_id = new_id("ftjob")
    job_dir = settings.job_dir(job_id)
    job_dir.mkdir(parents=True)
    # The job keeps its own copy: deleting the file later does not break a running or resumed job.
    copy_file(settings.file_path(training.id), job_dir / "train.jsonl")
    if validation is not None:
        copy_file(settings.file_path(validation.id), job_dir / "valid.jsonl")
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31 - 1)
    job = Job(id=job_id, project_id=caller.project_id, model=body.model, training_file=training.id,
              validation_file=validation.id if validation else None, suffix=body.suffix, seed=seed,
              hyperparameters=hp, metadata_=body.metadata, status="validating_files")
    with caller.state.db.session() as s:
        s.add(job)
        s.flush()
        add_event(s, job_id, "created", f"Created fine-tuning job: {job_id}")
        add_event(s, job_id, "validating", f"Validating training file: {training.id}"
                  + (f" and validation file: {validation.id}" if validation else ""))
    return job


def add_event(s: Session, job_id: str, key: str, message: str, *, level: str = "info", type: str = "message",
              data: dict | None = None) -> None:
    """An event inside an open session (for events that are new by construction)."""
    s.add(Event(id=new_id("ftevent"), job_id=job_id, key=key, level=level, type=type, message=message, data=data))


def job_object(job: Job, project_name: str) -> FineTuningJob:
    hp = {**{k: "auto" for k in ("n_epochs", "batch_size", "learning_rate_multiplier")},
          "prompt_loss_weight": 0.01, **(job.hyperparameters or {}), **((job.resolved or {}).get("hyperparameters") or {})}
    return FineTuningJob(
        id=job.id, created_at=job.created_at, error=JobError(**job.error) if job.error else None,
        fine_tuned_model=job.fine_tuned_model, finished_at=job.finished_at,
        hyperparameters=JobHyperparameters(**hp), model=job.model, organization_id=project_name,
        result_files=[], seed=job.seed, status=job.status, trained_tokens=job.trained_tokens,
        training_file=job.training_file, validation_file=job.validation_file,
        estimated_finish=None, metadata=job.metadata_, user_provided_suffix=job.suffix,
        method=JobMethod(supervised={"hyperparameters": hp}))


def job_view(caller: Caller, job_id: str) -> FineTuningJob:
    """The caller's job `job_id` in OpenAI's shape, or 404."""
    return job_object(get_job(caller, job_id), caller.project_name)


def get_job(caller: Caller, job_id: str) -> Job:
    with caller.state.db.session() as s:
        job = s.get(Job, job_id)
    if job is None or job.project_id != caller.project_id:
        raise not_found("fine-tuning job", job_id, "fine_tuning_job_id")
    return job


# ---- routes --------------------------------------------------------------------------------

@router.post("/fine_tuning/jobs", response_model=FineTuningJob)
def create(body: JobCreate, caller: Caller = Depends(current_caller)) -> FineTuningJob:
    return job_object(create_job(caller, body), caller.project_name)


def jobs_page(caller: Caller, after: str | None, limit: int) -> ListPage[FineTuningJob]:
    query = select(Job).where(Job.project_id == caller.project_id)
    with caller.state.db.session() as s:
        rows, more = cursor_page(s, query, Job, Job.created_ns, after=after, limit=limit,
                                 after_scope=Job.project_id == caller.project_id)
    return ListPage[FineTuningJob](data=[job_object(j, caller.project_name) for j in rows], has_more=more)


# Read routes are async and read through `Database.read` (inline for SQLite, one thread hop for a
# networked database): FastAPI would run a sync route, and then its response validation, each in
# a thread of its own (GIL hand-offs under load).

@router.get("/fine_tuning/jobs", response_model=ListPage[FineTuningJob])
async def list_jobs(after: Optional[str] = Query(None, max_length=64), limit: int = Query(20),
                    caller: Caller = Depends(current_caller)) -> ListPage[FineTuningJob]:
    return await caller.state.db.read(jobs_page, caller, after, limit)


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}", response_model=FineTuningJob)
async def retrieve(fine_tuning_job_id: str, caller: Caller = Depends(current_caller)) -> FineTuningJob:
    return await caller.state.db.read(job_view, caller, fine_tuning_job_id)


@router.post("/fine_tuning/jobs/{fine_tuning_job_id}/cancel", response_model=FineTuningJob)
def cancel(fine_tuning_job_id: str, caller: Caller = Depends(current_caller)) -> FineTuningJob:
    """Marks the job cancelled at once; its worker sees it within a poll and stops the run."""
    job = get_job(caller, fine_tuning_job_id)
    with caller.state.db.session() as s:
        done = s.execute(update(Job).where(Job.id == job.id, Job.status.in_(ACTIVE))
                         .values(status="cancelled", finished_at=now())).rowcount
        if done:
            add_event(s, job.id, "status:cancelled", "Fine-tuning job cancelled")
    if not done:
        raise APIError(400, f"Job has already {job.status}; it cannot be cancelled.",
                       param="fine_tuning_job_id", code="job_not_cancellable")
    return job_object(get_job(caller, job.id), caller.project_name)


def events_page(caller: Caller, job_id: str, after: str | None, limit: int) -> ListPage[JobEvent]:
    job = get_job(caller, job_id)
    with caller.state.db.session() as s:
        rows, more = cursor_page(s, select(Event).where(Event.job_id == job.id), Event, Event.seq,
                                 after=after, limit=limit, after_scope=Event.job_id == job.id)
    return ListPage[JobEvent](data=[JobEvent(id=e.id, created_at=e.created_at, level=e.level, message=e.message,
                                             type=e.type, data=e.data) for e in rows], has_more=more)


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}/events", response_model=ListPage[JobEvent])
async def list_events(fine_tuning_job_id: str, after: Optional[str] = Query(None, max_length=64),
                      limit: int = Query(20), caller: Caller = Depends(current_caller)) -> ListPage[JobEvent]:
    return await caller.state.db.read(events_page, caller, fine_tuning_job_id, after, limit)


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints", response_model=ListPage[JobCheckpoint])
def list_checkpoints(fine_tuning_job_id: str, after: Optional[str] = Query(None, max_length=64),
                     limit: int = Query(10), caller: Caller = Depends(current_caller)) -> ListPage[JobCheckpoint]:
    job = get_job(caller, fine_tuning_job_id)
    with caller.state.db.session() as s:
        rows, more = cursor_page(s, select(Checkpoint).where(Checkpoint.job_id == job.id), Checkpoint,
                                 Checkpoint.seq, after=after, limit=limit, after_scope=Checkpoint.job_id == job.id)
    data = [JobCheckpoint(id=c.id, created_at=c.created_at, fine_tuned_model_checkpoint=c.model_name,
                          fine_tuning_job_id=job.id, metrics=CheckpointMetrics(**c.metrics), step_number=c.step)
            for c in rows]
    return ListPage[JobCheckpoint](data=data, has_more=more, first_id=data[0].id if data else None,
                                   last_id=data[-1].id if data else None)


@router.post("/fine-tunes", response_model=FineTuningJob, tags=["legacy"])
def legacy_create(body: LegacyFineTuneCreate, caller: Caller = Depends(current_caller)) -> FineTuningJob:
    """OpenAI's retired fine-tunes API: its top-level hyper-parameters, `prompt_loss_weight`
    included, become a fine-tuning job (answered in the current job shape)."""
    hp = {k: getattr(body, k) for k in ("n_epochs", "batch_size", "learning_rate_multiplier")
          if getattr(body, k) is not None}
    job = JobCreate(model=body.model, training_file=body.training_file, validation_file=body.validation_file,
                    suffix=body.suffix, seed=body.seed, prompt_loss_weight=body.prompt_loss_weight,
                    hyperparameters=Hyperparameters(**hp))
    return create(job, caller)
