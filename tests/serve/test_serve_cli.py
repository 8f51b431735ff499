"""`plw keys create` and `plw serve`'s bad-input cases (one-line errors, exit 2, nothing started)."""

from __future__ import annotations

from plw.cli import main
from plw.serve.auth import hash_key
from plw.serve.db import ApiKey, Database


def test_keys_create_prints_the_key_alone_and_stores_its_hash(tmp_path, capsys):
    assert main(["keys", "create", "--data-dir", str(tmp_path), "--project", "acme"]) == 0
    key = capsys.readouterr().out
    assert key.endswith("\n") and key.count("\n") == 1 and key.startswith("plw-")
    db = Database(f"sqlite:///{tmp_path / 'plw.db'}")
    with db.session() as s:
        rows = s.query(ApiKey).all()
    db.dispose()
    assert [r.sha256 for r in rows] == [hash_key(key.strip())]
    assert key.strip() not in (tmp_path / "plw.db").read_bytes().decode("latin-1")


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    cases = [
        (["keys", "create", "--data-dir", str(tmp_path / "k"), "--project", "no spaces"], "--project"),
        (["serve", "--data-dir", str(tmp_path / "s"), "--backend", "slurm"], "--backend"),
        (["serve", "--data-dir", str(tmp_path / "s"), "--base-model", f"m={tmp_path}/missing.gguf"], "missing.gguf"),
        (["serve", "--data-dir", str(tmp_path / "s"), "--lease-seconds", "0"], "--lease-seconds"),
    ]
    for argv, named in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and named in err and "\n" not in err, err
    assert not (tmp_path / "k").exists() and not (tmp_path / "s").exists()


def test_training_jobs_get_their_share_of_the_cores(tmp_path, monkeypatch):
    from plw.serve.settings import Settings
    from plw.serve.worker import job_env

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert job_env(Settings(data_dir=tmp_path, workers=4))["OMP_NUM_THREADS"] == "2"
    assert job_env(Settings(data_dir=tmp_path, workers=16))["OMP_NUM_THREADS"] == "1"
    assert job_env(Settings(data_dir=tmp_path, workers=0))["OMP_NUM_THREADS"] == "8"
    assert job_env(Settings(data_dir=tmp_path, workers=4, job_threads=3))["OMP_NUM_THREADS"] == "3"
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # the operator's setting wins
    assert job_env(Settings(data_dir=tmp_path, workers=4))["OMP_NUM_THREADS"] == "5"


def test_job_threads_must_be_positive(tmp_path, capsys):
    rc = main(["serve", "--data-dir", str(tmp_path / "d"), "--job-threads", "0"])
    assert rc == 2
    assert "--job-threads" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_training_jobs_run_niced_by_job_nice(tmp_path):
    import os
    import subprocess
    import sys

    from plw.serve.settings import Settings
    from plw.serve.worker import child_setup

    settings = Settings(data_dir=tmp_path, job_nice=7)
    out = subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"], capture_output=True,
                         text=True, check=True, preexec_fn=child_setup(settings.job_nice)).stdout
    assert int(out) == min(19, os.nice(0) + 7)


def test_job_nice_out_of_range_is_refused(tmp_path, capsys):
    rc = main(["serve", "--data-dir", str(tmp_path / "d"), "--job-nice", "20"])
    assert rc == 2
    assert "--job-nice: must be in 0..19" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
