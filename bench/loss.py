"""Benchmark of the weighted loss alone (forward + backward): plw's chunked engine vs the baselines.

    python bench/loss.py                      # CPU shapes (or GPU shapes when CUDA is available)
    python bench/loss.py --quick              # one small shape, 3 steps (a smoke run)
    python bench/loss.py --gpu-check          # the GPU check (bench/gpu_check.sh): see below

--gpu-check (CUDA; with --quick a tiny CPU smoke run of the same steps): N in {4096, 16384}, d = 4096,
V = 128256, bf16; rows hf_naive, cce_exact, liger, plw, plw_vocab_blocks; then a sweep of chunk sizes
for both strategies in one process per shape (the candidates for the CUDA defaults in
plw/loss/chunked.py's DEVICE_DEFAULTS); then the issue's targets printed as ratios: time <= 1.0 x CCE
exact (filter_eps=None, weighted), peak extra memory <= 1.2 x (dH + dW + one chunk).

Rows "plw" (strategy="auto" = token chunks) and "plw_vocab_blocks" (strategy="vocab_blocks"). On CPU a
bf16 memory check of the two strategies follows (N=4096, d=1024, V=32000; --no-memcheck skips it): peak
extra memory over (dH + dW in bf16 + one fp32 chunk of logits of the strategy's own chunk size).

Each method runs in a fresh subprocess. Peak extra memory is, on CPU, the rise of the resident set
(VmHWM after /proc/self/clear_refs, with glibc's mmap threshold fixed so that large tensors go back to
the OS when freed) over the resident set before the timed steps; on GPU, max_memory_allocated minus
memory_allocated before them. Both gradients (hidden and head) are kept alive to the end of each step
in every method, so they count in every row. Time is the median of the timed steps. Ratios are
against "hf_naive" (materialised fp32 logits + per-token CE weighted by hand) measured in the same run.
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
CPU_SHAPES = [(4096, 512, 32000), (8192, 1024, 32000)]
GPU_SHAPES = [(4096, 4096, 128256), (16384, 4096, 128256)]
METHODS = ["hf_naive", "trl_chunked", "cce", "cce_exact", "liger", "plw", "plw_vocab_blocks"]
# bf16 memory check of the two plw strategies (CPU; the accounting is device-independent)
MEMCHECK_SHAPE = (4096, 1024, 32000)
MEMCHECK_METHODS = ["plw", "plw_vocab_blocks"]
SEQ = 512  # tokens per sequence: the N tokens form a [N / SEQ, SEQ] batch
PLW = 0.1  # every row is kept (weight > 0), so every method does the same 6·N·d·V work
MMAP_THRESHOLD = 1 << 20
# Rows that run on CUDA only: on CPU the driver records the reason without starting a worker.
CUDA_ONLY = {"cce_exact": "skipped: gradient filtering is a CUDA-kernel option (CPU rows are exact)",
             "liger": "skipped: Liger kernels are Triton (CUDA) only"}
# The GPU check (--gpu-check): rows, chunk sizes swept per strategy ("auto" = the current default), targets
GPU_CHECK_METHODS = ["hf_naive", "cce_exact", "liger", "plw", "plw_vocab_blocks"]
SWEEP_CHUNKS = {"gpu": ["auto", 512, 1024, 2048, 4096], "quick": ["auto", 128]}
SWEEP_STRATEGIES = ["token_chunks", "vocab_blocks"]
TARGETS = {"time_vs_cce_exact": 1.0, "mem_vs_ideal": 1.2}  # the GPU targets (<=)


# ----------------------------------------------------------------------------------------- worker
def _inputs(n, d, v, dtype, device):
    import torch
    g = torch.Generator(device=device).manual_seed(0)  # drawn where they live: GPU shapes are large
    b = max(1, n // SEQ)
    hidden = torch.randn(b, n // b, d, generator=g, device=device).to(dtype).requires_grad_()
    weight = (torch.randn(v, d, generator=g, device=device) / d ** 0.5).to(dtype).requires_grad_()
    labels = torch.randint(0, v, (b, n // b), generator=g, device=device)
    weights = torch.ones(b, n // b)
    weights[:, : (n // b) // 4] = PLW  # first quarter of each sequence is "prompt"
    return hidden, weight, labels, weights.to(device)


def _method(name, hidden, weight, labels, weights):
    """A closure computing the weighted loss (Σ w·ℓ / Σ w over shifted targets) by method `name`."""
    import torch
    import torch.nn.functional as F

    y = labels[:, 1:].reshape(-1)
    w = weights[:, 1:].reshape(-1).float()
    z = w.sum()
    d = hidden.shape[-1]

    if name == "hf_naive":
        def step():
            logits = (hidden @ weight.t()).float()  # what HF's LlamaForCausalLM materialises
            per = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), y, reduction="none")
            return (per * w).sum() / z
    elif name == "trl_chunked":
        from torch.utils.checkpoint import checkpoint

        def chunk_loss(h, yc, wc):
            logits = (h @ weight.t()).float()
            return (F.cross_entropy(logits, yc, reduction="none") * wc).sum()

        def step():
            h = hidden[:, :-1].reshape(-1, d)
            total = 0.0
            for s in range(0, h.shape[0], 1024):  # recompute-in-backward chunks, TRL/torchtune style
                total = total + checkpoint(chunk_loss, h[s:s + 1024], y[s:s + 1024], w[s:s + 1024],
                                           use_reentrant=False)
            return total / z
    elif name in ("cce", "cce_exact"):
        lce = _load_cce(hidden.is_cuda)
        # "cce": CCE's defaults, which skip gradient blocks below its filter threshold (approximate);
        # "cce_exact": filter_eps=None, the like-for-like comparison with plw's exact engine.
        extra = {"filter_eps": None} if name == "cce_exact" else {}
        if name == "cce_exact" and not hidden.is_cuda:
            raise RuntimeError(CUDA_ONLY[name])

        def step():
            h = hidden[:, :-1].reshape(-1, d)
            impl = "cce" if hidden.is_cuda else "torch_compile"
            per = lce(h, weight, y, reduction="none", impl=impl, **extra)
            return (per.float() * w).sum() / z
    elif name == "liger":
        if not hidden.is_cuda:
            raise RuntimeError(CUDA_ONLY[name])
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
        fn = LigerFusedLinearCrossEntropyLoss(reduction="none")

        def step():
            per = fn(weight, hidden[:, :-1].reshape(-1, d), y)
            return (per.float() * w).sum() / z
    elif name in ("plw", "plw_vocab_blocks"):
        from plw.loss import linear_cross_entropy
        strategy = "vocab_blocks" if name == "plw_vocab_blocks" else "auto"

        def step():
            return linear_cross_entropy(hidden, weight, labels, weights, strategy=strategy).loss
    else:
        raise ValueError(name)
    return step


def _load_cce(cuda: bool):
    """CCE's package __init__ imports its Triton kernels unconditionally on Linux; its `torch_compile`
    implementation needs no Triton, so on CPU load that module alone."""
    try:
        from cut_cross_entropy import linear_cross_entropy
        return linear_cross_entropy
    except ImportError as e:
        if cuda or "triton" not in str(e):
            raise RuntimeError(f"skipped: cut-cross-entropy not importable ({e})") from e
    import importlib.util
    import types
    spec = importlib.util.find_spec("cut_cross_entropy")
    for k in [k for k in sys.modules if k.startswith("cut_cross_entropy")]:
        del sys.modules[k]
    pkg = types.ModuleType("cut_cross_entropy")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["cut_cross_entropy"] = pkg
    from cut_cross_entropy.torch_compile import torch_compile_linear_cross_entropy

    def lce(e, c, targets, reduction, impl):
        return torch_compile_linear_cross_entropy(e, c, targets, reduction=reduction)
    return lce


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _measure(step, hidden, weight, device, steps):
    """Warm-up step, then `steps` timed steps: (warm-up loss, wall times, CPU times, peak extra bytes)."""
    import ctypes
    import gc

    import torch

    def run():
        hidden.grad = weight.grad = None
        loss = step()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return float(loss)

    loss = run()  # warm-up (and torch.compile's compilation)
    hidden.grad = weight.grad = None
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        base = _rss_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    times, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else _rss_bytes("VmHWM"))
    hidden.grad = weight.grad = None
    return loss, times, cpu, peak - base


def worker(args) -> dict:
    import torch
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    hidden, weight, labels, weights = _inputs(args.n, args.d, args.v, dtype, device)
    if args.worker == "sweep":
        return {"method": "sweep", "device": device.type,
                "rows": sweep(args, hidden, weight, labels, weights, device)}
    step = _method(args.worker, hidden, weight, labels, weights)
    loss, times, cpu, peak_extra = _measure(step, hidden, weight, device, args.steps)
    return {"method": args.worker, "loss": loss, "time_s": statistics.median(times), "times_s": times,
            "cpu_s": statistics.median(cpu), "peak_extra_bytes": peak_extra, "device": device.type}


def sweep(args, hidden, weight, labels, weights, device) -> list[dict]:
    """Both strategies at each chunk size of SWEEP_CHUNKS, in this one process (memory per setting
    from the allocator's peak on CUDA; on CPU the resident-set peak, a rough figure here)."""
    from plw.loss import linear_cross_entropy

    rows = []
    for strategy in SWEEP_STRATEGIES:
        for chunk in SWEEP_CHUNKS[args.sweep]:
            def step(strategy=strategy, chunk=chunk):
                return linear_cross_entropy(hidden, weight, labels, weights, strategy=strategy,
                                            chunk_size=chunk).loss
            loss, times, cpu, peak_extra = _measure(step, hidden, weight, device, args.steps)
            rows.append({"strategy": strategy, "chunk": chunk, "loss": loss,
                         "time_s": statistics.median(times), "times_s": times,
                         "peak_extra_bytes": peak_extra})
    return rows


# ----------------------------------------------------------------------------------------- driver
def exactness() -> dict:
    """Max relative error (norm-wise, loss and both gradients) of the engine vs an fp64 reference."""
    import torch
    from plw.loss import linear_cross_entropy, weighted_cross_entropy

    g = torch.Generator().manual_seed(1)
    h64 = torch.randn(4, 128, 64, generator=g, dtype=torch.float64)
    w64 = torch.randn(4096, 64, generator=g, dtype=torch.float64) / 8
    labels = torch.randint(0, 4096, (4, 128), generator=g)
    weights = torch.where(torch.rand(4, 128, generator=g) < 0.3, 0.1, 1.0).double()

    def grads(fn, h, w):
        h = h.clone().requires_grad_()
        w = w.clone().requires_grad_()
        loss = fn(h, w)
        loss.backward()
        return [t.double() for t in (loss.detach(), h.grad, w.grad)]

    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        h, w = h64.to(dt), w64.to(dt)
        # The reference sees the same rounded inputs, so only the engine's arithmetic is measured.
        ref = grads(lambda h, w: weighted_cross_entropy(h @ w.t(), labels, weights).loss, h.double(), w.double())
        for strategy, key in (("auto", name), ("vocab_blocks", f"vocab_blocks_{name}")):
            got = grads(lambda h, w: linear_cross_entropy(h, w, labels, weights, strategy=strategy).loss, h, w)
            out[key] = max(float((a - b).norm() / b.norm()) for a, b in zip(got, ref))
    return out


def machine() -> dict:
    import torch
    model = platform.processor()
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run_worker(cmd, env, timeout=None) -> dict:
    """One worker process -> its JSON row, or {"skipped": reason} (its last stderr line, or a timeout)."""
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {timeout} s"}
    if r.returncode == 0:
        return json.loads(r.stdout.strip().splitlines()[-1])
    last = (r.stderr.strip().splitlines() or ["failed"])[-1]
    return {"skipped": last[:300], "returncode": r.returncode}


def sweep_rows(rows, n, d, v, dt, device, cce_exact) -> list[dict]:
    """Ratios of the sweep's rows: memory against (dH + dW + the row's own chunk), time against CCE
    exact and against the current default (strategy "auto" = token chunks, chunk "auto")."""
    import torch

    from plw.loss.chunked import auto_chunk_size
    from plw.loss.vocab_blocks import auto_token_chunk
    tdt = torch.bfloat16 if dt == "bf16" else torch.float32
    grads = (n * d + v * d) * (2 if dt == "bf16" else 4)
    default = next((r for r in rows if r["strategy"] == "token_chunks" and r["chunk"] == "auto"), None)
    for r in rows:
        c = r["chunk"]
        if c == "auto":
            c = (auto_chunk_size(n, v, device=device, dtype=tdt, softcap=False, hidden_size=d)
                 if r["strategy"] == "token_chunks" else auto_token_chunk(n, v, device=device, dtype=tdt))
        r["chunk_rows"] = min(c, n)
        r["ideal_bytes"] = grads + r["chunk_rows"] * v * 4
        r["mem_vs_ideal"] = r["peak_extra_bytes"] / r["ideal_bytes"]
        r["tflops"] = 6 * n * d * v / r["time_s"] / 1e12
        if cce_exact:
            r["time_vs_cce_exact"] = r["time_s"] / cce_exact
        if default:
            r["time_vs_default"] = r["time_s"] / default["time_s"]
    return rows


def suggest_defaults(rows) -> dict:
    """The fastest sweep setting, and the fastest within the memory target (the CUDA-default candidates;
    a person sets DEVICE_DEFAULTS from these, the bench changes nothing)."""
    def fastest(candidates):
        if not candidates:
            return None
        best = min(candidates, key=lambda r: r["time_s"])
        return {k: best[k] for k in ("strategy", "chunk", "chunk_rows", "time_s", "mem_vs_ideal")}

    within = [r for r in rows if r["mem_vs_ideal"] <= TARGETS["mem_vs_ideal"]]
    return {"fastest": fastest(rows), "fastest_within_memory_target": fastest(within)}


def gpu_targets(shape: dict) -> list[dict]:
    """The issue's GPU targets for plw's two strategy rows of one shape, as ratios (None = not measured)."""
    out = []
    for m in ("plw", "plw_vocab_blocks"):
        r = shape["methods"].get(m, {})
        for key, limit in TARGETS.items():
            value = r.get(key)
            out.append({"n": shape["n"], "method": m, "ratio": key, "value": value, "target": limit,
                        "met": None if value is None else value <= limit})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--sweep", default="gpu", help=argparse.SUPPRESS)  # the worker's SWEEP_CHUNKS key
    p.add_argument("--n", type=int)
    p.add_argument("--d", type=int)
    p.add_argument("--v", type=int)
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--methods", default=None, help=f"comma-separated (default {','.join(METHODS)})")
    p.add_argument("--quick", action="store_true", help="one small shape, 3 steps")
    p.add_argument("--gpu-check", action="store_true",
                   help="the GPU check's rows, chunk sweep and targets (needs CUDA unless --quick)")
    p.add_argument("--worker-timeout", type=float, default=None, help="seconds per worker process")
    p.add_argument("--no-memcheck", action="store_true", help="skip the CPU bf16 memory check of the strategies")
    p.add_argument("--memcheck-steps", type=int, default=2, help="timed steps of the bf16 memory check")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/loss_<device>.json)")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    import torch
    cuda = torch.cuda.is_available()
    if args.gpu_check and not cuda and not args.quick:
        p.error("--gpu-check needs CUDA (add --quick for a tiny smoke run of its steps on CPU)")
    shapes = GPU_SHAPES if cuda else CPU_SHAPES
    dtype = args.dtype or ("bf16" if cuda or args.gpu_check else "fp32")
    methods = (args.methods or ",".join(GPU_CHECK_METHODS if args.gpu_check else METHODS)).split(",")
    if args.n:
        shapes = [(args.n, args.d, args.v)]
    if args.quick:
        shapes, args.steps = [(1024, 256, 8000)], min(args.steps, 3)
    sweep_key = "quick" if args.quick else "gpu"
    # Workers see the repo first, then whatever the caller's path holds (e.g. carried wheels).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("OMP_NUM_THREADS", None)  # use every core, as training would

    from rich.console import Console
    from rich.table import Table

    from plw.io import write_json_atomic
    console = Console(width=140)
    results = {"machine": machine(), "load_avg_start": os.getloadavg(), "dtype": dtype, "steps": args.steps, "mmap_threshold": MMAP_THRESHOLD,
               "gpu_check": args.gpu_check, "exactness_max_rel_err": exactness(), "shapes": []}
    console.print(f"exactness vs fp64 (max relative error): {results['exactness_max_rel_err']}")
    dev = torch.device("cuda" if cuda else "cpu")
    # A --quick smoke run must not overwrite the recorded results.
    name = f"loss_{'gpu' if cuda else 'cpu'}{'_quick' if args.quick else ''}.json"
    out = Path(args.out) if args.out else REPO / "bench" / "results" / name

    def run_shape(n, d, v, dt, methods, steps, title=""):
        rows = {}
        for m in methods:
            if m in CUDA_ONLY and not cuda:
                rows[m] = {"method": m, "skipped": CUDA_ONLY[m]}
                continue
            cmd = [sys.executable, __file__, "--worker", m, "--n", str(n), "--d", str(d), "--v", str(v),
                   "--dtype", dt, "--steps", str(steps)]
            with console.status(f"N={n} d={d} V={v} {dt}: {m}"):
                rows[m] = {"method": m, **run_worker(cmd, env, args.worker_timeout)}
        base = rows.get("hf_naive", {})
        flops = 6 * n * d * v
        itemsize = 2 if dt == "bf16" else 4
        tdt = torch.bfloat16 if dt == "bf16" else torch.float32
        from plw.loss.chunked import auto_chunk_size
        from plw.loss.vocab_blocks import auto_token_chunk
        chunk_rows = {"plw": auto_chunk_size(n, v, device=dev, dtype=tdt, softcap=False, hidden_size=d),
                      "plw_vocab_blocks": auto_token_chunk(n, v, device=dev, dtype=tdt)}
        grads = (n * d + v * d) * itemsize  # dH + dW in the parameters' dtype
        for m, r in rows.items():
            if "time_s" in r:
                r["tflops"] = flops / r["time_s"] / 1e12  # useful work (6NdV), whatever the method does
                # GPU target: the two gradients plus one chunk of fp32 logits (the method's own chunk:
                # C rows x V for token chunks; a [N, Vb] block of the same C x V elements for vocab blocks)
                crow = chunk_rows.get(m, chunk_rows["plw"])
                r["chunk_rows"] = crow
                r["ideal_bytes"] = grads + crow * v * 4
                r["mem_vs_ideal"] = r["peak_extra_bytes"] / r["ideal_bytes"]
                if "time_s" in base:
                    r["time_ratio"] = r["time_s"] / base["time_s"]
                    r["cpu_ratio"] = r["cpu_s"] / base["cpu_s"]
                    r["mem_ratio"] = r["peak_extra_bytes"] / base["peak_extra_bytes"]
                for ref in ("cce", "cce_exact"):  # the GPU time target is against CCE
                    if "time_s" in rows.get(ref, {}):
                        r[f"time_vs_{ref}"] = r["time_s"] / rows[ref]["time_s"]

        t = Table(title=f"{title}N={n} d={d} V={v} {dt} (6NdV = {flops / 1e12:.2f} TFLOP)")
        for col in ("method", "time s", "× naive", "CPU s", "× naive", "peak extra MiB", "× naive",
                    "× (grads+chunk)", "TFLOP/s", "loss"):
            t.add_column(col)
        for m, r in rows.items():
            if "time_s" not in r:
                t.add_row(m, "skipped", *[""] * 8)
                continue
            t.add_row(m, f"{r['time_s']:.3f}", f"{r.get('time_ratio', float('nan')):.2f}",
                      f"{r['cpu_s']:.3f}", f"{r.get('cpu_ratio', float('nan')):.2f}",
                      f"{r['peak_extra_bytes'] / 2**20:.0f}", f"{r.get('mem_ratio', float('nan')):.3f}",
                      f"{r['mem_vs_ideal']:.3f}", f"{r['tflops']:.3f}", f"{r['loss']:.6f}")
        console.print(t)
        return {"n": n, "d": d, "v": v, "dtype": dt, "flops_per_step": flops,
                "plw_chunk_rows": chunk_rows["plw"], "chunk_rows": chunk_rows, "grads_bytes": grads,
                "methods": rows}

    def run_sweep(shape):
        n, d, v, dt = shape["n"], shape["d"], shape["v"], shape["dtype"]
        cmd = [sys.executable, __file__, "--worker", "sweep", "--sweep", sweep_key, "--n", str(n),
               "--d", str(d), "--v", str(v), "--dtype", dt, "--steps", str(min(args.steps, 3))]
        with console.status(f"N={n} d={d} V={v} {dt}: chunk sweep"):
            r = run_worker(cmd, env, args.worker_timeout)
        if "rows" not in r:
            shape["sweep"] = r
            console.print(f"chunk sweep skipped: {r['skipped']}")
            return
        cce = shape["methods"].get("cce_exact", {}).get("time_s")
        rows = sweep_rows(r["rows"], n, d, v, dt, dev, cce)
        shape["sweep"] = {"rows": rows, "suggested": suggest_defaults(rows)}
        from plw.loss.chunked import DEVICE_DEFAULTS
        t = Table(title=f"chunk sweep N={n} d={d} V={v} {dt} (defaults now: {DEVICE_DEFAULTS[dev.type]})")
        for col in ("strategy", "chunk", "rows C", "time s", "× default", "× CCE exact", "peak extra MiB",
                    "× (grads+chunk)", "TFLOP/s"):
            t.add_column(col)
        for x in rows:
            t.add_row(x["strategy"], str(x["chunk"]), str(x["chunk_rows"]), f"{x['time_s']:.4f}",
                      f"{x.get('time_vs_default', float('nan')):.3f}", f"{x.get('time_vs_cce_exact', float('nan')):.3f}",
                      f"{x['peak_extra_bytes'] / 2**20:.0f}", f"{x['mem_vs_ideal']:.3f}", f"{x['tflops']:.1f}")
        console.print(t)
        console.print(f"suggested (not applied): {shape['sweep']['suggested']}")

    for n, d, v in shapes:
        results["shapes"].append(run_shape(n, d, v, dtype, methods, args.steps))
        if args.gpu_check:
            run_sweep(results["shapes"][-1])
        write_json_atomic(out, results)  # after every shape: a run stopped later keeps what it measured
    if not cuda and not args.quick and not args.n and not args.no_memcheck and not args.gpu_check:
        # bf16 heads: the token-chunk engine's fp32 [V, d] accumulator vs the vocab-block strategy.
        n, d, v = MEMCHECK_SHAPE
        results["bf16_memcheck"] = run_shape(n, d, v, "bf16", MEMCHECK_METHODS, args.memcheck_steps,
                                             title="memory check: ")
    if args.gpu_check:
        results["targets"] = [t for shape in results["shapes"] for t in gpu_targets(shape)]
        console.print("targets (ratio <= target; None = not measured):")
        for t in results["targets"]:
            verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
            value = "-" if t["value"] is None else f"{t['value']:.3f}"
            console.print(f"  N={t['n']:<6} {t['method']:<17} {t['ratio']:<18} {value:>7} <= {t['target']}  {verdict}")
    results["load_avg_end"] = os.getloadavg()
    write_json_atomic(out, results)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
