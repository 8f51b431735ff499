"""The job runner: claim jobs from the database, validate them, run `plw train`, report progress.

Claiming is one conditional UPDATE (status and an expired or empty lease in the WHERE clause), so
several workers, threads or server replicas on one database never run a job twice; the owner
renews the lease every poll and a job whose owner died is taken over once its lease expires.

Each job is a normal `plw train CONFIG --no-progress` subprocess in `DATA_DIR/jobs/JOB_ID` (it dies
with the worker: PR_SET_PDEATHSIG). Because plw train resumes from the last checkpoint in its
output dir, a job taken over after a crash continues where it was; events and checkpoints are
keyed (`metrics:STEP`, `(job, step)`), so the replayed steps add nothing twice.

`--backend ray` runs the same `run_job` as a Ray task (the task talks to the same database).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import or_, select, update

from plw.serve.db import Checkpoint, Database, Event, FineTunedModel, Job, new_id, now
from plw.serve.settings import Settings

log = logging.getLogger("plw.serve.worker")
TERMINATE_GRACE_S = 5.0


# ---- claiming and leases -------------------------------------------------------------------

def claim(db: Database, owner: str, statuses: tuple[str, ...], lease_s: float) -> str | None:
    """Atomically take the oldest job in `statuses` whose lease is free or expired; its id or None."""
    t = time.time()
    free = or_(Job.lease_until.is_(None), Job.lease_until < t)
    with db.session() as s:
        ids = list(s.scalars(select(Job.id).where(Job.status.in_(statuses), free)
                             .order_by(Job.created_ns).limit(8)))
    for job_id in ids:
        with db.session() as s:
            taken = s.execute(update(Job).where(Job.id == job_id, Job.status.in_(statuses), free)
                              .values(lease_owner=owner, lease_until=t + lease_s, attempts=Job.attempts + 1)
                              ).rowcount
        if taken == 1:
            return job_id
    return None


def renew(db: Database, job_id: str, owner: str, lease_s: float) -> str | None:
    """Extend our lease; the job's status, or None when the job is no longer ours."""
    with db.session() as s:
        if s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner)
                     .values(lease_until=time.time() + lease_s)).rowcount != 1:
            return None
        return s.scalar(select(Job.status).where(Job.id == job_id))


def owned_status(db: Database, job_id: str, owner: str) -> str | None:
    """The job's status while we hold its lease, else None."""
    with db.session() as s:
        return s.scalar(select(Job.status).where(Job.id == job_id, Job.lease_owner == owner))


def release(db: Database, job_id: str, owner: str, **values) -> bool:
    """Give the lease up (and set `values`) if we still own the job."""
    with db.session() as s:
        return s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner)
                         .values(lease_owner=None, lease_until=None, **values)).rowcount == 1


def event(db: Database, job_id: str, key: str, message: str, *, level: str = "info", type: str = "message",
          data: dict | None = None) -> bool:
    """Record an event once per (job, key)."""
    return db.add_once(Event(id=new_id("ftevent"), job_id=job_id, key=key, level=level, type=type,
                             message=message, data=data))


def model_name(base: str, project: str, suffix: str | None, job_id: str) -> str:
    """`ft:{base}:{project}:{suffix}:{id}` (characters outside [A-Za-z0-9._-] in base become -)."""
    return f"ft:{re.sub(r'[^A-Za-z0-9._-]+', '-', base)}:{project}:{suffix or ''}:{job_id.split('-', 1)[1]}"


# ---- validating_files -> queued | failed ---------------------------------------------------

def validate_claimed(settings: Settings, db: Database, job_id: str, owner: str) -> None:
    from plw.errors import PLWError
    from plw.serve.db import Project
    from plw.serve.validation import InvalidFile, validate_job
    from plw.train import TrainConfig
    from plw.train.config import save_config

    with db.session() as s:
        job = s.get(Job, job_id)
        project = s.get(Project, job.project_id).name
    if job.status != "validating_files":
        release(db, job_id, owner)
        return
    job_dir = settings.job_dir(job_id)
    try:
        plan, cfg = validate_job(settings, job, settings.base_models[job.model], job_dir)
    except InvalidFile as err:
        fail(db, job_id, owner, code=f"invalid_{err.param}", message=err.message, param=err.param)
        return
    except (PLWError, KeyError) as err:
        fail(db, job_id, owner, code="validation_failed", message=str(err), param=None)
        return
    save_config(TrainConfig.model_validate(cfg), job_dir / "config.yaml")
    resolved = {"hyperparameters": plan.hyperparameters, "total_steps": plan.total_steps,
                "n_train": plan.n_train, "model_name": model_name(job.model, project, job.suffix, job_id)}
    for key, message, data in plan.notes:
        event(db, job_id, key, message, data=data)
    with db.session() as s:
        moved = s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner,
                                            Job.status == "validating_files")
                          .values(status="queued", resolved=resolved, lease_owner=None, lease_until=None)).rowcount
    if moved:
        event(db, job_id, "status:queued", "Files validated, moving job to queued state")
    else:
        release(db, job_id, owner)


