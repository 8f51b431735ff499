"""Load a causal LM (and its tokenizer) by hub name, local directory or `.gguf` file.

The one model-loading path of plw: `plw train`, sweeps, `plw eval` and the service all call
`load_model` / `load_model_and_tokenizer`.

- A hub name or a directory with `config.json`: `AutoModelForCausalLM.from_pretrained`.
- A directory with `adapter_config.json` (a LoRA run of `plw train`): the PEFT model.
- A `.gguf` file (llama.cpp's format, e.g. a Q4_1 SmolLM2): transformers' GGUF reader (the `gguf`
  package) de-quantises the tensors; the model it returns is flagged as quantised and cannot be
  saved, so plw builds a fresh model from its config (without `quantization_config`) and loads the
  de-quantised state dict into it: a normal, trainable, saveable model. Its tokenizer and chat
  template come from the same file (`plw.data.tokenizer.load_tokenizer`).

`trust_remote_code` stays off unless asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plw.data.tokenizer import is_gguf, load_tokenizer, looks_like_path
from plw.errors import PLWError, first_line

DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_model_source(name_or_path: str, *, field: str = "model") -> None:
    """Fail (PLWError) before any work when a local model path cannot be a model.

    Hub names are not checked here (that needs the network); `builtin:tiny` is always fine.
    """
    name = str(name_or_path)
    if name == "builtin:tiny":
        return
    path = Path(name).expanduser()
    if is_gguf(name):
        if not path.is_file():
            raise PLWError("no such GGUF file", file=name, field=field)
        check_gguf(path, field=field)
        return
    if not (looks_like_path(name) or path.exists()):
        return  # a hub id: checked when loaded
    if not path.exists():
        raise PLWError("no such file or directory", file=name, field=field)
    if path.is_dir():
        if not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
            raise PLWError("not a model directory (no config.json or adapter_config.json)",
                           file=name, field=field)
    else:
        raise PLWError("not a model: expected a directory, a .gguf file or a hub name", file=name,
                       field=field)


def torch_dtype(name: str):
    """plw's `dtype` setting as a torch dtype ("auto" = float32 weights; autocast does the rest)."""
    import torch

    return {"auto": torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16,
            "float16": torch.float16}[name]


def load_model(name_or_path: str, *, dtype: str = "auto", attn_implementation: str | None = None,
               trust_remote_code: bool = False, field: str = "model"):
    """A trainable causal LM from a hub name, a directory (full model or PEFT adapter) or a `.gguf`
    file; a one-line `PLWError` (exit 2) when it cannot be loaded."""
    check_model_source(name_or_path, field=field)
    extra: dict[str, Any] = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if is_gguf(name_or_path):
        return _load_gguf(Path(name_or_path).expanduser(), torch_dtype(dtype), extra, field)
    path = Path(str(name_or_path)).expanduser()
    try:
        if (path / "adapter_config.json").is_file():
            return _load_adapter(path, dtype, attn_implementation, trust_remote_code)
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=torch_dtype(dtype),
                                                    trust_remote_code=trust_remote_code, **extra)
    except (OSError, ValueError, ImportError, KeyError) as err:
        where = "attn_implementation" if extra and "attn" in str(err).lower() else field
        raise PLWError(f"cannot load model: {first_line(err)}", file=str(name_or_path), field=where) from None


