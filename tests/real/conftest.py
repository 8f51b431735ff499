"""Tests on a real pre-trained model: SmolLM2-135M-Instruct as GGUF Q4_1 in ../shared (skipped without it).

The model is de-quantised once per test session (≈ 20 s on 2 cores) and shared by the tests that
only read it; tests that train load it through `plw train` as a user would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

GGUF = Path("models") / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_gguf(shared) -> Path:
    path = shared / GGUF
    if not path.is_file():
        pytest.skip("SmolLM2 GGUF not present in ../shared")
    return path


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf):
    """(model, tokenizer) of the GGUF file, loaded once through plw's one model loader."""
    from plw.train.model import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(smollm2_gguf))
    model.eval()
    return model, tokenizer


@pytest.fixture
def alpaca_with_empty_output(tmp_path) -> Path:
    """Original-Alpaca-format records (a JSON list), one with an empty output (as alpaca_data.json has)."""
    rows = [{"instruction": "Name a primary color.", "input": "", "output": "Red."},
            {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
            {"instruction": "Reply with nothing at all.", "input": "", "output": ""},
            {"instruction": "What is the capital of France?", "input": "", "output": "Paris."}]
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path
