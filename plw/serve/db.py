"""The service's state: SQLAlchemy 2 tables, the engine and sessions.

SQLite under `--data-dir` by default (WAL, so readers never wait for the worker's writes); any
SQLAlchemy URL through `--db` (PostgreSQL for several replicas). Uploaded bytes and trained models
live on disk under the data dir (see `Store`), never in the database.

Events and checkpoints carry a natural key that is unique per job (`Event.key`, `Checkpoint.step`):
a resumed job that replays steps re-inserts nothing (`add_once`).
"""

from __future__ import annotations

import secrets
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, TypeVar

from sqlalchemy import (JSON, BigInteger, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint,
                        create_engine, event)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


def new_id(prefix: str) -> str:
    """`file-…`, `ftjob-…`, `ftevent-…`, `ftckpt-…`: the prefix and 24 random hex digits."""
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


T = TypeVar("T")


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class ApiKey(Base):
    """Only the key's SHA-256 is stored; `id` (the key's visible prefix) names it in logs."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class File(Base):
    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    created_ns: Mapped[int] = mapped_column(BigInteger, index=True, default=time.time_ns)  # list order
    status: Mapped[str] = mapped_column(String(16), default="processed")
    status_details: Mapped[Optional[str]] = mapped_column(Text, nullable=True)


class Job(Base):
    """One fine-tuning job. `lease_owner`/`lease_until` make claiming atomic across replicas:
    a worker owns a job while its lease is fresh and renews it every few seconds."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    created_ns: Mapped[int] = mapped_column(BigInteger, index=True, default=time.time_ns)  # list order
    model: Mapped[str] = mapped_column(String(256))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    suffix: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    hyperparameters: Mapped[dict] = mapped_column(JSON)   # as requested ("auto" kept until resolved)
    resolved: Mapped[Optional[dict]] = mapped_column(JSON, nullable=True)  # what training uses
    method_type: Mapped[str] = mapped_column(String(32), default="supervised")
    metadata_: Mapped[Optional[dict]] = mapped_column("metadata", JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(32), index=True, default="validating_files")
    error: Mapped[Optional[dict]] = mapped_column(JSON, nullable=True)
    fine_tuned_model: Mapped[Optional[str]] = mapped_column(String(512), nullable=True)
    trained_tokens: Mapped[Optional[int]] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    finished_at: Mapped[Optional[int]] = mapped_column(BigInteger, nullable=True)
    lease_owner: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("job_id", "key"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    key: Mapped[str] = mapped_column(String(128))  # e.g. "status:running", "metrics:12"
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    level: Mapped[str] = mapped_column(String(8), default="info")
    type: Mapped[str] = mapped_column(String(16), default="message")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[Optional[dict]] = mapped_column(JSON, nullable=True)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    metrics: Mapped[dict] = mapped_column(JSON)
    model_name: Mapped[str] = mapped_column(String(600))


class FineTunedModel(Base):
    """A model a job produced; `path` is relative to the data dir (see `Store.model_dir`)."""

    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(512), primary_key=True)   # ft:{base}:{project}:{suffix}:{id}
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    job_id: Mapped[str] = mapped_column(String(64))
    base_model: Mapped[str] = mapped_column(String(256))
    path: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class Database:
    """Engine + session factory. `session()` is a transaction: committed on success, rolled back on error."""

    def __init__(self, url: str):
        self.url = url
        sqlite = url.startswith("sqlite")
        self.inline_reads = sqlite
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}} if sqlite else {
            "pool_pre_ping": True}
        if sqlite:
            kwargs.update(pool_size=64, max_overflow=64)
        self.engine = create_engine(url, **kwargs)
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self.factory = sessionmaker(self.engine, expire_on_commit=False)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`, a short read, for an async route. A local SQLite read takes less time than
        the thread hop around it, and 50 requests hopping at once queue on the GIL (the load
        bench's tail), so it runs inline; a networked database's round trip runs in the pool."""
        if self.inline_reads:
            return fn(*args)
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(fn, *args)

    @contextmanager
    def session(self) -> Iterator[Session]:
        s = self.factory()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def add_once(self, row: Base) -> bool:
        """Insert `row` unless its natural key exists already; True if it was inserted."""
        try:
            with self.session() as s:
                s.add(row)
        except IntegrityError:
            return False
        return True

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(conn, _record) -> None:
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
