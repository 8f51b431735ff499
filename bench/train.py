"""Benchmark of whole training steps: plw's PLWTrainer vs TRL's SFTTrainer (completion-only loss).

    python bench/train.py                 # CPU shape: d=512, 8 layers, V=32000, seq 512
    python bench/train.py --quick         # a small shape, for a smoke run
    python bench/train.py --gpu           # Llama-3.2-1B-shaped random init in bf16 (needs CUDA)
    python bench/train.py --gpu --quick   # the GPU rows on the small shape (a CPU smoke run of them)

Rows (each in a fresh subprocess, same random-init model, same data, same batch shape, no packing —
every example is exactly `seq` tokens, so padding plays no part):
  trl_completion_only  TRL SFTTrainer, `completion_only_loss=True` (prompt labels -100)
  plw_0                PLWTrainer at PLW 0 (same objective as the TRL row)
  plw_0_lognll         PLWTrainer at PLW 0, also logging the prompt NLL (the `log_prompt_nll` default)
  plw_0.1              PLWTrainer at PLW 0.1
  plw_1                PLWTrainer at PLW 1 (every row computed, as at PLW 0.1: the equal-work baseline)
Data are short-completion like the paper's AlpacaDataShort: 448 prompt + 64 completion tokens.
With --gpu the rows are GPU_ROWS: TRL with and without Liger (TRL applies Liger's layer kernels and
keeps its own fused LM head), PLWTrainer at PLW 0 with and without the same Liger layer kernels
(`use_liger_kernel=True` with Liger's fused loss off, as TRL does), and PLW 0.1. Liger rows run on
the GPU shape only (skipped with --quick); a failed row is recorded and the others still run. Target:
throughput >= 1.2 x TRL SFTTrainer in its best configuration (the faster TRL row).

Throughput = trained tokens per second over the timed optimizer steps (median step time, each from
the previous step's end to its own, so batch fetching and the normaliser count; the first
`--warmup` steps are not timed), in wall-clock and in process CPU time: torch runs one thread
(`BENCH_THREADS`), so on a shared CPU the CPU-time figures are the stable measure of work. Peak memory: on CPU the peak resident set (VmHWM) during the timed
steps, with glibc's mmap threshold fixed so large freed tensors return to the OS, reported both
absolute and above the resident set before the timed steps (model, optimizer state and data are in
the baseline); on GPU `max_memory_allocated`. Results go to bench/results/train[_gpu|_quick].json
(or --out), rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS = ["trl_completion_only", "plw_0", "plw_0_lognll", "plw_0.1", "plw_1"]
SHAPES = {
    "cpu": dict(hidden=512, layers=8, heads=8, inter=1376, vocab=32000, seq=512, batch=4, prompt=448),
    "quick": dict(hidden=128, layers=2, heads=4, inter=344, vocab=8000, seq=256, batch=2, prompt=224),
    "gpu": dict(hidden=2048, layers=16, heads=32, kv_heads=8, inter=8192, vocab=128256, seq=2048, batch=4,
                prompt=1792, tie=True),
}
MMAP_THRESHOLD = 1 << 20
# --gpu rows (in this order: the comparison the target needs first)
GPU_ROWS = ["trl_completion_only", "plw_0", "trl_completion_only_liger", "plw_0_liger", "plw_0.1"]
GPU_TARGET = 1.2  # plw throughput / TRL's best configuration


# ----------------------------------------------------------------------------------------- worker
def _rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _model(shape, device, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["inter"],
                      num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                      num_key_value_heads=shape.get("kv_heads", shape["heads"]), max_position_embeddings=4096,
                      tie_word_embeddings=shape.get("tie", False), bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it trains: a 1B model's init on CPU takes long
        model = LlamaForCausalLM(cfg)
    return model.to(dtype=dtype)


def _rows(shape, n, plw):
    import torch

    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(4, shape["vocab"], (shape["seq"],), generator=g).tolist()
        comp = [i >= shape["prompt"] for i in range(shape["seq"])]
        rows.append({"input_ids": ids, "attention_mask": [1] * shape["seq"], "labels": ids,
                     "weights": [1.0 if c else plw for c in comp], "completion_mask": comp})
    return rows


def worker(row: str, shape_name: str, steps: int, warmup: int) -> dict:
    import torch
    import trl  # noqa: F401  (every row imports TRL, so the resident-set baselines match)
    from transformers import TrainerCallback

    # One thread by default: the CPU is shared, and process CPU time per step is then a clean
    # measure of the work (OpenMP spin-waiting would inflate it with more threads).
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    shape = SHAPES[shape_name]
    gpu = shape_name == "gpu"
    device = "cuda" if gpu else "cpu"
    dtype = torch.bfloat16 if gpu else torch.float32
    total = warmup + steps
    model = _model(shape, device, dtype)
    plw = {"plw_0.1": 0.1, "plw_1": 1.0}.get(row, 0.0)
    liger = gpu_liger_args(row)
    rows = _rows(shape, shape["batch"] * total, plw)
    from plw.data.tokenizer import train_tokenizer

    tok = train_tokenizer(["a small text for a tokenizer"] * 4, vocab_size=300)
    times: list[float] = []
    cpu_times: list[float] = []
    mem: dict = {}

    class Timer(TrainerCallback):
        """Step time = from one optimizer step's end to the next's, so that everything the trainer
        does per step (fetching the micro-batches, plw's normaliser, the step itself) is timed."""

        def _now(self):
            if gpu:
                torch.cuda.synchronize()
            return time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            t, c = self._now()
            if state.global_step > warmup:
                times.append(t - self.t)
                cpu_times.append(c - self.c)
            elif state.global_step == warmup:  # warm-up done: start the memory window here
                if gpu:
                    torch.cuda.reset_peak_memory_stats()
                    mem["base"] = torch.cuda.memory_allocated()
                else:
                    with open("/proc/self/clear_refs", "w") as fh:
                        fh.write("5")
                    mem["base"] = _rss_kb("VmRSS") * 1024
                t, c = self._now()
            self.t, self.c = t, c

    common = dict(output_dir=f"/tmp/plw-bench-{row}", per_device_train_batch_size=shape["batch"],
                  gradient_accumulation_steps=1, learning_rate=1e-5, max_steps=total, report_to="none",
                  save_strategy="no", logging_steps=10_000, disable_tqdm=True, use_cpu=not gpu, bf16=gpu,
                  train_sampling_strategy="sequential", dataloader_num_workers=0, **liger)
    if row.startswith("trl_completion_only"):
        import datasets
        from trl import SFTConfig, SFTTrainer

        ds = datasets.Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows],
                                         "completion_mask": [[int(c) for c in r["completion_mask"]] for r in rows]})
        args = SFTConfig(**common, completion_only_loss=True, packing=False, max_length=shape["seq"])
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
    else:
        from transformers import TrainingArguments

        from plw.train.collator import PLWCollator
        from plw.train.trainer import PLWTrainer

        args = TrainingArguments(**common, remove_unused_columns=False)
        trainer = PLWTrainer(model=model, args=args, train_dataset=rows,
                             data_collator=PLWCollator(tok.pad_token_id), callbacks=[Timer()],
                             track_prompt_nll=row != "plw_0")
    trainer.train()
    if gpu:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _rss_kb("VmHWM") * 1024
    step = statistics.median(times)
    cpu_step = statistics.median(cpu_times)
    tokens = shape["batch"] * shape["seq"]
    return {"row": row, "device": device, "step_s": step, "step_times_s": times, "tokens_per_s": tokens / step,
            "cpu_step_s": cpu_step, "cpu_step_times_s": cpu_times, "tokens_per_cpu_s": tokens / cpu_step,
            "peak_bytes": peak, "peak_over_base_bytes": peak - mem.get("base", 0)}