def fail(db: Database, job_id: str, owner: str, *, code: str, message: str, param: str | None) -> None:
    with db.session() as s:
        done = s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner,
                                           Job.status.in_(("validating_files", "queued", "running")))
                         .values(status="failed", finished_at=now(), lease_owner=None, lease_until=None,
                                 error={"code": code, "message": message, "param": param})).rowcount
    if done:
        event(db, job_id, "status:failed", f"Fine-tuning job failed: {message}", level="error")
    else:
        release(db, job_id, owner)


# ---- queued/running -> succeeded | failed | cancelled ---------------------------------------

def child_setup(nice: int):
    """What the training child does between fork and exec: yield the CPU to the API (metadata
    calls stay fast while jobs run; an idle API costs training nothing) and die with its parent."""
    return functools.partial(_nice_and_die_with_parent, nice)


def _nice_and_die_with_parent(nice: int) -> None:  # pragma: no cover - runs in the child
    os.nice(nice)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def job_env(settings: Settings) -> dict[str, str]:
    """The training subprocess's environment: its share of the cores as its thread count, unless
    the operator set OMP_NUM_THREADS for every process."""
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(settings.threads_per_job)
    return env


class JobRun:
    """One attempt at running a claimed job to its end (or until cancelled, lost or stopped)."""

    def __init__(self, settings: Settings, db: Database, job_id: str, owner: str):
        self.settings, self.db, self.job_id, self.owner = settings, db, job_id, owner
        self.job_dir = settings.job_dir(job_id)
        self.run_dir = self.job_dir / "run"
        self.seen: set[str] = set()
        self.tail = MetricsTail(self.run_dir / "metrics.jsonl")
        with db.session() as s:
            self.job = s.get(Job, job_id)
        self.total_steps = (self.job.resolved or {}).get("total_steps")
        self.model_name = (self.job.resolved or {}).get("model_name", job_id)

    def start(self) -> bool:
        job = self.job
        if job.status == "queued":
            with self.db.session() as s:
                ok = s.execute(update(Job).where(Job.id == job.id, Job.lease_owner == self.owner,
                                                 Job.status == "queued").values(status="running")).rowcount
            if ok:
                event(self.db, job.id, "status:running", "Fine-tuning job started")
            return bool(ok)
        if job.status == "running":
            event(self.db, job.id, f"resume:{job.attempts}",
                  f"Resuming the job after an interruption (attempt {job.attempts}) from its last checkpoint")
            return True
        release(self.db, job.id, self.owner)
        return False

    def run(self, stop: threading.Event | None = None) -> str:
        """Run to the end; returns the final status, or "stopped"/"lost" (the lease is given up)."""
        if not self.start():
            return "skipped"
        logf = open(self.job_dir / "train.log", "ab")
        cmd = [sys.executable, "-m", "plw.cli", "train", str(self.job_dir / "config.yaml"), "--no-progress"]
        proc = subprocess.Popen(cmd, cwd=self.job_dir, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=job_env(self.settings),
                                preexec_fn=child_setup(self.settings.job_nice))
        renewed = time.monotonic()
        try:
            while True:
                rc = proc.poll()
                self.sync()
                if rc is not None:
                    break
                # Each poll reads the status (a cancel shows within a poll); the lease, a write, is
                # renewed five times per lease period.
                if time.monotonic() - renewed > self.settings.lease_seconds / 5:
                    status = renew(self.db, self.job_id, self.owner, self.settings.lease_seconds)
                    renewed = time.monotonic()
                else:
                    status = owned_status(self.db, self.job_id, self.owner)
                if status != "running" or (stop is not None and stop.is_set()):
                    self.terminate(proc)
                    if status == "running":  # server stopping: leave it for the next worker
                        release(self.db, self.job_id, self.owner)
                        return "stopped"
                    if status is not None:  # cancelled
                        release(self.db, self.job_id, self.owner)
                    return status or "lost"
                time.sleep(self.settings.poll_seconds)
        finally:
            if proc.poll() is None:
                self.terminate(proc)
            logf.close()
        return self.finish(rc)

    @staticmethod
    def terminate(proc: subprocess.Popen) -> None:
        proc.terminate()
        try:
            proc.wait(TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # -- progress --
    def sync(self) -> None:
        for row in self.tail.new_rows():
            self.metric_event(row)
        self.checkpoints(self.tail.rows)

    def metric_event(self, row: dict) -> None:
        step = row.get("step")
        if "step_loss" in row:
            key = f"metrics:{step}"
            data = {"step": step, "train_loss": row["step_loss"], "total_steps": self.total_steps,
                    "epoch": row.get("epoch"), "train_tokens": row.get("train_tokens")}
            for k in ("prompt_nll", "completion_nll"):
                if k in row:
                    data[k] = row[k]
            parts = [f"training loss={row['step_loss']:.4f}"] + [
                f"{k.replace('_nll', ' NLL')}={data[k]:.4f}" for k in ("prompt_nll", "completion_nll") if k in data]
            message = f"Step {step}/{self.total_steps}: " + ", ".join(parts)
        elif "eval_completion_nll" in row:
            key = f"eval:{step}"
            data = {"step": step, "valid_loss": row["eval_completion_nll"], "total_steps": self.total_steps}
            if "eval_prompt_nll" in row:
                data["valid_prompt_nll"] = row["eval_prompt_nll"]
            message = f"Step {step}/{self.total_steps}: validation loss={row['eval_completion_nll']:.4f}"
        else:
            return
        if key not in self.seen:
            event(self.db, self.job_id, key, message, type="metrics", data=data)
            self.seen.add(key)

    def checkpoints(self, rows: list[dict]) -> None:
        for path in sorted(self.run_dir.glob("checkpoint-*")):
            m = re.fullmatch(r"checkpoint-(\d+)", path.name)
            if not m or not (path / "trainer_state.json").is_file():
                continue  # still being written
            step = int(m.group(1))
            key = f"ckpt:{step}"
            if key in self.seen:
                continue
            metrics = checkpoint_metrics(rows, step)
            name = f"{self.model_name}:ckpt-step-{step}"
            self.db.add_once(Checkpoint(id=new_id("ftckpt"), job_id=self.job_id, step=step, metrics=metrics,
                                        model_name=name))
            event(self.db, self.job_id, key, f"Checkpoint created at step {step}", data={"step": step})
            self.seen.add(key)

    # -- the end --
    def finish(self, rc: int) -> str:
        with self.db.session() as s:
            status = s.scalar(select(Job.status).where(Job.id == self.job_id))
        if status != "running":
            release(self.db, self.job_id, self.owner)
            return status
        if rc != 0:
            fail(self.db, self.job_id, self.owner, code="training_failed",
                 message=last_error(self.job_dir / "train.log") or f"plw train exited with code {rc}", param=None)
            return "failed"
        rows = read_rows(self.run_dir / "metrics.jsonl")
        tokens = [r["train_tokens"] for r in rows if "train_tokens" in r]
        dest = self.settings.model_dir(self.job_id)
        publish_model(self.run_dir, dest)
        with self.db.session() as s:
            project_id = s.scalar(select(Job.project_id).where(Job.id == self.job_id))
        self.db.add_once(FineTunedModel(id=self.model_name, project_id=project_id, job_id=self.job_id,
                                        base_model=self.job.model,
                                        path=str(dest.relative_to(self.settings.data_dir))))
        event(self.db, self.job_id, "model", f"New fine-tuned model created: {self.model_name}")
        with self.db.session() as s:
            done = s.execute(update(Job).where(Job.id == self.job_id, Job.lease_owner == self.owner,
                                               Job.status == "running")
                             .values(status="succeeded", fine_tuned_model=self.model_name, finished_at=now(),
                                     trained_tokens=tokens[-1] if tokens else None,
                                     lease_owner=None, lease_until=None)).rowcount
        if done:
            event(self.db, self.job_id, "status:succeeded", "The job has successfully completed")
            return "succeeded"
        release(self.db, self.job_id, self.owner)
        return "lost"


def read_rows(path: Path) -> list[dict]:
    import json

    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # the line being written
            break
    return rows


class MetricsTail:
    """Reads metrics.jsonl incrementally (whole lines only). plw train rewrites the file when it
    resumes (a new file cut back to the checkpoint's step): then reading starts over; the events'
    keys make the replayed rows no-ops."""

    def __init__(self, path: Path):
        self.path, self.offset, self.inode, self.rows = path, 0, None, []

    def new_rows(self) -> list[dict]:
        import json

        try:
            st = self.path.stat()
        except OSError:
            return []
        if st.st_ino != self.inode or st.st_size < self.offset:
            self.offset, self.inode, self.rows = 0, st.st_ino, []
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(st.st_size - self.offset)
        end = chunk.rfind(b"\n") + 1  # a line being written waits for the next poll
        new = []
        for line in chunk[:end].splitlines():
            if line.strip():
                try:
                    new.append(json.loads(line))
                except ValueError:
                    break
        self.offset += end
        self.rows.extend(new)
        return new


def checkpoint_metrics(rows: list[dict], step: int) -> dict:
    """OpenAI's checkpoint metrics (and plw's prompt/completion NLL) from metrics.jsonl at `step`."""
    out: dict = {"step": float(step)}
    for r in rows:
        if r.get("step") == step and "step_loss" in r:
            out["train_loss"] = r["step_loss"]
            for k in ("prompt_nll", "completion_nll"):
                if k in r:
                    out[k] = r[k]
        if r.get("step", 1 << 62) <= step and "eval_completion_nll" in r:
            out["valid_loss"] = out["full_valid_loss"] = r["eval_completion_nll"]
    return out


def last_error(log_path: Path) -> str | None:
    """The `error: …` line plw train printed (its one-line user error), else the last line."""
    try:
        lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines()
                 if ln.strip()]
    except OSError:
        return None
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors[-1].removeprefix("error:").strip() if errors else (lines[-1] if lines else None))


