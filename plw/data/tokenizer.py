"""Tokenizers: load one by name or path, or train a small byte-level BPE on local text.

The trained tokenizer is the built-in default's tokenizer (no hub access needed). It has
`<s>` (BOS, prepended), `</s>` (EOS), `<pad>` and `<unk>` and a minimal chat template, and
returns character offsets, which PLW token weighting relies on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from plw.errors import PLWError

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]

# Minimal chat template for the built-in tokenizer (the tokenizer's own template is used for chat
# data; real models ship theirs). The assistant turn ends with EOS, which is a completion token.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<|assistant|>\n{% generation %}{{ m['content'] }}{{ eos_token }}{% endgeneration %}\n"
    "{% else %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, *, min_frequency: int = 2):
    """Train a byte-level BPE tokenizer on `texts` and wrap it as a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS + ["<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    # trim_offsets=False keeps offsets exact (a leading space belongs to its token).
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]),
    ])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def load_tokenizer(name_or_path: str | Path, *, trust_remote_code: bool = False):
    """Load a tokenizer by hub name, a saved directory, or a SentencePiece `.model` file/dir.

    A directory holding only `tokenizer.model` (e.g. the LLaMA-2 tokenizer) is loaded as a
    LLaMA tokenizer. A pad token is added as the EOS when the tokenizer has none.
    """
    from transformers import AutoTokenizer

    path = Path(name_or_path)
    try:
        if path.suffix == ".model" or (path.is_dir() and (path / "tokenizer.model").exists()
                                       and not (path / "tokenizer_config.json").exists()):
            tok = _load_sentencepiece(path if path.suffix == ".model" else path / "tokenizer.model")
        else:
            tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except PLWError:
        raise
    except (OSError, ValueError) as err:
        raise PLWError(f"cannot load tokenizer: {str(err).splitlines()[0]}", file=str(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _load_sentencepiece(model_file: Path):
    from transformers import LlamaTokenizer

    if not model_file.exists():
        raise PLWError("no such file", file=str(model_file))
    # LLaMA-2 convention: BOS prepended, no EOS added by the tokenizer (templates add it).
    return LlamaTokenizer(vocab_file=str(model_file), add_bos_token=True, add_eos_token=False,
                          legacy=False)
