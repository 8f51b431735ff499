"""Fixtures for the sweep tests: a tiny, fast sweep spec (real training, real evaluation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

# Small enough that one run (train + evaluate + generation metrics) takes ~2 s on one core.
TINY_TRAIN = {
    "learning_rate": 1e-3, "num_epochs": 1, "global_batch_size": 16, "per_device_batch_size": 16,
    "max_length": 128, "val_fraction": 0.1,
    "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "vocab_size": 512},
}
TINY_EVAL = {"suite": "builtin", "limit": 8, "generation_prompts": 4, "memorization_prompts": 4,
             "max_new_tokens": 8, "generation_set": "builtin", "batch_size": 8}


def write_spec(directory: Path, name: str = "tiny", train_extra: dict | None = None, **fields) -> Path:
    spec = {"name": name, "output_dir": str(directory / "runs" / name), "plw": [0.0, 1.0],
            "datasets": ["builtin:short?n=48", "builtin:long?n=48"],
            "train": {**TINY_TRAIN, **(train_extra or {})},
            "eval": TINY_EVAL, "analysis": False}
    spec.update(fields)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def tiny_spec(tmp_path: Path):
    def make(**fields) -> Path:
        return write_spec(tmp_path, **fields)
    return make
