"""`--no-progress` silences every bar: plw's own and those of transformers and lm-eval."""

from __future__ import annotations

from plw.cli import main

BAR_MARKS = ("it/s]", "s/it]", "%|")


def test_train_then_eval_without_any_bar(tmp_path, capfd):
    out = tmp_path / "run"
    # a checkpoint inside training and the final save: transformers' "Writing model shards" bars
    assert main(["train", "--data", "builtin:short?n=24", "--output", str(out), "--no-progress",
                 "--set", "max_steps=2", "--set", "save_steps=1", "--set", "tiny.hidden_size=32",
                 "--set", "tiny.vocab_size=400", "--set", "global_batch_size=8",
                 "--set", "per_device_batch_size=8"]) == 0
    err = capfd.readouterr().err
    assert not any(mark in err for mark in BAR_MARKS), err
    # loading the saved model ("Loading weights") and lm-eval's request bars
    assert main(["eval", str(out), "--suite", "builtin", "--limit", "4", "--no-progress"]) == 0
    err = capfd.readouterr().err
    assert not any(mark in err for mark in BAR_MARKS), err
