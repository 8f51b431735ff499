"""The GPU check's driver: run by bench/gpu_check.sh, which installs the carried wheels first.

    bench/gpu_check.sh OUTDIR              on the GPU machine (docs/benchmarks.md, "GPU check")
    bench/gpu_check.sh --dry-run OUTDIR    on a CPU machine: the wheel set and every step, without CUDA

Steps, each in its own process group with a timeout, all within BUDGET_S of gpu_check.sh's start:
  wheels  dry run: .whl/ holds exactly bench/gpu_wheels.txt, tagged for CPython 3.12 manylinux x86_64,
          and their requirements resolve against the wheels plus bench/gpu_machine.txt (pip resolves
          the pins from .whl/ for 3.12 too). On the machine: the same requirements against what is
          installed.
  probe   the machine: Python, torch, the GPU, package versions, which imports work (env.json)
  pytest  `pytest -m cuda` over the test files that hold cuda-marked tests (pytest_cuda.xml); in the
          dry run they must all be collected and skip
  loss    bench/loss.py --gpu-check (loss_gpu.json); dry run: --quick
  train   bench/train.py --gpu (train_gpu.json); dry run: --quick
Everything the steps print goes to gpu_check.log; summary.json holds each step's status and time and
the figures that decide the targets. At most 6 files, none in a subfolder (the device tool returns 8).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS_TXT = REPO / "bench" / "gpu_wheels.txt"
MACHINE_TXT = REPO / "bench" / "gpu_machine.txt"
BUDGET_S = 480  # the whole check, from gpu_check.sh's start (gpu_check.sh kills at 525 s)
RESERVE_S = 15  # kept for the summary after the last step
# (seconds on the GPU, seconds in the dry run) per step; a step never runs past the budget's end
STEP_TIMEOUTS = {"wheels": (30, 60), "probe": (45, 60), "pytest": (110, 150), "loss": (165, 150),
                 "train": (150, 150)}
STEPS = list(STEP_TIMEOUTS)
PYTHON_TAGS = {"py3", "py312", "cp312", "py2.py3"}
ABI_TAGS = {"none", "abi3", "cp312"}
TARGET_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
# plw requirements that only plw.eval or plw.serve import: the GPU machine may lack them
NOT_ON_THE_PATH = {"lm-eval", "rouge-score", "fastapi", "uvicorn", "sqlalchemy", "python-multipart"}
DRY_TRAIN_ROWS = "trl_completion_only,plw_0,trl_completion_only_liger,plw_0_liger"
IMPORTS = ["plw.loss", "plw.train.trainer", "trl", "datasets", "pydantic", "liger_kernel",
           "cut_cross_entropy", "plw.integrations.trl"]
DRY_IMPORTS = ["plw.loss", "pydantic"]  # the dry run's probe: the steps import the rest anyway


# ----------------------------------------------------------------------------------- wheel set
def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_list(path: Path) -> dict[str, str | None]:
    """`name==version` or `name` per line (comments after #) -> {canonical name: version or None}."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canonical(name)] = version.strip() or None
    return out


def wheel_meta(path: Path) -> dict:
    """Name, version and tags from a wheel's file name; its unconditional requirements from METADATA."""
    parts = path.name[:-4].split("-")
    if len(parts) not in (5, 6):
        raise ValueError(f"{path.name}: not a wheel file name")
    name, version, pyt, abi, plat = parts[0], parts[1], parts[-3], parts[-2], parts[-1]
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode("utf-8", "replace")
    requires = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]
    return {"file": path.name, "name": canonical(name), "version": version, "python": pyt, "abi": abi,
            "platform": plat, "requires": requires, "bytes": path.stat().st_size}


def tag_ok(w: dict) -> bool:
    plats = w["platform"].split(".")
    return (bool(PYTHON_TAGS & set(w["python"].split("."))) and bool(ABI_TAGS & set(w["abi"].split(".")))
            and all(p == "any" or (p.startswith("manylinux") and p.endswith("_x86_64")) for p in plats))