def publish_model(run_dir: Path, dest: Path) -> None:
    """Copy the trained model (weights, config, tokenizer; not the checkpoints) to `dest` atomically."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for item in run_dir.iterdir():
        if item.is_file() and not item.name.startswith(".") and item.name != "training_args.bin":
            shutil.copy2(item, tmp / item.name)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def run_job(settings: Settings, job_id: str, owner: str, stop: threading.Event | None = None,
            db: Database | None = None) -> str:
    """Run one claimed job to its end (the unit of work of both backends)."""
    own_db = db is None
    db = db or Database(settings.database_url)
    try:
        return JobRun(settings, db, job_id, owner).run(stop)
    finally:
        if own_db:
            db.dispose()


# ---- the pool ------------------------------------------------------------------------------

class WorkerPool:
    """One validator thread plus `settings.workers` training threads (local subprocesses or Ray tasks)."""

    def __init__(self, state):
        self.state = state
        self.settings: Settings = state.settings
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.ray_task = None

    def start(self) -> None:
        if self.settings.backend == "ray":
            import ray

            ray.init(address=os.environ.get("RAY_ADDRESS") or None, ignore_reinit_error=True,
                     log_to_driver=False, include_dashboard=False)
            self.ray_task = ray.remote(num_cpus=1, max_retries=0)(run_job)
        self.threads.append(threading.Thread(target=self.loop, args=("validate",), daemon=True,
                                             name="plw-validate"))
        for i in range(self.settings.workers):
            self.threads.append(threading.Thread(target=self.loop, args=("train",), daemon=True,
                                                 name=f"plw-train-{i}"))
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=TERMINATE_GRACE_S + 5)

    def loop(self, kind: str) -> None:
        statuses = ("validating_files",) if kind == "validate" else ("queued", "running")
        db, s = self.state.db, self.settings
        while not self.stopping.is_set():
            try:
                job_id = claim(db, self.owner, statuses, s.lease_seconds)
                if job_id is None:
                    self.stopping.wait(s.poll_seconds)
                elif kind == "validate":
                    validate_claimed(s, db, job_id, self.owner)
                else:
                    self.train(job_id)
            except Exception:  # a worker thread must outlive any one job's trouble
                log.exception("worker error")
                self.stopping.wait(s.poll_seconds)

    def train(self, job_id: str) -> None:
        if self.ray_task is None:
            run_job(self.settings, job_id, self.owner, self.stopping, self.state.db)
            return
        import ray

        ref = self.ray_task.remote(self.settings, job_id, self.owner)
        while not self.stopping.is_set():
            done, _ = ray.wait([ref], timeout=self.settings.poll_seconds)
            if done:
                ray.get(ref)
                return
        ray.cancel(ref, force=True)
        release(self.state.db, job_id, self.owner)