def gpu_liger_args(row: str) -> dict:
    """Trainer arguments of a Liger row: Liger's layer kernels (RMSNorm, SwiGLU, RoPE), its fused loss off
    (TRL refuses it; plw keeps its own loss)."""
    if not row.endswith("_liger"):
        return {}
    return {"use_liger_kernel": True, "liger_kernel_config": {"fused_linear_cross_entropy": False,
                                                              "cross_entropy": False}}


# ----------------------------------------------------------------------------------------- driver
def run_row(row: str, shape: str, steps: int, warmup: int, timeout: float | None = None) -> dict:
    """One row in a fresh process; a failure or timeout is recorded as {"row", "failed"}."""
    if row.endswith("_liger") and shape != "gpu":
        return {"row": row, "skipped": "Liger rows run on the GPU shape only (Triton/CUDA kernels)"}
    # The worker sees the repo first, then whatever the caller's path holds (e.g. carried wheels).
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "PYTHONPATH": path,
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--worker", row, "--shape", shape, "--steps", str(steps),
           "--warmup", str(warmup)]
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"row": row, "failed": f"timed out after {timeout} s"}
    if res.returncode != 0:
        print(f"{row} failed:\n{res.stderr[-4000:]}", file=sys.stderr)
        return {"row": row, "failed": res.stderr[-2000:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def gpu_ratios(results: dict) -> dict:
    """plw's throughput against TRL's best configuration (the faster of the TRL rows that ran)."""
    trl = {k: r for k, r in results.items() if k.startswith("trl_") and "tokens_per_s" in r}
    plw = {k: r for k, r in results.items() if k.startswith("plw_0") and "tokens_per_s" in r
           and k != "plw_0.1"}  # same objective as TRL's completion-only loss: PLW 0
    if not trl or not plw:
        return {}
    best_trl = max(trl, key=lambda k: trl[k]["tokens_per_s"])
    best_plw = max(plw, key=lambda k: plw[k]["tokens_per_s"])
    ratio = plw[best_plw]["tokens_per_s"] / trl[best_trl]["tokens_per_s"]
    return {"trl_best_row": best_trl, "plw_best_row": best_plw, "plw_best_throughput_vs_trl_best": ratio,
            "plw_best_peak_vs_trl_best": plw[best_plw]["peak_bytes"] / trl[best_trl]["peak_bytes"],
            "target_throughput_vs_trl_best": GPU_TARGET, "target_met": ratio >= GPU_TARGET}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rows", default=None, help=f"comma-separated (default {','.join(ROWS)}; "
                                                 f"with --gpu {','.join(GPU_ROWS)})")
    ap.add_argument("--row-timeout", type=float, default=None, help="seconds per row process")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/train[_gpu|_quick].json)")
    ap.add_argument("--worker")
    ap.add_argument("--shape")
    args = ap.parse_args(argv)
    if args.warmup < 1:
        ap.error("--warmup must be >= 1 (a step time is measured from the previous step's end)")
    if args.worker:
        print(json.dumps(worker(args.worker, args.shape, args.steps, args.warmup)))
        return
    import torch

    if args.gpu and not args.quick and not torch.cuda.is_available():
        ap.error("--gpu needs CUDA (add --quick for a smoke run of the GPU rows on the small shape)")
    shape = "quick" if args.quick else ("gpu" if args.gpu else "cpu")
    rows = (args.rows or ",".join(GPU_ROWS if args.gpu else ROWS)).split(",")
    name = {"cpu": "train.json", "quick": "train_quick.json", "gpu": "train_gpu.json"}[shape]
    if args.gpu and args.quick:
        name = "train_gpu_quick.json"
    path = Path(args.out) if args.out else REPO / "bench" / "results" / name
    sys.path.insert(0, str(REPO))
    from importlib.metadata import version

    from rich.progress import Progress

    from plw.io import write_json_atomic

    results = {}
    out = {"shape": {"name": shape, **SHAPES[shape]}, "steps": args.steps, "warmup": args.warmup,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                       "torch": torch.__version__, "transformers": version("transformers"), "trl": version("trl")},
           "results": results, "ratios": {}}
    with Progress() as bar:
        task = bar.add_task(f"bench train ({shape})", total=len(rows))
        for row in rows:
            bar.update(task, description=f"bench train: {row}")
            results[row] = run_row(row, shape, args.steps, args.warmup, args.row_timeout)
            out["ratios"] = cpu_ratios(results)
            if args.gpu:
                out["gpu_ratios"] = gpu_ratios(results)
            write_json_atomic(path, out)  # after every row: a run stopped later keeps what it measured
            bar.advance(task)
    for row, r in results.items():
        if "tokens_per_s" not in r:
            print(f"{row:26s} {'skipped: ' + r['skipped'] if 'skipped' in r else 'FAILED'}")
            continue
        print(f"{row:26s} {r['tokens_per_s']:10.1f} tok/s  step {r['step_s']:.3f}s  cpu {r['cpu_step_s']:.3f}s  "
              f"peak {r['peak_bytes'] / 2**20:8.1f} MiB  (+{r['peak_over_base_bytes'] / 2**20:.1f} MiB)")
    for k, v in {**out["ratios"], **out.get("gpu_ratios", {})}.items():
        print(f"{k:40s} {v:.3f}" if isinstance(v, float) else f"{k:40s} {v}")
    print(f"wrote {path}")
    if any("failed" in r for r in results.values()):
        raise SystemExit(1)