def check_wheels(folder: Path, pins: dict, have: dict) -> dict:
    """Errors and unverified requirements of the wheel set in `folder` for the GPU machine.

    pins: {name: version} that must be there, exactly; have: {name: version or None} already on the
    machine. A requirement is met by a wheel of the set, else by the machine; where the machine's
    version is unknown it counts as "unverified", not as an error.
    """
    from packaging.requirements import Requirement

    errors, unverified = [], []
    wheels = [wheel_meta(p) for p in sorted(folder.glob("*.whl"))]
    stray = sorted(p.name for p in folder.iterdir() if p.suffix != ".whl") if folder.is_dir() else []
    errors += [f"{n}: not a wheel" for n in stray]
    by_name: dict[str, list[dict]] = {}
    for w in wheels:
        by_name.setdefault(w["name"], []).append(w)
        if not tag_ok(w):
            errors.append(f"{w['file']}: not installable on CPython 3.12 manylinux x86_64")
    for name, ws in by_name.items():
        if len(ws) > 1:
            errors.append(f"{name}: {len(ws)} versions ({', '.join(w['version'] for w in ws)}); keep one")
        if name not in pins:
            errors.append(f"{name}: not in {WHEELS_TXT.name}")
        elif ws[0]["version"] != pins[name]:
            errors.append(f"{name}: {ws[0]['version']} in the folder, {pins[name]} pinned")
    errors += [f"{name}=={v}: missing (run bench/gpu_wheels.sh)" for name, v in pins.items() if name not in by_name]
    carried = {name: ws[0]["version"] for name, ws in by_name.items()}
    for w in wheels:
        for text in w["requires"]:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(TARGET_ENV):
                continue  # an extra, or another platform
            name = canonical(req.name)
            if name in carried:
                version, where = carried[name], "carried"
            elif name in have:
                version, where = have[name], "the machine has"
            else:
                errors.append(f"{w['name']} needs {text}: neither carried nor on the machine")
                continue
            if version is None and req.specifier:
                unverified.append(f"{w['name']} needs {text}: on the machine, version unknown")
            elif version is not None and req.specifier and not req.specifier.contains(version, prereleases=True):
                errors.append(f"{w['name']} needs {text}; {where} {version}")
    return {"errors": errors, "unverified": unverified, "wheels": len(wheels),
            "bytes": sum(w["bytes"] for w in wheels)}


def check_plw_requirements(pins: dict, have: dict) -> dict:
    """plw's own requirements (pyproject: dependencies and the gpu extra) against the wheels plus the
    machine; packages only plw.eval imports are not on the check's path and may be absent."""
    from packaging.requirements import Requirement

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return {"errors": [], "unverified": ["plw's own requirements: not checked (no tomllib before Python 3.11)"]}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    errors, unverified = [], []
    for text in project["dependencies"] + project["optional-dependencies"]["gpu"]:
        req = Requirement(text)
        name = canonical(req.name)
        version = pins.get(name, have.get(name))
        if name not in pins and name not in have:
            if name not in NOT_ON_THE_PATH:
                errors.append(f"plw needs {text}: neither carried nor on the machine")
        elif version is None and req.specifier:
            unverified.append(f"plw needs {text}: on the machine, version unknown")
        elif version is not None and req.specifier and not req.specifier.contains(version, prereleases=True):
            errors.append(f"plw needs {text}; {'carried' if name in pins else 'the machine has'} {version}")
    return {"errors": errors, "unverified": unverified}


def pip_resolves(folder: Path, pins: dict) -> tuple[bool, str]:
    """pip itself resolves every pin from `folder` alone for CPython 3.12 manylinux x86_64."""
    plats = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
             for a in ("--platform", p)]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index",
               "--no-deps", "--find-links", str(folder), "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", *plats, "--target", tmp, *[f"{n}=={v}" for n, v in pins.items()]]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull  # only the folder: no index, no site find-links
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def step_wheels(dry: bool) -> int:
    """The wheels step; prints what it finds and returns 0 when the set is good."""
    pins = read_list(WHEELS_TXT)
    if dry:
        folder = REPO / ".whl"
        if not folder.is_dir():
            print(f"wheel check FAILED: {folder} is absent; build it with bench/gpu_wheels.sh "
                  "(or pass --skip-wheels to check the other steps only)")
            return 1
        have = read_list(MACHINE_TXT)
        res = check_wheels(folder, pins, have)
        plw_res = check_plw_requirements(pins, have)
        res["errors"] += plw_res["errors"]
        res["unverified"] += plw_res["unverified"]
        ok, out = pip_resolves(folder, pins)
        print(out)
        if not ok:
            res["errors"].append("pip could not resolve the pins from .whl/ for CPython 3.12 (output above)")
        py312 = os.environ.get("PLW_PY312")
        if py312:  # an interpreter of the machine's Python: install for real and import what can be
            res["errors"] += import_with(py312, folder)
        else:
            print("PLW_PY312 not set: the wheels were not installed with a CPython 3.12 (optional)")
    else:
        res = check_installed(pins)
        plw_res = check_plw_requirements({}, installed_versions())
        res["errors"] += plw_res["errors"]
        res["unverified"] += plw_res["unverified"]
    for line in res["unverified"]:
        print(f"unverified: {line}")
    for line in res["errors"]:
        print(f"ERROR: {line}")
    what = f"{res['wheels']} wheels, {res['bytes'] / 2**20:.1f} MiB" if dry else f"{len(pins)} pinned packages installed"
    print(f"{what}; {len(res['errors'])} errors, {len(res['unverified'])} unverified")
    return 1 if res["errors"] else 0


