"""Server settings and the on-disk layout under `--data-dir`.

    DATA_DIR/plw.db                 SQLite database (unless --db names another)
    DATA_DIR/files/FILE_ID.jsonl    uploaded bytes, stored by id (the client's file name is only metadata)
    DATA_DIR/jobs/JOB_ID/           one `plw train` run: config.yaml, train.jsonl, run/ (its output
                                    dir: metrics.jsonl, checkpoint-*/, weights), train.log
    DATA_DIR/models/JOB_ID/         the fine-tuned model (safetensors + tokenizer, or a LoRA adapter)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from plw.errors import PLWError

BUILTIN_TINY = "builtin:tiny"
DEFAULT_MAX_UPLOAD = 512 * 1024 * 1024


@dataclass(frozen=True)
class BaseModel:
    """A base model the server offers: `name` is what clients pass as `model`, `source` what
    `plw train` loads (a local directory, a GGUF file, a Hub name or builtin:tiny)."""

    name: str
    source: str

    @property
    def is_tiny(self) -> bool:
        return self.source == BUILTIN_TINY

    @property
    def base_learning_rate(self) -> float:
        # learning_rate_multiplier scales this. A random-init tiny model needs a far larger step
        # (plw's CPU preset); pretrained models start from the Alpaca recipe's 2e-5.
        return 1e-3 if self.is_tiny else 2e-5


@dataclass
class Settings:
    data_dir: Path
    db_url: str | None = None
    workers: int = 1
    backend: str = "local"                 # local | ray
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    base_models: dict[str, BaseModel] = field(default_factory=dict)
    lease_seconds: float = 30.0            # a job whose lease is this old is another worker's to take
    poll_seconds: float = 0.5              # how often a worker looks at the DB and the running job
    run_workers: bool = True               # False: API only (another replica or process trains)
    job_threads: int | None = None         # torch threads per training job; None: cores / workers
    job_nice: int = 10                     # niceness added to training jobs (0-19)
    # inference (/v1/chat/completions, /v1/completions; plw.serve.completions)
    inference_backend: str = "local"       # local (plw's engine) | vllm
    inference_memory_mb: float | None = None  # weights kept loaded (LRU beyond); None: no limit
    inference_max_batch: int = 32          # rows generated together per model
    request_timeout: float = 300.0         # seconds per inference request, queueing included

    def __post_init__(self):
        self.data_dir = Path(self.data_dir)
        if self.backend not in ("local", "ray"):
            raise PLWError(f"expected local or ray, got {self.backend!r}", field="--backend")
        if self.inference_backend not in ("local", "vllm"):
            raise PLWError(f"expected local or vllm, got {self.inference_backend!r}", field="--inference-backend")
        if self.job_threads is not None and self.job_threads < 1:
            raise PLWError("must be >= 1", field="--job-threads")
        if not 0 <= self.job_nice <= 19:
            raise PLWError("must be in 0..19", field="--job-nice")
        if self.workers < 0:
            raise PLWError("must be >= 0", field="--workers")
        self.base_models.setdefault(BUILTIN_TINY, BaseModel(BUILTIN_TINY, BUILTIN_TINY))

    @property
    def threads_per_job(self) -> int:
        """Each job's share of the cores: jobs that together ask for more threads than there are
        cores spin against each other and against the API (OpenMP waits by spinning)."""
        if self.job_threads:
            return self.job_threads
        return max(1, (os.cpu_count() or 1) // max(1, self.workers))

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'plw.db').resolve()}"

    def file_path(self, file_id: str) -> Path:
        return self.data_dir / "files" / f"{file_id}.jsonl"

    def job_dir(self, job_id: str) -> Path:
        return self.data_dir / "jobs" / job_id

    def model_dir(self, job_id: str) -> Path:
        return self.data_dir / "models" / job_id


def parse_base_model(spec: str) -> BaseModel:
    """`NAME=SOURCE` (or just SOURCE, named after its file/Hub name) from `--base-model`."""
    name, sep, source = spec.partition("=")
    if not sep:
        source = spec
        name = Path(spec).stem if Path(spec).exists() else spec
    name, source = name.strip(), source.strip()
    if not name or not source:
        raise PLWError(f"expected NAME=SOURCE, got {spec!r}", field="--base-model")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}", name):
        raise PLWError(f"model name {name!r} may hold only letters, digits and . _ : / -", field="--base-model")
    return BaseModel(name, source)
