"""`train()` and `plw train` end to end on the tiny model: loss decreases, outputs, LoRA, resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from plw.train import TrainConfig, train
from plw.train.callbacks import read_metrics

TINY = {"model": "builtin:tiny", "data": "builtin:short?n=96", "tiny": {"hidden_size": 32, "vocab_size": 512},
        "learning_rate": 1e-2, "global_batch_size": 8, "per_device_batch_size": 8, "max_length": 128,
        "val_fraction": 0.1, "warmup_ratio": 0.0, "seed": 1}


def _cfg(tmp_path, **kw) -> TrainConfig:
    return TrainConfig.model_validate({**TINY, "output_dir": str(tmp_path), **kw})


def test_train_loss_decreases_and_outputs(tmp_path):
    res = train(_cfg(tmp_path, num_epochs=2, prompt_loss_weight=0.1, eval_steps=11), progress=False)
    m = res.metrics
    losses = m["step_losses"]
    assert len(losses) == m["global_step"] == 22
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    for key in ("train_loss", "loss_rsd", "weight_l2", "weight_minkowski", "val_completion_nll",
                "train_tokens", "wall_time_s", "weight_l2/attention", "weight_minkowski/mlp"):
        assert key in m, key
    assert m["loss_rsd"] > 0 and m["train_tokens"] > 0
    for name in ("model.safetensors", "config.json", "tokenizer.json", "config.yaml", "metrics.jsonl", "metrics.json"):
        assert (tmp_path / name).exists(), name
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows if "step_loss" in r] == list(range(1, 23))
    assert all("prompt_nll" in r and "completion_nll" in r for r in rows if "loss" in r)
    assert [r["step"] for r in rows if "eval_completion_nll" in r] == [11, 22]
    assert json.loads((tmp_path / "metrics.json").read_text())["global_step"] == 22
    assert len(res.val_records) == 10 and len(res.train_records) == 86
    # the saved model reloads and reproduces the in-memory model's validation NLL
    from transformers import AutoModelForCausalLM
    from plw.train.collator import PLWCollator
    from plw.train.run import _tokenize
    from plw.train.trainer import completion_nll

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    rows_val, _ = _tokenize(res.val_records, res.tokenizer, res.config)
    nll = completion_nll(reloaded, rows_val, PLWCollator(res.tokenizer.pad_token_id))
    assert nll == pytest.approx(m["val_completion_nll"], rel=1e-5)


def test_lora_trains_only_adapters(tmp_path):
    res = train(_cfg(tmp_path, max_steps=3, lora={"enabled": True, "r": 4}, learning_rate=1e-2), progress=False)
    assert (tmp_path / "adapter_model.safetensors").exists() and not (tmp_path / "model.safetensors").exists()
    from plw.train.tiny import tiny_llama

    base = tiny_llama(res.tokenizer, seed=1, hidden_size=32, max_position_embeddings=1024)
    model = res.model
    changed_lora = 0
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad
            changed_lora += "lora_B" in name and bool(p.abs().sum() > 0)
        else:
            assert not p.requires_grad
            ref = dict(base.named_parameters())[name.replace("base_model.model.", "").replace(".base_layer", "")]
            assert torch.equal(p.detach(), ref.detach()), name
    assert changed_lora > 0
    assert all(k.startswith("weight_") is False or "lora" in k or k in (
        "weight_l2", "weight_minkowski", "weight_minkowski_mean", "weight_distance_p") for k in res.metrics)
    # plw's one loader puts the saved adapter back on the same random init (the run's seed)
    from plw.train.model import load_model

    reloaded = load_model(str(tmp_path)).eval()
    ids = torch.tensor([[1, 5, 7, 9, 11]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)


def test_resume_continues_the_same_run(tmp_path):
    full = tmp_path / "full"
    cfg = dict(max_steps=6, save_steps=3, save_total_limit=3, keep_checkpoints=True)  # optimizer state kept
    a = train(_cfg(full, **cfg), progress=False)
    # An interrupted run: the same output dir as it was right after the step-3 checkpoint.
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copytree(full / "checkpoint-3", cut / "checkpoint-3")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (full / name).exists():
            shutil.copy(full / name, cut / name)
    lines = [r for r in read_metrics(full / "metrics.jsonl") if r["step"] <= 3]
    (cut / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines)
                                       + json.dumps({"step": 4, "step_loss": 99.0}) + "\n")  # stale, dropped
    b = train(_cfg(cut, **cfg), progress=False)
    assert b.metrics["resumed_from"].endswith("checkpoint-3")
    assert b.metrics["step_losses"] == pytest.approx(a.metrics["step_losses"], rel=1e-5)
    assert b.metrics["loss_rsd"] == pytest.approx(a.metrics["loss_rsd"], rel=1e-4)
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=n)
    assert [r["step"] for r in read_metrics(cut / "metrics.jsonl") if "step_loss" in r] == [1, 2, 3, 4, 5, 6]


def test_cli_builtin_run_with_flags(tmp_path, capsys):
    from plw.cli import main

    out = tmp_path / "cli"
    code = main(["train", "--output", str(out), "--prompt-loss-weight", "0.05", "--normalizer", "completion_tokens",
                 "--no-progress", "--set", "max_steps=2", "--set", "data=builtin:short?n=40",
                 "--set", "tiny.hidden_size=32", "--set", "tiny.vocab_size=400", "--set", "per_device_batch_size=8",
                 "--set", "global_batch_size=8", "--set", "regularizers.minkowski_coef=0.01",
                 "--set", "regularizers.attention_dropout=0.1", "--set", "regularizers.label_smoothing=0.1",
                 "--set", "regularizers.hidden_dropout=0.1", "--set", "packing=true", "--set", "group_by_length=true"])
    assert code == 0
    assert "saved to" in capsys.readouterr().out
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["prompt_loss_weight"] == 0.05 and saved["normalizer"] == "completion_tokens"
    assert saved["regularizers"]["minkowski_coef"] == 0.01 and "builtin CPU preset" in saved["preset"]
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 2


def test_loss_strategy_vocab_blocks_trains_like_token_chunks(tmp_path, monkeypatch):
    import plw.loss.vocab_blocks as vb

    calls = []
    real_pass = vb._vocab_pass
    monkeypatch.setattr(vb, "_vocab_pass", lambda *a, **k: calls.append(1) or real_pass(*a, **k))
    # SGD: Adam's g/sqrt(v) would amplify last-bit gradient differences on near-zero gradients.
    runs = {}
    for strategy in ("token_chunks", "vocab_blocks"):
        calls.clear()
        res = train(_cfg(tmp_path / strategy, max_steps=3, prompt_loss_weight=0.1, val_fraction=0.0,
                         optim="sgd", loss_strategy=strategy), progress=False)
        assert bool(calls) == (strategy == "vocab_blocks")  # the config reaches the engine
        runs[strategy] = (res.metrics["step_losses"], dict(res.model.named_parameters()))
    (loss_a, params_a), (loss_b, params_b) = runs["token_chunks"], runs["vocab_blocks"]
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    for name, p in params_a.items():
        torch.testing.assert_close(params_b[name], p, rtol=1e-4, atol=1e-6, msg=name)


def test_loss_strategy_with_an_external_backend_fails_before_writing(tmp_path, capsys):
    from plw.cli import main

    out = tmp_path / "out"
    rc = main(["train", "--set", "loss_strategy=vocab_blocks", "--set", "loss_backend=liger",
               "--output", str(out), "--no-progress"])
    assert rc == 2 and not out.exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
