"""Shared test fixtures. `../shared` (read-only, beside the repo) is optional: tests that need it skip."""

from __future__ import annotations

import os
from pathlib import Path

# One thread per test worker: CI has 2 cores and runs 2 xdist workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    """Path to ../shared, or skip the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def llama2_tokenizer_dir(shared: Path) -> Path:
    path = shared / "models" / "llama2-tokenizer"
    if not (path / "tokenizer.model").exists():
        pytest.skip("LLaMA-2 tokenizer not present in ../shared")
    return path


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` skip, at no cost, where torch sees no CUDA device (CI, the CPU machines)."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (marker `cuda`; see bench/gpu_check.sh)")
    for item in cuda_items:
        item.add_marker(skip)