def import_with(python: str, folder: Path) -> list[str]:
    """Install the wheels with `python` (a CPython 3.12) into a temporary target and import the
    packages whose own requirements travel with them (the rest need torch and the machine)."""
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                            "--target", tmp, *map(str, sorted(folder.glob("*.whl")))],
                           capture_output=True, text=True)
        if r.returncode:
            return [f"{python}: pip install of .whl/ failed: {r.stderr.strip()[-500:]}"]
        code = "import sys; assert sys.version_info[:2] == (3, 12), sys.version; " \
               "import pydantic, pydantic_core, typing_extensions, annotated_types, typing_inspection, dill, multiprocess"
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": tmp})
        print(f"installed .whl/ with {python} and imported pydantic, dill, multiprocess: "
              f"{'ok' if r.returncode == 0 else 'FAILED'}")
        return [] if r.returncode == 0 else [f"{python}: {r.stderr.strip()[-500:]}"]


def installed_versions() -> dict:
    """{canonical name: version} of every distribution on this interpreter's path (first one wins)."""
    from importlib.metadata import distributions

    out = {}
    for dist in distributions():
        name = canonical(dist.metadata["Name"] or "")
        out.setdefault(name, dist.version)
    return out


def check_installed(pins: dict) -> dict:
    """On the machine: the pinned versions are the ones imported, and their requirements are met."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    errors, unverified = [], []
    for name, version in pins.items():
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            errors.append(f"{name}: not installed")
            continue
        if dist.version != version:
            errors.append(f"{name}: {dist.version} found first on the path, {version} pinned")
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**TARGET_ENV, "python_full_version":
                                                                   ".".join(map(str, sys.version_info[:3]))}):
                continue
            try:
                have = distribution(req.name).version
            except PackageNotFoundError:
                errors.append(f"{name} needs {text}: not installed")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                unverified.append(f"{name} needs {text}, found {have} (imports may still work)")
    return {"errors": errors, "unverified": unverified}


# ----------------------------------------------------------------------------------------- probe
def probe(modules=IMPORTS) -> dict:
    """What the machine is: printed as JSON by `gpu_check.py --probe` (the step's env.json)."""
    import importlib
    import platform
    from importlib.metadata import PackageNotFoundError, version

    info = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
            "cpus": os.cpu_count(), "pythonpath": os.environ.get("PYTHONPATH", "")}
    try:
        import torch
        info["torch"] = torch.__version__
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_bytes": p.total_memory,
                           "cuda": torch.version.cuda, "count": torch.cuda.device_count()}
            try:
                info["ceilings"] = ceilings()
            except Exception as e:  # a ceiling that cannot be measured must not hide the rest
                info["ceilings"] = f"FAILED: {e!r}"[:300]
    except Exception as e:  # the probe reports; it does not stop the check
        info["torch_error"] = repr(e)
    names = sorted(set(read_list(WHEELS_TXT)) | set(read_list(MACHINE_TXT)) - {"python"})
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    info["versions"] = versions
    imports = {}
    for mod in modules:
        try:
            m = importlib.import_module(mod)
            imports[mod] = str(Path(getattr(m, "__file__", "") or "").parent)
        except Exception as e:
            imports[mod] = f"FAILED: {e!r}"[:300]
    info["imports"] = imports
    try:
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout[-3000:]
    except (OSError, subprocess.TimeoutExpired) as e:
        info["nvidia_smi"] = f"not available: {e}"
    return info


