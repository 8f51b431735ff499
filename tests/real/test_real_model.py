"""The real-model path end to end: GGUF → LoRA training → save → reload → generate; benchmark
accuracy of the base model; ChatML token weights; an empty output trained and counted."""

from __future__ import annotations

import json

import pytest
import yaml

from plw.cli import main


def _run(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_gguf_lora_train_save_reload_generate(tmp_path, capsys, smollm2_gguf, alpaca_with_empty_output):
    out = tmp_path / "out"
    rc, stdout, err = _run(capsys, [
        "train", "--model", str(smollm2_gguf), "--data", str(alpaca_with_empty_output), "-o", str(out),
        "--lora", "--no-progress", "--set", "max_steps=3", "--set", "global_batch_size=2",
        "--set", "max_length=96", "--set", "val_fraction=0", "--set", "learning_rate=1e-3"])
    assert rc == 0, err
    # No CONFIG and a real model: the Alpaca recipe, and the batch split that ran, in config.yaml.
    text = (out / "config.yaml").read_text()
    saved = yaml.safe_load(text)
    assert saved["warmup_ratio"] == 0.03 and saved["lr_scheduler"] == "cosine" and saved["max_length"] == 96
    assert saved["per_device_batch_size"] in (1, 2) and saved["preset"] is None
    assert "# plw train: global batch 2 = micro-batch" in text and "gradient accumulation" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 3 and metrics["batch"]["world_size"] == 1
    # the empty-output record was trained: 4 records, 4 examples, its completion the EOS alone
    assert metrics["data"]["train"]["n_examples"] == 4
    assert (out / "adapter_model.safetensors").is_file() and not list(out.glob("checkpoint-*/optimizer.pt"))

    from plw.eval.generation import generation_lengths
    from plw.train.model import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(out))  # the adapter on its GGUF base
    assert type(model).__name__.startswith("PeftModel")
    trained = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert trained and any(p.abs().sum() > 0 for p in trained.values())  # the trained adapter, not a fresh one
    rep = generation_lengths(model, tok, ["What is the capital of France?"], template="chat",
                             max_new_tokens=8, progress=False)
    assert rep.outputs[0].strip() and rep.lengths[0] > 0

    # Another PLW into the finished run: refused before any work, naming the key.
    rc, _, err = _run(capsys, ["train", "--model", str(smollm2_gguf), "--data", str(alpaca_with_empty_output),
                               "-o", str(out), "--lora", "--no-progress", "--plw", "0.5", "--set", "max_steps=3",
                               "--set", "global_batch_size=2", "--set", "max_length=96",
                               "--set", "val_fraction=0", "--set", "learning_rate=1e-3"])
    assert rc == 2 and "prompt_loss_weight" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1


def test_base_model_piqa_above_chance(smollm2, shared):
    from plw.eval import evaluate

    model, tok = smollm2
    rows = evaluate(model, tok, "piqa", limit=200, batch_size=32, data_dir=shared / "data" / "bench",
                    progress=False)
    assert rows[0]["benchmark"] == "piqa" and rows[0]["score"] > 0.55, rows


def test_chatml_template_weights(smollm2):
    """SmolLM2's ChatML: system/user turns and every header at PLW; assistant text and <|im_end|> at 1."""
    from plw.data.encode import encode_record
    from plw.data.schema import Record

    _, tok = smollm2
    rec = Record(messages=({"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "Capital of France?"},
                           {"role": "assistant", "content": "Paris."}))
    ex = encode_record(rec, tok, template="chat", prompt_loss_weight=0.25, max_length=512)
    pieces = [tok.decode([i]) for i in ex["input_ids"]]
    at_one = "".join(p for p, w in zip(pieces, ex["weights"]) if w == 1.0)
    at_plw = "".join(p for p, w in zip(pieces, ex["weights"]) if w == 0.25)
    assert at_one == "Paris.<|im_end|>"
    # everything else (system and user turns, every <|im_start|>role header, the newlines) at PLW
    assert at_plw == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?"
                      "<|im_end|>\n<|im_start|>assistant\n\n")
    assert len(at_one) + len(at_plw) == len("".join(pieces))


def test_empty_output_counted_by_stats(capsys, tmp_path, smollm2_gguf, alpaca_with_empty_output):
    out = tmp_path / "stats.json"
    rc, stdout, err = _run(capsys, ["stats", str(alpaca_with_empty_output), "--tokenizer", str(smollm2_gguf),
                                    "--json", str(out)])
    assert rc == 0, err
    st = json.loads(out.read_text())
    assert st["n"] == 4 and st["n_empty_completion"] == 1 and "empty completions" in stdout
