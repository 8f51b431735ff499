"""The GPU check pack (bench/gpu_check.sh, bench/gpu_wheels.sh) on a CPU machine.

The wheel-set checker is tested on hand-built wheels (each fault it must name); the real `.whl/`
folder is checked when it exists (bench/gpu_wheels.sh builds it; it needs PyPI, so CI may skip);
the dry run then runs every step of the check without CUDA, with the wheel check left out here
because the test above covers it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wheel(folder: Path, filename: str, requires=()):
    name, version = filename.split("-")[:2]
    with zipfile.ZipFile(folder / filename, "w") as z:
        meta = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n".format(name, version)
        meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)


def test_wheel_check_passes_a_consistent_set(gc, tmp_path):
    _wheel(tmp_path, "a_pkg-1.0-py3-none-any.whl",
           ["b-pkg>=2", "torch>=2.5", "pyarrow>=20", "foo; extra == 'dev'", "bar; sys_platform == 'win32'",
            "baz; python_version < '3.10'"])
    _wheel(tmp_path, "b_pkg-2.0-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl")
    res = gc.check_wheels(tmp_path, {"a-pkg": "1.0", "b-pkg": "2.0"}, {"torch": "2.11.0", "pyarrow": None})
    assert res["errors"] == []
    assert res["unverified"] == ["a-pkg needs pyarrow>=20: on the machine, version unknown"]
    assert res["wheels"] == 2


@pytest.mark.parametrize("fault,expected", [
    ("second_version", "b-pkg: 2 versions"),
    ("machine_too_old", "a-pkg needs torch>=2.12; the machine has 2.11.0"),
    ("carried_too_old", "a-pkg needs b-pkg>=3; carried 2.0"),
    ("wrong_python", "c_pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.whl: not installable"),
    ("wrong_platform", "c_pkg-1.0-py3-none-macosx_11_0_arm64.whl: not installable"),
    ("unpinned", "c-pkg: not in gpu_wheels.txt"),
    ("missing", "d-pkg==1.0: missing (run bench/gpu_wheels.sh)"),
    ("nowhere", "a-pkg needs zzz: neither carried nor on the machine"),
    ("pin_mismatch", "b-pkg: 2.0 in the folder, 2.1 pinned"),
])
def test_wheel_check_names_each_fault(gc, tmp_path, fault, expected):
    requires = {"machine_too_old": ["torch>=2.12"], "carried_too_old": ["b-pkg>=3"], "nowhere": ["zzz"]}
    _wheel(tmp_path, "a_pkg-1.0-py3-none-any.whl", requires.get(fault, ["torch"]))
    _wheel(tmp_path, "b_pkg-2.0-py3-none-any.whl")
    pins = {"a-pkg": "1.0", "b-pkg": "2.1" if fault == "pin_mismatch" else "2.0"}
    if fault == "second_version":
        _wheel(tmp_path, "b_pkg-1.0-py3-none-any.whl")
    if fault in ("wrong_python", "wrong_platform", "unpinned"):
        tag = {"wrong_python": "cp311-cp311-manylinux_2_17_x86_64", "wrong_platform": "py3-none-macosx_11_0_arm64",
               "unpinned": "py3-none-any"}[fault]
        _wheel(tmp_path, f"c_pkg-1.0-{tag}.whl")
        if fault != "unpinned":
            pins["c-pkg"] = "1.0"
    if fault == "missing":
        pins["d-pkg"] = "1.0"
    res = gc.check_wheels(tmp_path, pins, {"torch": "2.11.0"})
    assert any(e.startswith(expected) for e in res["errors"]), res["errors"]


def test_pinned_lists_and_plw_requirements(gc):
    pins, have = gc.read_list(gc.WHEELS_TXT), gc.read_list(gc.MACHINE_TXT)
    assert {"trl", "datasets", "pydantic", "liger-kernel", "cut-cross-entropy"} <= set(pins)
    assert all(pins.values())  # one pinned version each
    # Carried only where the machine lacks it (typing-extensions: its version there is unknown).
    assert set(pins) & set(have) == {"typing-extensions"}
    res = gc.check_plw_requirements(pins, have)
    assert res["errors"] == []
    # The check must be able to fail: the machine's torch outside plw's range.
    assert gc.check_plw_requirements(pins, {**have, "torch": "2.14.0"})["errors"] == [
        "plw needs torch>=2.5,<2.14; the machine has 2.14.0"]


def test_wheel_folder_resolves_for_the_gpu_machine(gc, capsys):
    if not (REPO / ".whl").is_dir():
        pytest.skip(".whl/ is absent: build it with bench/gpu_wheels.sh (needs PyPI) to check the wheel set")
    assert gc.step_wheels(dry=True) == 0, capsys.readouterr().out


def _run(args, env=None, timeout=60):
    env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_bad_invocations_exit_2_and_write_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "give an output folder" in r.stderr
    r = _run(["--dry-run", "--bogus", str(tmp_path / "a")])
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr
    r = _run(["--dry-run", "--only", "loss,nope", str(tmp_path / "b")])
    assert r.returncode == 2 and "unknown step(s) nope" in r.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("script,flag", [("loss.py", "--gpu-check"), ("train.py", "--gpu")])
def test_benches_refuse_gpu_shapes_without_cuda(monkeypatch, capsys, script, flag):
    import torch

    spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", REPO / "bench" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", [script, flag])
    with pytest.raises(SystemExit) as exc:
        module.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "needs CUDA" in err and "--quick" in err, err


@pytest.mark.slow
def test_dry_run_runs_every_step_without_cuda(tmp_path):
    out = tmp_path / "out"
    r = _run(["--dry-run", "--skip-wheels", str(out)], timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files = sorted(p.name for p in out.rglob("*"))
    # What the device tool returns: at most 8 files, none deeper than 2 folders, plain names.
    assert files == ["env.json", "gpu_check.log", "loss_gpu.json", "pytest_cuda.xml", "summary.json",
                     "train_gpu.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True
    assert {k: v["status"] for k, v in summary["steps"].items()} == {
        "wheels": "skipped", "probe": "passed", "pytest": "passed", "loss": "passed", "train": "passed"}
    counts = summary["steps"]["pytest"]["counts"]
    assert counts["tests"] >= 15 and counts["skipped"] == counts["tests"]  # collected, and all skip
    fig = summary["figures"]
    assert {t["method"] for t in fig["loss_targets"]} == {"plw", "plw_vocab_blocks"}
    assert fig["loss_shapes"][0]["suggested_defaults"]["fastest"]["strategy"] in ("token_chunks", "vocab_blocks")
    assert "tokens_per_s" in fig["train_rows"]["plw_0"] and "skipped" in fig["train_rows"]["plw_0_liger"]
    assert fig["train_ratios"]["trl_best_row"] == "trl_completion_only"
    loss = json.loads((out / "loss_gpu.json").read_text())
    assert {(r["strategy"], r["chunk"]) for r in loss["shapes"][0]["sweep"]["rows"]} >= {
        ("token_chunks", "auto"), ("vocab_blocks", "auto")}
    env = json.loads((out / "env.json").read_text())
    assert env["imports"] == {"plw.loss": str(REPO / "plw" / "loss"), "pydantic": env["imports"]["pydantic"]}
    assert env["cuda_available"] is False and "FAILED" not in env["imports"]["pydantic"]
    log = (out / "gpu_check.log").read_text()
    assert all(f"===== {s}: passed" in log for s in ("probe", "pytest", "loss", "train"))