def cpu_ratios(results: dict) -> dict:
    """The CPU rows' ratios (rows that did not run are left out)."""
    results = {k: r for k, r in results.items() if "tokens_per_s" in r}
    trl, p0 = results.get("trl_completion_only"), results.get("plw_0")
    ratios = {}
    if trl and p0:
        ratios["plw_0_throughput_vs_trl"] = p0["tokens_per_s"] / trl["tokens_per_s"]
        ratios["plw_0_cpu_throughput_vs_trl"] = p0["tokens_per_cpu_s"] / trl["tokens_per_cpu_s"]
        ratios["plw_0_peak_vs_trl"] = p0["peak_bytes"] / trl["peak_bytes"]
        ratios["plw_0_peak_over_base_vs_trl"] = p0["peak_over_base_bytes"] / trl["peak_over_base_bytes"]
    if p0 and "plw_0.1" in results:
        ratios["plw_0.1_step_time_vs_plw_0"] = results["plw_0.1"]["step_s"] / p0["step_s"]
        ratios["plw_0.1_cpu_step_time_vs_plw_0"] = results["plw_0.1"]["cpu_step_s"] / p0["cpu_step_s"]
    if "plw_0_lognll" in results and "plw_0.1" in results:
        ratios["plw_0.1_cpu_step_time_vs_plw_0_lognll"] = (results["plw_0.1"]["cpu_step_s"]
                                                          / results["plw_0_lognll"]["cpu_step_s"])
    if "plw_1" in results and "plw_0.1" in results:
        # Same rows through the head: what the fractional weight itself costs.
        ratios["plw_0.1_step_time_vs_plw_1"] = results["plw_0.1"]["step_s"] / results["plw_1"]["step_s"]
        ratios["plw_0.1_cpu_step_time_vs_plw_1"] = (results["plw_0.1"]["cpu_step_s"]
                                                   / results["plw_1"]["cpu_step_s"])
    return ratios


if __name__ == "__main__":
    main()
