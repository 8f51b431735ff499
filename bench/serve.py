"""Load bench of `plw serve`'s metadata API: 50 concurrent clients listing and retrieving while 4 jobs train.

    python bench/serve.py                  # 50 clients x 40 calls each, idle and with 4 running jobs
    python bench/serve.py --quick          # 10 clients x 10 calls (a smoke run)

Starts `plw serve --workers 4` on 127.0.0.1 (a free port, a temporary data dir), creates a key,
uploads a chat file and measures the latency of metadata calls (files list/retrieve, jobs
list/retrieve, events list, models list; every client cycles through them) twice in the same run:
"idle" (no job) and "loaded" (4 builtin:tiny jobs running, checked before and after). Reports p50,
p99 and max latency, errors and calls/s as JSON; target: no errors, loaded p99 <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "serve"))

from serve_helpers import Server, create_key, write_chat_file  # noqa: E402


async def client_loop(http, ids: dict, calls: int, latencies: list, errors: list) -> None:
    paths = ["/files", f"/files/{ids['file']}", "/fine_tuning/jobs", f"/fine_tuning/jobs/{ids['job']}",
             f"/fine_tuning/jobs/{ids['job']}/events", "/models"]
    for i in range(calls):
        path = paths[i % len(paths)]
        t0 = time.perf_counter()
        try:
            r = await http.get(path)
            if r.status_code != 200:
                errors.append(f"{path}: {r.status_code}")
        except Exception as err:  # timeouts, resets: counted, not fatal
            errors.append(f"{path}: {type(err).__name__}")
        latencies.append(time.perf_counter() - t0)


async def load(base_url: str, key: str, ids: dict, clients: int, calls: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"},
                                 limits=limits, timeout=30) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(http, ids, calls, latencies, errors) for _ in range(clients)))
        wall = time.perf_counter() - t0
    lat = sorted(latencies)
    q = statistics.quantiles(lat, n=100)
    return {"clients": clients, "calls": len(lat), "errors": len(errors), "error_examples": errors[:5],
            "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1), "max_ms": round(lat[-1] * 1000, 1),
            "calls_per_s": round(len(lat) / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--calls", type=int, default=40, help="calls per client per phase")
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.calls = 10, 10
    import openai

    tmp = Path(tempfile.mkdtemp(prefix="plw-bench-serve-"))
    server = None
    try:
        data = tmp / "data"
        key = create_key(data, "bench")
        server = Server(data, "--workers", str(args.jobs)).start()
        c = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        f = c.files.create(file=open(write_chat_file(tmp / "t.jsonl", n=60), "rb"), purpose="fine-tune")
        ids = {"file": f.id, "job": None}
        # a finished-looking job id for the idle phase: a job created and cancelled at once
        ids["job"] = c.fine_tuning.jobs.create(training_file=f.id, model="builtin:tiny").id
        c.fine_tuning.jobs.cancel(ids["job"])
        asyncio.run(load(server.base_url, key, ids, args.clients, 6))  # warm-up: connections, threads
        idle = asyncio.run(load(server.base_url, key, ids, args.clients, args.calls))
        jobs = [c.fine_tuning.jobs.create(training_file=f.id, model="builtin:tiny",
                                          hyperparameters={"n_epochs": 50, "batch_size": 2}).id
                for _ in range(args.jobs)]
        deadline = time.time() + 180
        while time.time() < deadline and not all(c.fine_tuning.jobs.retrieve(j).status == "running" and any(
                e.type == "metrics" for e in c.fine_tuning.jobs.list_events(j, limit=5)) for j in jobs):
            time.sleep(1)
        running_before = sum(c.fine_tuning.jobs.retrieve(j).status == "running" for j in jobs)
        ids["job"] = jobs[0]
        loaded = asyncio.run(load(server.base_url, key, ids, args.clients, args.calls))
        running_after = sum(c.fine_tuning.jobs.retrieve(j).status == "running" for j in jobs)
        for j in jobs:
            c.fine_tuning.jobs.cancel(j)
        out = {"bench": "serve", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
               "python": platform.python_version(), "load_average_1_5_15": [round(x, 1) for x in os.getloadavg()],
               "idle": idle,
               "loaded": {**loaded, "jobs_running_before": running_before, "jobs_running_after": running_after},
               "p99_loaded_over_idle": round(loaded["p99_ms"] / max(idle["p99_ms"], 1e-9), 2),
               "target": {"p99_ms": 200, "errors": 0},
               "meets_target": loaded["errors"] == 0 and idle["errors"] == 0 and loaded["p99_ms"] <= 200
               and running_before == running_after == args.jobs}
        text = json.dumps(out, indent=2)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
