"""Precision and attention settings that would not train as asked are refused before any output."""

from __future__ import annotations

import pytest

from plw.errors import PLWError
from plw.train.config import TrainConfig
from plw.train.run import check_dtype


def _config(**kw):
    return TrainConfig.model_validate({"model": "some/model", **kw})


def test_pure_fp16_full_finetuning_is_refused_lora_is_not(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    with pytest.raises(PLWError) as err:
        check_dtype(_config(dtype="float16"))
    assert err.value.field == "dtype" and "loss scaling" in err.value.problem
    check_dtype(_config(dtype="float16", lora={"enabled": True}))


def test_pure_bf16_full_finetuning_warns(monkeypatch, capsys):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    check_dtype(_config(dtype="bfloat16"))
    assert "master copies" in capsys.readouterr().err
    check_dtype(_config(dtype="auto"))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("mixed", ["bf16", "fp16"])
def test_explicit_dtype_conflicting_with_accelerate_mixed_precision(monkeypatch, mixed):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", mixed)
    with pytest.raises(PLWError, match="mixed_precision"):
        check_dtype(_config(dtype="float32"))
    check_dtype(_config(dtype="auto"))


def test_cli_bad_attn_implementation_one_line_exit_2(tmp_path, capsys):
    from plw.cli import main

    out = tmp_path / "out"
    code = main(["train", "--set", "attn_implementation=no_such_kernel", "--set", "max_steps=1",
                 "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "attn_implementation" in err, err
    assert not out.exists()


def test_zero3_without_16bit_gather_on_save_is_refused(monkeypatch):
    from types import SimpleNamespace

    from plw.train.run import check_sharding

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)

    def trainer(flag, ds_config):
        plugin = SimpleNamespace(zero_stage=3, zero3_save_16bit_model=flag, deepspeed_config=ds_config)
        return SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=True,
                               accelerator=SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin)))

    with pytest.raises(PLWError, match="zero3_save_16bit_model"):
        check_sharding(trainer(False, {"zero_optimization": {"stage": 3}}), _config())
    check_sharding(trainer(True, {}), _config())
    check_sharding(trainer(None, {"zero_optimization": {"stage3_gather_16bit_weights_on_model_save": True}}),
                   _config())
