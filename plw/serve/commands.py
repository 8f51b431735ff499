"""CLI commands of plw.serve: `plw serve` and `plw keys create` (registered by plw.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

keys_app = typer.Typer(help="API keys of `plw serve` (stored hashed in the server's database).",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`."""
    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")


def _settings(data_dir: Path, db: Optional[str], **kw):
    from plw.serve.settings import Settings

    return Settings(data_dir=data_dir, db_url=db, **kw)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    data_dir: Path = typer.Option(Path("plw-serve"), "--data-dir",
                                  help="Uploaded files, job folders, models and (by default) the SQLite DB."),
    db: Optional[str] = typer.Option(None, "--db", help="SQLAlchemy URL of the database shared by replicas, "
                                                        "e.g. postgresql+psycopg://user@host/plw. "
                                                        "Default: SQLite in --data-dir."),
    workers: int = typer.Option(1, "--workers", help="Jobs trained at once by this server (0: API only)."),
    job_threads: Optional[int] = typer.Option(None, "--job-threads", help="torch threads per training job. "
                                              "Default: the cores divided among --workers (at least 1)."),
    job_nice: int = typer.Option(10, "--job-nice", help="Niceness of training jobs (0-19): under load "
                                 "they yield the CPU to the API; an idle API costs them nothing."),
    backend: str = typer.Option("local", "--backend", help="local (subprocesses here) or ray (Ray tasks; "
                                                           "set RAY_ADDRESS to join a cluster)."),
    base_model: list[str] = typer.Option([], "--base-model", help="A base model clients may fine-tune: "
                                         "NAME=SOURCE with SOURCE a model directory, a .gguf file or a Hub "
                                         "name. Repeatable. builtin:tiny is always offered."),
    max_upload_mb: float = typer.Option(512, "--max-upload-mb", help="Largest accepted upload (413 above)."),
    lease_seconds: float = typer.Option(30, "--lease-seconds", help="A job whose worker has not renewed "
                                        "its lease for this long is taken over (after a crash)."),
    inference_backend: str = typer.Option("local", "--inference-backend", help="What answers /v1/chat/"
                                           "completions and /v1/completions: local (plw's engine, CPU or "
                                           "one GPU) or vllm (needs vllm installed and a GPU)."),
    inference_memory_mb: Optional[float] = typer.Option(None, "--inference-memory-mb", help="Model weights "
                                                        "kept loaded for inference; the least recently used "
                                                        "model is unloaded beyond it. Default: no limit."),
    max_batch_size: int = typer.Option(32, "--max-batch-size", help="Sequences one model generates at once."),
    request_timeout: float = typer.Option(300, "--request-timeout", help="Seconds an inference request may "
                                          "take, queueing included (then 408)."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn's log level."),
) -> None:
    """Run the fine-tuning service: OpenAI's fine-tuning API with a prompt loss weight.

    Files, fine_tuning.jobs and models under /v1; `prompt_loss_weight` (a number in [0, 1] or "auto") goes in a job's hyperparameters.

    Every request needs `Authorization: Bearer KEY` with a key from `plw keys create`. Jobs are `plw train` runs under --data-dir/jobs and resume after a restart. See docs/serve.md.

    Base and fine-tuned models answer /v1/chat/completions and /v1/completions (concurrent requests batched); the dashboard at / shows a project's jobs, loss curves and a playground. See docs/serve-inference.md.
    """
    import uvicorn

    from plw.errors import PLWError
    from plw.serve.app import create_app
    from plw.serve.settings import parse_base_model

    if max_upload_mb <= 0:
        raise PLWError("must be > 0", field="--max-upload-mb")
    if inference_memory_mb is not None and inference_memory_mb <= 0:
        raise PLWError("must be > 0", field="--inference-memory-mb")
    if max_batch_size < 1:
        raise PLWError("must be >= 1", field="--max-batch-size")
    if request_timeout <= 0:
        raise PLWError("must be > 0", field="--request-timeout")
    if inference_backend == "vllm":
        from plw.serve.inference.vllm_backend import vllm_available

        if not vllm_available():
            raise PLWError("vllm is not installed (pip install vllm, on a machine with a GPU)",
                           field="--inference-backend")
    if lease_seconds < 2:
        raise PLWError("must be >= 2", field="--lease-seconds")
    models = {m.name: m for m in map(parse_base_model, base_model)}
    for m in models.values():
        if (m.source.startswith(("/", ".", "~")) or m.source.endswith(".gguf")) and not Path(m.source).expanduser().exists():
            raise PLWError("no such file or directory", file=m.source, field="--base-model")
    settings = _settings(data_dir, db, workers=workers, job_threads=job_threads, job_nice=job_nice,
                         backend=backend, base_models=models,
                         max_upload_bytes=int(max_upload_mb * 1024 * 1024), lease_seconds=lease_seconds,
                         inference_backend=inference_backend, inference_memory_mb=inference_memory_mb,
                         inference_max_batch=max_batch_size, request_timeout=request_timeout)
    app = create_app(settings)
    typer.echo(f"plw serve on http://{host}:{port}/v1  (data: {settings.data_dir}, workers: {workers}, "
               f"backend: {backend})", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


@keys_app.command("create")
def keys_create(
    project: str = typer.Option(..., "--project", help="Project name (created if new); its keys share "
                                                        "its files, jobs and models."),
    data_dir: Path = typer.Option(Path("plw-serve"), "--data-dir", help="The server's --data-dir."),
    db: Optional[str] = typer.Option(None, "--db", help="The server's --db, if it has one."),
) -> None:
    """Create an API key for a project and print it, alone, on stdout.

    Only the key's hash is stored: keep the key, it cannot be shown again.
    """
    from plw.serve.auth import PROJECT_NAME, create_key
    from plw.serve.db import Database
    from plw.errors import PLWError

    if not PROJECT_NAME.fullmatch(project):
        raise PLWError(f"invalid project name {project!r}: letters, digits, _ and -, at most 64, "
                       "starting with a letter or digit", field="--project")
    settings = _settings(data_dir, db)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url)
    try:
        typer.echo(create_key(database, project))
    finally:
        database.dispose()
