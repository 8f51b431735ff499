"""Load a model for inference: `builtin:tiny`, a Hugging Face directory or name, a GGUF file, or a
`plw train` output directory (full weights, or a LoRA adapter put on its base).

A LoRA adapter is merged into its base after loading: generation then costs what the base costs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from plw.errors import PLWError

BUILTIN_TINY = "builtin:tiny"


@dataclasses.dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    n_bytes: int  # weights and buffers: what the memory budget counts
    max_length: int  # prompt + completion tokens the model's positions allow
    eos_ids: frozenset[int]


def load_for_inference(source: str, *, device: str = "cpu") -> LoadedModel:
    """Load `source` (see the module doc) in eval mode on `device`, fp32 on CPU."""
    import torch

    model, tokenizer = _load(source)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model = model.to(device=device, dtype=dtype).eval()
    n_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return LoadedModel(model=model, tokenizer=tokenizer, n_bytes=n_bytes,
                       max_length=_max_length(model, tokenizer), eos_ids=_eos_ids(model, tokenizer))


def _load(source: str):
    if source == BUILTIN_TINY:
        from plw.data.tokenizer import builtin_tokenizer
        from plw.train.tiny import tiny_llama

        tokenizer = builtin_tokenizer()
        return tiny_llama(tokenizer), tokenizer
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        return _load_gguf(path)
    if (path / "adapter_config.json").is_file():
        return _load_adapter(path)
    if path.is_dir() and (path / "config.yaml").is_file() and not (path / "config.json").is_file():
        raise PLWError("no model weights here (a plw run that has not finished?)", file=source)
    return _load_hf(source), _tokenizer(source)


def _load_hf(name: str):
    from plw.train.model import load_model  # plw's one model loader

    return load_model(name)


def _tokenizer(name: str):
    from plw.data.tokenizer import load_tokenizer

    return load_tokenizer(name)


def _load_gguf(path: Path):
    """A GGUF file, de-quantised to fp32 (weights and tokenizer from the file), by plw's one loader."""
    from plw.train.model import load_model_and_tokenizer

    return load_model_and_tokenizer(str(path))


def _load_adapter(path: Path):
    """A LoRA adapter on its base, by plw's one loader (its errors are already one line), merged
    for generation."""
    return _load_hf(str(path)).merge_and_unload(), _tokenizer(str(path))


def _max_length(model, tokenizer) -> int:
    n = getattr(model.config, "max_position_embeddings", None)
    if not n:
        n = getattr(tokenizer, "model_max_length", None) or 2048
    return int(min(n, 1_000_000))


def _eos_ids(model, tokenizer) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return frozenset(ids)