def ceilings() -> dict:
    """The two ceilings the benchmarks' figures are read against (median of 10 timed runs each, after
    a warm-up, on random data): a bf16 8192³ matmul's rate and a 2 GiB device-to-device copy's rate."""
    import statistics

    import torch

    def timed(fn, reps=10):
        fn()
        torch.cuda.synchronize()
        out = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        return statistics.median(out)

    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    mm_s = timed(lambda: a @ b)
    del a, b
    src = torch.randn(1 << 29, device="cuda")  # 2 GiB of fp32
    dst = torch.empty_like(src)
    copy_s = timed(lambda: dst.copy_(src))
    nbytes = 2 * src.numel() * src.element_size()  # read + write
    del src, dst
    torch.cuda.empty_cache()
    return {"bf16_matmul_tflops": 2 * n ** 3 / mm_s / 1e12, "copy_gb_per_s": nbytes / copy_s / 1e9}


# ----------------------------------------------------------------------------------------- steps
def cuda_test_files() -> list[str]:
    """Test files that hold cuda-marked tests (marked by decorator or by `pytestmark`)."""
    files = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        if re.search(r"pytest\.mark\.cuda\b", path.read_text()):
            files.append(str(path.relative_to(REPO)))
    return files


def step_commands(dry: bool, out: Path) -> dict[str, list[str]]:
    py = sys.executable
    here = [py, str(Path(__file__).resolve())]
    quick = ["--quick", "--steps", "1"] if dry else []
    return {
        "wheels": [*here, "--wheels"] + (["--dry-run"] if dry else []),
        "probe": [*here, "--probe", str(out / "env.json")] + (["--dry-run"] if dry else []),
        "pytest": [py, "-m", "pytest", "-m", "cuda", "-q", "-rA", "-p", "no:cacheprovider",
                   f"--junitxml={out / 'pytest_cuda.xml'}", *cuda_test_files()],
        "loss": [py, "bench/loss.py", "--gpu-check", *quick, "--worker-timeout", "120" if not dry else "100",
                 "--out", str(out / "loss_gpu.json")],
        # dry run: every code path of the GPU rows but plw_0.1 (plw_0's with other weights)
        "train": [py, "bench/train.py", "--gpu", *quick, "--row-timeout", "100" if dry else "75",
                  *(["--warmup", "1", "--rows", DRY_TRAIN_ROWS] if dry else ["--steps", "4", "--warmup", "2"]),
                  "--out", str(out / "train_gpu.json")],
    }


def run_step(name: str, cmd: list[str], log, timeout: float) -> dict:
    """Run one step in its own process group (so its workers die with it on a timeout)."""
    t0 = time.time()
    if timeout < 10:
        return {"status": "skipped", "reason": "no time left in the budget", "seconds": 0.0}
    log.write(f"\n===== {name}: {' '.join(cmd)} (timeout {timeout:.0f} s)\n")
    log.flush()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        rc = proc.wait(timeout=timeout)
        status = "passed" if rc == 0 else "failed"
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        rc, status = None, "timeout"
    seconds = time.time() - t0
    log.write(f"===== {name}: {status} (rc {rc}) in {seconds:.1f} s\n")
    log.flush()
    return {"status": status, "returncode": rc, "seconds": round(seconds, 1)}


