"""Throughput of `plw serve`'s inference engine: generated tokens per second with 1, 8 and 32
concurrent clients against one request at a time, on SmolLM2-135M-Instruct.

    python bench/serve_inference.py                       # SmolLM2 GGUF from ../shared/models
    python bench/serve_inference.py --model builtin:tiny --quick

Each client sends chat requests (instructions from ../shared/data/instructions, the model's own
chat template, greedy, `max_tokens` tokens) one after another; the clients run concurrently on
one engine, whose continuous batcher generates everything in flight in one batch. The baseline is
one client: one request at a time through the same engine. Throughput = completion tokens /
wall time of the level, and / process CPU time (the stable figure on a shared, loaded CPU). torch
runs torch's default thread count, as `plw serve` does (`--threads N` to pin it; on a CPU shared
with other jobs 1 thread avoids spinning against them). Results:
bench/results/serve_inference[_quick].json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOLLM = REPO.parent / "shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
INSTRUCTIONS = REPO.parent / "shared/data/instructions/alpaca_gpt4_demo.json"


def _prompts(n: int) -> list[str]:
    if INSTRUCTIONS.is_file():
        rows = json.loads(INSTRUCTIONS.read_text())
        texts = [(r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")) for r in rows]
    else:
        texts = [f"Write a sentence about the number {i}." for i in range(64)]
    return [texts[i % len(texts)] for i in range(n)]


async def _level(engine, source: str, clients: int, per_client: int, max_tokens: int) -> dict:
    from plw.serve.inference import SamplingParams, chat_prompt_ids, generate

    batcher = await engine.amodel(source)
    tok = batcher.lm.tokenizer
    prompts = [chat_prompt_ids(tok, [{"role": "user", "content": p}]) for p in _prompts(clients * per_client)]
    params = SamplingParams(max_tokens=max_tokens, temperature=0)
    latencies: list[float] = []

    async def client(k: int) -> int:
        tokens = 0
        for j in range(per_client):
            t = time.perf_counter()
            g = await generate(batcher, prompts[k * per_client + j], params)
            latencies.append(time.perf_counter() - t)
            tokens += g.usage["completion_tokens"]
        return tokens

    batcher.max_rows_seen = 0
    start, cpu = time.perf_counter(), time.process_time()
    tokens = sum(await asyncio.gather(*(client(k) for k in range(clients))))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"clients": clients, "requests": clients * per_client, "completion_tokens": tokens,
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "tokens_per_s": round(tokens / wall, 2),
            "tokens_per_cpu_s": round(tokens / cpu, 2),
            "max_batch_rows": batcher.max_rows_seen,
            "mean_latency_s": round(sum(latencies) / len(latencies), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(SMOLLM), help="builtin:tiny, a directory or a .gguf file")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--requests", type=int, default=16, help="requests per level (at least one per client)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, as plw serve)")
    ap.add_argument("--quick", action="store_true", help="8 requests of 16 tokens per level")
    ap.add_argument("-o", "--output", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.model == str(SMOLLM) and not SMOLLM.is_file():
        print(f"skip: {SMOLLM} is not here", file=sys.stderr)
        return 0
    if args.quick:
        args.requests, args.max_tokens = 8, 16
    import torch

    from plw.serve.inference import InferenceEngine

    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    engine = InferenceEngine(max_batch_size=64)
    t = time.perf_counter()
    engine.model(args.model)
    load_s = time.perf_counter() - t
    levels = [int(c) for c in args.clients.split(",")]

    async def run_all():
        # warm-up: one short request (first calls allocate)
        await _level(engine, args.model, 1, 1, 4)
        return [await _level(engine, args.model, c, max(1, args.requests // c), args.max_tokens) for c in levels]

    rows = asyncio.run(run_all())
    engine.close()
    base = rows[0]["tokens_per_s"]
    for r in rows:
        r["speedup_vs_one_at_a_time"] = round(r["tokens_per_s"] / base, 2)
        r["cpu_speedup_vs_one_at_a_time"] = round(r["tokens_per_cpu_s"] / rows[0]["tokens_per_cpu_s"], 2)
        print(f"{r['clients']:>3} clients: {r['tokens_per_s']:8.1f} tokens/s  "
              f"({r['speedup_vs_one_at_a_time']:.2f} x; per CPU-second {r['tokens_per_cpu_s']:.1f}, "
              f"{r['cpu_speedup_vs_one_at_a_time']:.2f} x; batch up to {r['max_batch_rows']} rows, "
              f"mean latency {r['mean_latency_s']} s)")
    result = {"bench": "serve_inference", "model": args.model, "max_tokens": args.max_tokens,
              "threads": args.threads, "load_s": round(load_s, 1), "levels": rows,
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "load_avg_at_end": os.getloadavg(), "torch": torch.__version__}}
    out = args.output or REPO / "bench/results" / f"serve_inference{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
