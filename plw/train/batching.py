"""The batch split: per-device micro-batch × processes × gradient accumulation = global batch.

`per_device_batch_size: auto` picks the largest micro-batch that divides the global batch and
whose estimated memory fits the machine (GPU memory, or host memory on CPU). The estimate is
deliberately coarse and on the safe side: fp32 weights, gradients and AdamW state for full
fine-tuning (weights only for LoRA), plus activations kept for the backward pass at full
`max_length` for every sequence. plw's loss never materialises the logits, so the head adds none.
Because plw's loss has one normaliser per optimizer step, the split changes speed and memory,
never the update.
"""

from __future__ import annotations

import dataclasses

from plw.errors import PLWError

CPU_MAX_MICRO_BATCH = 4  # 2–16 cores gain nothing from more; padding waste and memory grow
GPU_MAX_MICRO_BATCH = 64
HOST_FRACTION = 0.4      # of the available host memory (other processes share it)
GPU_FRACTION = 0.8       # of the GPU's total memory


@dataclasses.dataclass(frozen=True)
class BatchSplit:
    per_device: int
    accumulation: int
    world_size: int

    @property
    def global_batch(self) -> int:
        return self.per_device * self.accumulation * self.world_size

    def describe(self) -> str:
        return (f"global batch {self.global_batch} = micro-batch {self.per_device} × gradient accumulation "
                f"{self.accumulation} × {self.world_size} process{'es' if self.world_size > 1 else ''}")


def batch_split(global_batch: int, per_device: int | str, world_size: int, *, model_config=None,
                max_length: int = 512, lora: bool = False, cuda: bool = False) -> BatchSplit:
    """The split that will run; `PLWError` when `global_batch` cannot be divided as asked."""
    if global_batch % world_size:
        raise PLWError(f"global_batch_size {global_batch} is not a multiple of the {world_size} processes",
                       field="global_batch_size")
    per_rank = global_batch // world_size
    if per_device == "auto":
        per_device = fit_micro_batch(per_rank, model_config, max_length=max_length, lora=lora, cuda=cuda)
    if per_rank % per_device:
        raise PLWError(f"global_batch_size {global_batch} is not a multiple of "
                       f"per_device_batch_size × processes = {per_device * world_size}", field="global_batch_size")
    return BatchSplit(per_device=int(per_device), accumulation=per_rank // per_device, world_size=world_size)


def fit_micro_batch(per_rank: int, model_config, *, max_length: int, lora: bool, cuda: bool) -> int:
    """Largest divisor of `per_rank` (capped per device kind) whose memory estimate fits."""
    cap = GPU_MAX_MICRO_BATCH if cuda else CPU_MAX_MICRO_BATCH
    budget = _memory_budget(cuda)
    if model_config is None or budget is None:
        per_seq, fixed = 0, 0
    else:
        per_seq, fixed = _sequence_bytes(model_config, max_length), _state_bytes(model_config, lora)
    best = 1
    for n in range(1, min(cap, per_rank) + 1):
        if per_rank % n == 0 and (budget is None or fixed + n * per_seq <= budget):
            best = n
    return best


def _state_bytes(cfg, lora: bool) -> int:
    """fp32 weights, plus gradients and two AdamW moments when every weight trains."""
    return (4 if lora else 16) * _n_params(cfg)


def _n_params(cfg) -> int:
    h, layers = _get(cfg, "hidden_size"), _get(cfg, "num_hidden_layers")
    inter, vocab = _get(cfg, "intermediate_size", 4 * h), _get(cfg, "vocab_size")
    heads = _get(cfg, "num_attention_heads")
    kv = _get(cfg, "num_key_value_heads", heads)
    head_dim = _get(cfg, "head_dim", h // max(heads, 1)) or h // max(heads, 1)
    attn = h * head_dim * (2 * heads + 2 * kv)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    return layers * (attn + 3 * h * inter) + vocab * h * (1 if tied else 2)


def _sequence_bytes(cfg, max_length: int) -> int:
    """Activations saved for backward, per sequence of `max_length` tokens (fp32, an upper bound)."""
    h, layers = _get(cfg, "hidden_size"), _get(cfg, "num_hidden_layers")
    inter = _get(cfg, "intermediate_size", 4 * h)
    return 4 * max_length * layers * (18 * h + 6 * inter)


def _get(cfg, name: str, default: int | None = None) -> int:
    value = getattr(cfg, name, None)
    if value is None:
        if default is None:
            return 0
        return default
    return int(value)


def _memory_budget(cuda: bool) -> int | None:
    if cuda:
        import torch

        return int(GPU_FRACTION * torch.cuda.get_device_properties(0).total_memory)
    available = _host_available()
    return None if available is None else int(HOST_FRACTION * available)


def _host_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None