# --------------------------------------------------------------------------------------- summary
def pytest_counts(xml: Path) -> dict:
    """Totals and the failing tests from the junit XML."""
    import xml.etree.ElementTree as ET

    if not xml.exists():
        return {}
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failing = []
    for case in suite.iter("testcase"):
        for kind in ("failure", "error"):
            el = case.find(kind)
            if el is not None:
                failing.append(f"{case.get('classname')}::{case.get('name')}: {(el.get('message') or '')[:200]}")
    counts["failing"] = failing
    return counts


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def figures(out: Path) -> dict:
    """The numbers that decide the issue's targets, from the steps' JSON."""
    loss, train = read_json(out / "loss_gpu.json"), read_json(out / "train_gpu.json")
    shapes = []
    for s in loss.get("shapes", []):
        shapes.append({"n": s["n"], "d": s["d"], "v": s["v"],
                       "methods": {m: {k: r.get(k) for k in ("time_s", "peak_extra_bytes", "mem_vs_ideal",
                                                             "time_vs_cce_exact", "time_ratio", "skipped")
                                       if k in r} for m, r in s.get("methods", {}).items()},
                       "suggested_defaults": s.get("sweep", {}).get("suggested")})
    rows = {k: {m: r.get(m) for m in ("tokens_per_s", "step_s", "peak_bytes", "skipped", "failed") if m in r}
            for k, r in train.get("results", {}).items()}
    return {"loss_targets": loss.get("targets"), "loss_shapes": shapes,
            "loss_exactness": loss.get("exactness_max_rel_err"),
            "train_rows": rows, "train_ratios": train.get("gpu_ratios")}


def dry_pytest_ok(counts: dict) -> bool:
    """Without CUDA every cuda test must be collected and skipped (none may run or fail)."""
    return counts.get("tests", 0) > 0 and counts.get("skipped") == counts.get("tests")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="folder for the JSON and the log")
    ap.add_argument("--dry-run", action="store_true", help="CPU machine: check the wheels and run the steps without CUDA")
    ap.add_argument("--skip-wheels", action="store_true", help="dry run without the wheel check (no .whl/ here)")
    ap.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps (default {','.join(STEPS)})")
    ap.add_argument("--start", type=float, default=None, help="epoch seconds the check started (gpu_check.sh)")
    ap.add_argument("--wheels", action="store_true", help=argparse.SUPPRESS)  # the wheels step itself
    ap.add_argument("--probe", type=Path, help=argparse.SUPPRESS)  # the probe step itself
    args = ap.parse_args(argv)
    if args.wheels:
        return step_wheels(args.dry_run)
    if args.probe:
        info = probe(DRY_IMPORTS if args.dry_run else IMPORTS)
        args.probe.write_text(json.dumps(info, indent=1))
        print(json.dumps({k: v for k, v in info.items() if k not in ("versions", "nvidia_smi")}, indent=1))
        print(info["nvidia_smi"])
        return 0
    if args.out is None:
        ap.error("--out is required")
    only = args.only.split(",")
    unknown = sorted(set(only) - set(STEPS))
    if unknown:
        ap.error(f"unknown step(s) {', '.join(unknown)}; steps are {', '.join(STEPS)}")
    start = args.start or time.time()
    deadline = start + BUDGET_S
    args.out.mkdir(parents=True, exist_ok=True)
    commands = step_commands(args.dry_run, args.out)
    summary = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
               "budget_s": BUDGET_S, "steps": {}}
    with open(args.out / "gpu_check.log", "a") as log:
        for name in STEPS:
            if name not in only:
                continue
            if name == "wheels" and args.skip_wheels:
                summary["steps"][name] = {"status": "skipped", "reason": "--skip-wheels: .whl/ not checked"}
                print(f"{name:7s} skipped (--skip-wheels: the wheel set was not checked)", flush=True)
                continue
            limit = STEP_TIMEOUTS[name][1 if args.dry_run else 0]
            res = run_step(name, commands[name], log, min(limit, deadline - RESERVE_S - time.time()))
            if name == "pytest":
                res["counts"] = pytest_counts(args.out / "pytest_cuda.xml")
                if args.dry_run and res["status"] == "passed" and not dry_pytest_ok(res["counts"]):
                    res["status"] = "failed"
                    res["reason"] = "without CUDA every cuda test must be collected and skipped"
            summary["steps"][name] = res
            print(f"{name:7s} {res['status']:8s} {res.get('seconds', 0):6.1f} s", flush=True)
    summary["seconds"] = round(time.time() - start, 1)
    summary["figures"] = figures(args.out)
    from plw.io import write_json_atomic

    write_json_atomic(args.out / "summary.json", summary)
    print(json.dumps(summary["figures"], indent=1, default=str)[-6000:])
    bad = [n for n, r in summary["steps"].items() if r["status"] not in ("passed", "skipped")]
    print(f"gpu check {'(dry run) ' if args.dry_run else ''}{'FAILED: ' + ', '.join(bad) if bad else 'passed'} "
          f"in {summary['seconds']:.0f} s; JSON and log in {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
