"""TrainConfig: Alpaca defaults, YAML + --set overrides, one-line errors with file/line/field, CLI exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from plw.errors import PLWError
from plw.train.config import TrainConfig, builtin_preset, load_config, save_config


def test_defaults_follow_stanford_alpaca():
    c = TrainConfig()
    assert (c.learning_rate, c.num_epochs, c.global_batch_size, c.warmup_ratio, c.lr_scheduler,
            c.weight_decay, c.max_length) == (2e-5, 3.0, 128, 0.03, "cosine", 0.0, 512)


def test_builtin_preset_is_used_without_config_and_says_so():
    c = load_config(None)
    assert c.model == "builtin:tiny" and c.data == "builtin:short"
    assert "learning_rate=1e-3" in c.preset and c.learning_rate == builtin_preset()["learning_rate"]


def test_yaml_and_overrides_and_roundtrip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: builtin:tiny\nprompt_loss_weight: 0.25\nregularizers:\n  label_smoothing: 0.1\n")
    c = load_config(path, ["regularizers.minkowski_coef=0.01", "normalizer=3.5", "lora=true",
                           "report_to=tensorboard"])
    assert c.prompt_loss_weight == 0.25 and c.regularizers.label_smoothing == 0.1
    assert c.regularizers.minkowski_coef == 0.01 and c.normalizer == 3.5 and c.lora.enabled
    assert c.report_to == ["tensorboard"]
    assert c.learning_rate == 2e-5  # a CONFIG file starts from the Alpaca defaults, not the preset
    save_config(c, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == c


def test_unknown_key_names_file_line_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: builtin:tiny\nregularizers:\n  label_smoothing: 0.1\n  label_smothing: 0.2\n")
    with pytest.raises(PLWError) as err:
        load_config(path)
    e = err.value
    assert (e.file, e.line, e.field) == (str(path), 4, "regularizers.label_smothing")
    assert "unknown key" in e.problem and "label_smoothing" in e.problem
    assert "\n" not in e.one_line()


def test_bad_value_and_bad_override():
    with pytest.raises(PLWError) as err:
        load_config(None, ["prompt_loss_weight=1.5"])
    assert err.value.file == "--set" and err.value.field == "prompt_loss_weight"
    with pytest.raises(PLWError):
        load_config(None, ["normalizer=median"])
    with pytest.raises(PLWError):
        load_config(None, ["normalizer=-1"])
    with pytest.raises(PLWError) as err:
        load_config(None, ["learning_rate"])
    assert "key=value" in err.value.problem
    with pytest.raises(PLWError) as err:
        load_config(None, ["global_batch_size=30", "per_device_batch_size=8"])
    assert "multiple" in err.value.problem


def test_cli_bad_key_one_line_exit_2(tmp_path, capsys):
    from plw.cli import main

    path = tmp_path / "bad.yaml"
    out = tmp_path / "out"
    path.write_text(f"output_dir: {out}\nlerning_rate: 0.1\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}:2: lerning_rate: unknown key (did you mean 'learning_rate'?)"
    assert not out.exists()  # no partial output
    assert main(["train", "--set", "tiny.hidden_size=-3", "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --set: tiny.hidden_size:")


def test_shipped_examples_validate():
    import yaml

    examples = Path(__file__).resolve().parents[2] / "examples"
    configs = sorted(examples.glob("train_*.yaml"))
    assert len(configs) >= 4
    for path in configs:
        load_config(path)
    kinds = {p.stem: yaml.safe_load(p.read_text())["distributed_type"] for p in (examples / "accelerate").glob("*.yaml")}
    assert kinds == {"ddp": "MULTI_GPU", "ddp_cpu": "MULTI_CPU", "fsdp": "FSDP",
                     "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED"}


def test_cli_missing_data_fails_before_writing(tmp_path, capsys):
    from plw.cli import main

    out = tmp_path / "out"
    assert main(["train", "--data", str(tmp_path / "nope.jsonl"), "--output", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope.jsonl" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_old_spelling_regularisers_loads_with_a_deprecation_warning(tmp_path):
    from plw.train.config import TrainConfig, load_config

    cfg = tmp_path / "old.yaml"
    cfg.write_text("model: builtin:tiny\nregularisers:\n  label_smoothing: 0.1\n")
    with pytest.warns(FutureWarning, match="`regularisers` is deprecated: use `regularizers`"):
        assert load_config(cfg).regularizers.label_smoothing == 0.1
    with pytest.warns(FutureWarning):
        assert load_config(None, ["regularisers.minkowski_coef=0.5"]).regularizers.minkowski_coef == 0.5
    # A bad key under the old spelling still names its line.
    cfg.write_text("model: builtin:tiny\nregularisers:\n  label_smothing: 0.1\n")
    with pytest.warns(FutureWarning), pytest.raises(PLWError) as err:
        load_config(cfg)
    assert err.value.line == 3 and "label_smothing" in err.value.one_line()
    with pytest.raises(ValueError, match="give regularizers only"):
        TrainConfig.model_validate({"regularisers": {}, "regularizers": {}})


def test_old_spelling_in_a_sweep_spec_gives_the_same_run_ids(tmp_path):
    from plw.experiment.grid import expand
    from plw.experiment.spec import SweepSpec

    def ids(key):
        spec = {"name": "s", "datasets": ["builtin:short"], "plw": [0.0], "train": {key: {"hidden_dropout": 0.1}},
                "regularizers": [{"name": "ls", "train": {key: {"label_smoothing": 0.1}}}]}
        return [r.run_id for r in expand(SweepSpec.model_validate(spec))]

    with pytest.warns(FutureWarning):
        old = ids("regularisers")
    assert old == ids("regularizers")
