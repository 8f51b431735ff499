"""plw.train: fine-tuning with a prompt loss weight (`PLWTrainer`, `TrainConfig`, `train`).

Light to import: torch/transformers load only when `train`, `PLWTrainer` or `PLWCollator` are used.
"""

from plw.train.config import (LoraSettings, Regularisers, Regularizers, TinySettings, TrainConfig, builtin_preset,
                              load_config)

__all__ = ["TrainConfig", "LoraSettings", "Regularizers", "Regularisers", "TinySettings", "builtin_preset", "load_config",
           "train", "TrainResult", "PLWTrainer", "PLWConfig", "PLWCollator", "attach_plw_loss", "load_model",
           "load_model_and_tokenizer"]

_LAZY = {"train": "plw.train.run", "TrainResult": "plw.train.run", "PLWTrainer": "plw.train.trainer",
         "PLWConfig": "plw.train.trainer", "PLWCollator": "plw.train.collator", "attach_plw_loss": "plw.train.forward",
         "load_model": "plw.train.model", "load_model_and_tokenizer": "plw.train.model"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'plw.train' has no attribute {name!r}")