def _load_adapter(path: Path, dtype: str, attn_implementation, trust_remote_code: bool):
    """A LoRA output: its base model through `load_model` (so a .gguf base works too), then the
    adapter. A `builtin:tiny` base is rebuilt from the run's saved config (seed and shape)."""
    import json

    from peft import PeftModel

    tiny = _tiny_base(path)
    if tiny is not None:
        return PeftModel.from_pretrained(tiny, str(path))
    base_name = json.loads((path / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base_name:
        raise PLWError("adapter_config.json names no base_model_name_or_path", file=str(path), field="model")
    base = load_model(base_name, dtype=dtype, attn_implementation=attn_implementation,
                      trust_remote_code=trust_remote_code, field="base model")
    return PeftModel.from_pretrained(base, str(path))


def _tiny_base(path: Path):
    if not (path / "config.yaml").is_file():
        return None
    from plw.train.config import load_config
    from plw.train.tiny import tiny_for_config

    config = load_config(path / "config.yaml")
    return tiny_for_config(config, load_tokenizer(str(path))) if config.model == "builtin:tiny" else None


def load_model_and_tokenizer(name_or_path: str, *, tokenizer: str | None = None, dtype: str = "auto",
                             attn_implementation: str | None = None, trust_remote_code: bool = False):
    """`(model, tokenizer)` for a hub name, a directory (a `plw train` output included) or a `.gguf`
    file. `tokenizer` overrides where the tokenizer comes from (default: the model's own)."""
    check_model_source(name_or_path)
    tok = load_tokenizer(tokenizer or name_or_path, trust_remote_code=trust_remote_code)
    model = load_model(name_or_path, dtype=dtype, attn_implementation=attn_implementation,
                       trust_remote_code=trust_remote_code)
    if getattr(model.config, "pad_token_id", None) is None and tok.pad_token_id is not None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def _load_gguf(path: Path, dtype, extra: dict, field: str):
    import torch
    from transformers import AutoModelForCausalLM

    check_gguf(path, field=field)
    try:
        with _quiet_transformers():
            quantised = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                             dtype=torch.float32)
    except (OSError, ValueError, KeyError, NotImplementedError, ImportError, RuntimeError) as err:
        raise PLWError(f"cannot load GGUF model: {first_line(err)}", file=str(path), field=field) from None
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = str(path.resolve())  # a LoRA adapter records it as its base model
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, **extra)
    except (ValueError, ImportError) as err:
        raise PLWError(first_line(err), field="attn_implementation" if extra else field) from None
    state = quantised.state_dict()
    del quantised
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise PLWError(f"GGUF tensors do not match the {type(model).__name__} built from its config "
                       f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})",
                       file=str(path), field=field)
    model.tie_weights()
    return model


def check_gguf(path: Path, *, field: str = "model") -> None:
    """Refuse, in one line, a GGUF file whose architecture or tensor types transformers cannot read."""
    try:
        import gguf
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:
        raise PLWError("reading .gguf files needs the `gguf` package (pip install gguf)", file=str(path),
                       field=field) from None
    try:
        reader = gguf.GGUFReader(str(path))
    except (OSError, ValueError, KeyError) as err:
        raise PLWError(f"not a readable GGUF file: {first_line(err)}", file=str(path), field=field) from None
    arch_field = reader.fields.get("general.architecture")
    arch = arch_field.contents() if arch_field is not None else None
    if arch is None:
        raise PLWError("GGUF file has no general.architecture", file=str(path), field=field)
    if arch not in GGUF_SUPPORTED_ARCHITECTURES and arch.split("-")[0] not in GGUF_SUPPORTED_ARCHITECTURES:
        raise PLWError(f"unsupported GGUF architecture {arch!r} (transformers reads "
                       f"{', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES)[:12])}, …)", file=str(path), field=field)
    plain = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16}
    probes = {t.tensor_type: t for t in reader.tensors if t.tensor_type not in plain}
    for t in probes.values():
        try:  # a one-block probe: the gguf package implements de-quantisation per type, or raises
            gguf.quants.dequantize(t.data[:1] if t.data.ndim else t.data, t.tensor_type)
        except NotImplementedError:
            raise PLWError(f"unsupported GGUF quantisation type {t.tensor_type.name} (tensor {t.name})",
                           file=str(path), field=field) from None
        except (ValueError, IndexError):
            pass  # the probe's shape; the real load reports real problems


def _quiet_transformers():
    """No "Converting and de-quantizing GGUF tensors" bar (a plain tqdm on stderr, which transformers'
    progress-bar switch does not reach) under plw's own progress display; errors still raise."""
    import contextlib
    import io

    return contextlib.redirect_stderr(io.StringIO())


def model_config(name_or_path: str, *, trust_remote_code: bool = False):
    """The model's transformers config, without loading weights (sizes for the batch split)."""
    from transformers import AutoConfig

    path = Path(str(name_or_path)).expanduser()
    try:
        if is_gguf(name_or_path):
            return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        if (path / "adapter_config.json").is_file():
            import json

            base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
            return model_config(base["base_model_name_or_path"], trust_remote_code=trust_remote_code)
        return AutoConfig.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        raise PLWError(f"cannot load model config: {first_line(err)}", file=str(name_or_path),
                       field="model") from None
