"""Runs you can trust: the defaults a real model gets, resume only under the same config,
incomplete checkpoints, Ctrl-C, optimizer state after a run, one meaning of `train_loss`."""

from __future__ import annotations

import json
import shutil

import pytest

from plw.cli import main
from plw.train.callbacks import read_metrics

TINY = ["--set", "data=builtin:short?n=40", "--set", "tiny.hidden_size=32", "--set", "tiny.vocab_size=400",
        "--set", "global_batch_size=8", "--set", "per_device_batch_size=4", "--set", "max_length=96",
        "--set", "val_fraction=0", "--no-progress"]


def _train(capsys, out, *extra):
    rc = main(["train", "-o", str(out), *TINY, *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_real_model_without_config_gets_the_alpaca_recipe():
    from plw.train.config import load_config

    cfg = load_config(None, flags=[("--model", "model", "some/model.gguf")])
    assert (cfg.learning_rate, cfg.global_batch_size, cfg.num_epochs, cfg.max_length) == (2e-5, 128, 3.0, 512)
    assert (cfg.warmup_ratio, cfg.lr_scheduler, cfg.per_device_batch_size, cfg.preset) == (0.03, "cosine", "auto", None)
    tiny = load_config(None)  # the CPU preset is for builtin:tiny only
    assert tiny.model == "builtin:tiny" and tiny.learning_rate == 1e-3 and tiny.preset


def test_auto_micro_batch_fits_memory_and_keeps_the_global_batch(monkeypatch):
    from transformers import LlamaConfig

    from plw.train import batching

    smollm2 = LlamaConfig(hidden_size=576, num_hidden_layers=30, intermediate_size=1536, vocab_size=49152,
                          num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
    monkeypatch.setattr(batching, "_host_available", lambda: 20 * 2 ** 30)
    split = batching.batch_split(128, "auto", 1, model_config=smollm2, max_length=512)
    assert split.per_device * split.accumulation == 128 and 1 <= split.per_device <= batching.CPU_MAX_MICRO_BATCH
    # the case of the issue: LoRA at 32 × 256 tokens was OOM-killed on 24 GB; 3 GB available now
    monkeypatch.setattr(batching, "_host_available", lambda: 3 * 2 ** 30)
    small = batching.batch_split(128, "auto", 2, model_config=smollm2, max_length=256, lora=True)
    assert small.per_device < 4 and small.global_batch == 128 and small.world_size == 2


def test_different_config_into_a_finished_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(capsys, out, "--set", "max_steps=2")[0] == 0
    copy = tmp_path / "copy"  # a copied finished run, as in the issue
    shutil.copytree(out, copy)
    rc, _, err = _train(capsys, copy, "--set", "max_steps=2", "--plw", "0.5")
    assert rc == 2 and "prompt_loss_weight: 0.1 there, 0.5 now" in err and "--overwrite" in err
    assert json.loads((copy / "metrics.json").read_text())["prompt_loss_weight"] == 0.1  # untouched
    rc, _, err = _train(capsys, copy, "--set", "max_steps=4", "--set", "logging_steps=2")
    assert rc == 2 and "max_steps" in err and "logging_steps" not in err  # logging is not training
    rc, _, err = _train(capsys, copy, "--set", "max_steps=2", "--plw", "0.5", "--overwrite")
    assert rc == 0, err
    m = json.loads((copy / "metrics.json").read_text())
    assert m["prompt_loss_weight"] == 0.5 and m["global_step"] == 2 and m["resumed_from"] is None


def test_incomplete_checkpoint_is_skipped_and_optimizer_state_kept_only_on_request(tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = _train(capsys, out, "--set", "max_steps=4", "--set", "save_steps=2",
                        "--set", "keep_checkpoints=true")
    assert rc == 0, err
    assert (out / "checkpoint-4" / "optimizer.pt").is_file()
    (out / "checkpoint-4" / "trainer_state.json").unlink()  # Ctrl-C during the save
    rc, _, err = _train(capsys, out, "--set", "max_steps=4", "--set", "save_steps=2",
                        "--set", "keep_checkpoints=true")
    assert rc == 0, err
    assert "skipping incomplete checkpoint" in err and "checkpoint-4" in err
    assert json.loads((out / "metrics.json").read_text())["resumed_from"].endswith("checkpoint-2")
    # by default a finished run keeps no optimizer state
    plain = tmp_path / "plain"
    assert _train(capsys, plain, "--set", "max_steps=4", "--set", "save_steps=2")[0] == 0
    assert list(plain.glob("checkpoint-*")) and not list(plain.glob("checkpoint-*/optimizer.pt"))


def test_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from plw.train.trainer import PLWTrainer

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(PLWTrainer, "train", interrupted)
    rc, _, err = _train(capsys, tmp_path / "run", "--set", "max_steps=2")
    assert rc == 130 and "interrupted: run the same command again to resume" in err


def test_train_loss_means_one_thing(tmp_path, capsys):
    out = tmp_path / "run"
    rc, stdout, _ = _train(capsys, out, "--set", "max_steps=3")
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    mean = sum(m["step_losses"]) / len(m["step_losses"])
    assert m["train_loss"] == pytest.approx(mean, rel=1e-9)
    logged = [r["train_loss"] for r in read_metrics(out / "metrics.jsonl") if "train_loss" in r]
    assert logged == [pytest.approx(mean, rel=1e-9)]
    assert f"train_loss (mean over steps) {mean:.4f}" in stdout


def test_train_data_options_load_a_dolly_style_file(tmp_path, capsys):
    data = tmp_path / "dolly.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Repeat {i}.", "context": "", "response": f"{i} " * 3})
                            + "\n" for i in range(12)) + '{"instruction": 5}\n')
    out = tmp_path / "run"
    rc = main(["train", "-o", str(out), "--data", str(data), "--column", "output=response",
               "--column", "input=context", "--skip-invalid", "--split", "train[:10]", "--no-progress",
               "--set", "max_steps=1", "--set", "tiny.hidden_size=32", "--set", "tiny.vocab_size=300",
               "--set", "val_fraction=0"])
    err = capsys.readouterr().err
    assert rc == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["train"]["n_records"] == 10
    rc = main(["train", "-o", str(tmp_path / "bad"), "--data", str(data), "--column", "output=answer",
               "--no-progress", "--set", "max_steps=1"])
    err = capsys.readouterr().err
    assert rc == 2 and "column 'answer' (mapped to output)" in err and not (tmp_path / "bad").exists()
