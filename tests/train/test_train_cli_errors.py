"""`plw train` input errors: dropped examples reported, bad trainer/runtime settings and flags
named in one line before anything is written, and the DataParallel guard."""

from __future__ import annotations

import json

import pytest
import torch

from plw.errors import PLWError


FAST = ["--no-progress", "--set", "max_steps=1", "--set", "tiny.hidden_size=32", "--set", "tiny.vocab_size=400",
        "--set", "per_device_batch_size=8", "--set", "global_batch_size=8"]

def test_cli_reports_dropped_examples_on_stderr_and_in_metrics(tmp_path, capsys):
    from plw.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", "builtin:mixed?n=40", "--output", str(out), *FAST,
                 "--set", "max_length=24"]) == 0
    err = capsys.readouterr().err
    data = json.loads((out / "metrics.json").read_text())["data"]
    train, val = data["train"], data["val"]
    assert train["n_dropped"] > 0 and train["dropped"]["completion longer than max_length"] > 0
    assert train["n_records"] + val["n_records"] == 40
    assert train["n_examples"] + train["n_dropped"] == train["n_records"]
    assert f"train data: {train['n_examples']} of {train['n_records']} examples" in err
    assert "completion longer than max_length" in err and "val data:" in err


@pytest.mark.parametrize("sets", [
    ["loss_backend=bogus"],
    ["lr_scheduler=bogus"],
    ["optim=bogus"],
    ["report_to=nosuch"],
    ["report_to=[none, nosuch]"],
])
def test_cli_bad_trainer_settings_fail_at_config_load(tmp_path, capsys, sets):
    from plw.cli import main

    out = tmp_path / "run"
    args = ["train", "--output", str(out), *FAST]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    key = sets[0].split("=")[0]
    assert err.startswith(f"error: --set: {key}: ") and len(err.splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("sets,field", [
    (["lora.enabled=true", "lora.target_modules=[nope]"], "lora.target_modules"),
    (["loss_backend=cce"], "loss_backend"),  # CUDA-only engine on a CPU run
    (["lr_scheduler=reduce_lr_on_plateau"], "TrainingArguments"),  # needs an eval strategy
])
def test_cli_bad_runtime_settings_fail_before_writing(tmp_path, capsys, sets, field):
    if field == "loss_backend" and torch.cuda.is_available():
        pytest.skip("CPU-only check")
    from plw.cli import main

    out = tmp_path / "run"
    args = ["train", "--data", "builtin:short?n=40", "--output", str(out), *FAST]
    for s in sets:
        args += ["--set", s]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"error: {field}: ") and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_trainer_settings_validated_in_library_config():
    from plw.train import TrainConfig

    for key, bad in (("loss_backend", "bogus"), ("lr_scheduler", "cosinus"), ("optim", "adamw"),
                     ("report_to", ["nosuch"])):
        with pytest.raises(Exception, match=key):
            TrainConfig.model_validate({key: bad})
    cfg = TrainConfig.model_validate({"loss_backend": "liger", "lr_scheduler": "linear", "optim": "sgd",
                                      "report_to": ["tensorboard", "wandb"]})
    assert cfg.report_to == ["tensorboard", "wandb"]


def test_cli_flag_errors_name_the_flag(tmp_path, capsys):
    from plw.cli import main

    out = tmp_path / "run"
    assert main(["train", "--normalizer", "abc", "--output", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --normalizer: normalizer: ") and "--set" not in err
    assert main(["train", "--normalizer", "-2", "--output", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --normalizer: normalizer: ")
    assert main(["train", "--plw", "1.5", "--output", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --prompt-loss-weight: prompt_loss_weight: ")
    assert main(["train", "--set", "normalizer=abc", "--output", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --set: normalizer: ")
    assert not out.exists()
    from plw.train.config import load_config

    assert load_config(None, [], flags=[("--normalizer", "normalizer", "2")]).normalizer == 2.0
    assert load_config(None, [], flags=[("--output", "output_dir", "123")]).output_dir == "123"


def test_dataparallel_guard():
    from plw.train.run import check_single_process_gpus

    check_single_process_gpus(0)
    check_single_process_gpus(1)
    check_single_process_gpus(1, world_size=4)
    with pytest.raises(PLWError, match="accelerate launch") as err:
        check_single_process_gpus(2)
    assert "CUDA_VISIBLE_DEVICES" in str(err.value) and "torchrun" in str(err.value)
