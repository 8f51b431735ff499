"""A live `plw serve` for tests: a subprocess on 127.0.0.1, a free port, a temp data dir."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plw(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plw.cli", *args], capture_output=True, text=True,
                          env=env(), check=check)


_DATABASES: dict[Path, str] = {}


def db_args(data_dir: Path) -> list[str]:
    """`--db URL` for `data_dir` when PLW_TEST_POSTGRES names a PostgreSQL server (e.g.
    postgresql+psycopg://plw:plw@localhost): each data dir gets a database of its own, so the live-
    server tests also run on PostgreSQL, the replicas' database. Unset: SQLite in the data dir."""
    base = os.environ.get("PLW_TEST_POSTGRES")
    if not base:
        return []
    data_dir = Path(data_dir).resolve()
    if data_dir not in _DATABASES:
        import psycopg

        name = f"plw_test_{os.getpid()}_{len(_DATABASES)}_{random.randrange(10**6)}"
        plain = base.rstrip("/").replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain + "/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        _DATABASES[data_dir] = f"{base.rstrip('/')}/{name}"
    return ["--db", _DATABASES[data_dir]]


def create_key(data_dir: Path, project: str) -> str:
    return plw("keys", "create", "--data-dir", str(data_dir), *db_args(data_dir),
               "--project", project).stdout.strip()


class Server:
    def __init__(self, data_dir: Path, *args: str):
        self.data_dir, self.args = Path(data_dir), args
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 60) -> "Server":
        self.log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "plw.cli", "serve", "--port", str(self.port),
                                      "--data-dir", str(self.data_dir), *db_args(self.data_dir),
                                      *self.args],
                                     env=env(), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"plw serve exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1)
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("plw serve did not start")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def write_chat_file(path: Path, n: int = 24, *, seed: int = 0) -> Path:
    """Short-completion chat records (R_g < 1), one with an assistant turn of weight 0."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            a, b = rng.randint(1, 50), rng.randint(1, 50)
            msgs = [{"role": "system", "content": "You are a careful calculator."},
                    {"role": "user", "content": f"What is {a} plus {b}? Answer with the number only."},
                    {"role": "assistant", "content": str(a + b)}]
            if i % 6 == 0:  # a multi-turn example whose first answer is not trained (OpenAI's weight 0)
                msgs[2:2] = [{"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "Hello! Ask me a sum.", "weight": 0}]
            f.write(json.dumps({"messages": msgs}) + "\n")
    return path


def wait_for(fn, timeout: float, every: float = 0.5):
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value or time.time() > deadline:
            return value
        time.sleep(every)
