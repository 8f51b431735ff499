"""Tokenizers: load one by name or path, or train a small byte-level BPE on local text.

The trained tokenizer is the built-in default's tokenizer (no hub access needed). It has
`<s>` (BOS, prepended), `</s>` (EOS), `<pad>` and `<unk>` and a minimal chat template, and
returns character offsets, which PLW token weighting relies on.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterable

from plw.errors import PLWError, first_line

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
    """Load a tokenizer by hub name, a saved directory, a SentencePiece `.model` file/dir, or `builtin`.

    `builtin` is the byte-level BPE trained on plw's synthetic data. A `.model` file, or a
    directory holding `tokenizer.model` without a `tokenizer.json` (e.g. the LLaMA-2 tokenizer,
    or one saved by plw), loads as plw's exact SentencePiece tokenizer. A pad token is set to
    the EOS when the tokenizer has none.
    """
    if str(name_or_path) == BUILTIN_TOKENIZER:
        return builtin_tokenizer()
    if looks_like_path(name_or_path) or is_gguf(name_or_path):
        given, name_or_path = str(name_or_path), Path(name_or_path).expanduser()
        if not name_or_path.exists():
            raise PLWError("no such file or directory", file=given)
    path = Path(name_or_path)
    try:
        if is_gguf(path):
            tok = _load_gguf_tokenizer(path)
        elif path.suffix == ".model" or (path.is_dir() and (path / "tokenizer.model").exists()
                                       and not (path / "tokenizer.json").exists()):
            tok = _load_sentencepiece(path if path.suffix == ".model" else path / "tokenizer.model")
        else:
            if path.is_dir() and not any((path / f).exists() for f in _TOKENIZER_FILES):
                raise PLWError("cannot load tokenizer: no tokenizer files in this directory",
                               file=str(name_or_path))
            from transformers import AutoTokenizer  # imports torch: only when needed

            tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except PLWError:
        raise
    except (OSError, ValueError, KeyError, ImportError) as err:
        raise PLWError(f"cannot load tokenizer: {first_line(err)}", file=str(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def is_gguf(name) -> bool:
    """A llama.cpp `.gguf` checkpoint (model and tokenizer in one file)."""
    return str(name).lower().endswith(".gguf")


def looks_like_path(name) -> bool:
    """A local path rather than a hub id (`owner/name`): absolute, starting with `.` or `~`, or with
    more than one path separator (or a trailing one, or the OS's own when it is not `/`)."""
    name = str(name)
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    n_seps = sum(name.count(sep) for sep in seps)
    return (os.path.isabs(name) or name.startswith((".", "~")) or n_seps > 1 or name.endswith(tuple(seps))
            or (os.sep != "/" and os.sep in name))


def _load_gguf_tokenizer(path: Path):
    """The tokenizer (with its chat template) stored in a GGUF file, via transformers' GGUF reader."""
    from transformers import AutoTokenizer

    if not path.is_file():
        raise PLWError("no such GGUF file", file=str(path))
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def _load_sentencepiece(model_file: Path):
    if not model_file.exists():
        raise PLWError("no such file", file=str(model_file))
    # LLaMA-2 convention: BOS prepended, no EOS added by the tokenizer (templates add it).
    # A chat template saved beside the model (by save_pretrained) is kept.
    kwargs = {}
    template = model_file.parent / "chat_template.jinja"
    if template.is_file():
        kwargs["chat_template"] = template.read_text(encoding="utf-8")
    return sentencepiece_tokenizer(model_file, **kwargs)


# --------------------------------------------------------------------------------------------
# Exact SentencePiece tokenizers (LLaMA-2's tokenizer.model).
#
# transformers 5 converts `tokenizer.model` to a `tokenizers` BPE that does not reproduce
# SentencePiece exactly (e.g. runs of spaces), and `LlamaTokenizer(vocab_file=...)` is broken.
# Statistics and token weights must match SentencePiece exactly, so plw wraps the
# SentencePiece processor itself in a (slow) `PreTrainedTokenizer`: `tok(text)` is
# `[BOS] + sp.encode(text)`, and `encode_with_offsets` gives character offsets from
# SentencePiece's own alignment (which the slow-tokenizer API cannot return).

# LLaMA-2-chat's prompt format (Meta's reference `chat_completion`): a system message is folded
# into the first user turn; every user turn starts a new `<s>`; an assistant turn ends with `</s>`.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set turns = messages[1:] %}"
    "{% else %}{% set system = none %}{% set turns = messages %}{% endif %}"
    "{% for m in turns %}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ ' ' + m['content'] | trim + ' ' + eos_token }}{% endgeneration %}"
    "{% else %}{{ bos_token + '[INST] ' }}"
    "{% if loop.first and system is not none %}{{ '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}{% endif %}"
    "{{ m['content'] | trim + ' [/INST]' }}{% endif %}"
    "{% endfor %}"
)


def _sentencepiece_tokenizer_class():
    """Build the class lazily so that importing plw.data does not import transformers."""
    global _SP_CLASS
    if _SP_CLASS is not None:
        return _SP_CLASS
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    class SentencePieceTokenizer(SentencePieceBackend):
        """A `PreTrainedTokenizer` whose encoding is exactly `sentencepiece`'s (BOS prepended)."""

        vocab_files_names = {"vocab_file": "tokenizer.model"}
        model_input_names = ["input_ids", "attention_mask"]

        def __init__(self, vocab_file, *, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                     pad_token=None, add_bos_token=True, **kwargs):
            self.add_bos_token = add_bos_token
            kwargs.setdefault("model_max_length", 4096)  # LLaMA-2's context
            kwargs.pop("legacy", None)
            # legacy=True: `_tokenize` is plain `sp.encode(text)`, dummy prefix included.
            super().__init__(vocab_file=vocab_file, legacy=True, bos_token=bos_token,
                             eos_token=eos_token, unk_token=unk_token, pad_token=pad_token,
                             add_bos_token=add_bos_token, **kwargs)
            if self.chat_template is None:
                self.chat_template = LLAMA2_CHAT_TEMPLATE

        def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
            bos = [self.bos_token_id] if self.add_bos_token else []
            return bos + list(token_ids_0) + (list(token_ids_1) if token_ids_1 is not None else [])

        def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
            if already_has_special_tokens:
                return super().get_special_tokens_mask(token_ids_0, token_ids_1, True)
            bos = [1] if self.add_bos_token else []
            return bos + [0] * len(token_ids_0) + ([0] * len(token_ids_1) if token_ids_1 is not None else [])

        def create_token_type_ids_from_sequences(self, token_ids_0, token_ids_1=None):
            return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

        def convert_tokens_to_string(self, tokens):
            # Decode runs of pieces with SentencePiece itself (exact spaces and byte fallback).
            out, run = [], []
            specials = set(self.all_special_tokens)
            for tok in tokens:
                if tok in specials or tok in self._added_tokens_encoder:
                    out.append(self.sp_model.decode_pieces(run) if run else "")
                    out.append(tok)
                    run = []
                else:
                    run.append(tok)
            out.append(self.sp_model.decode_pieces(run) if run else "")
            return "".join(out)

        def encode_with_offsets(self, texts, *, split_special_tokens=True):
            """Token ids (no BOS/EOS added) and character offsets for each text.

            With `split_special_tokens=False`, special-token strings in the text (e.g. `</s>` in a
            rendered chat template) become their ids, exactly as `tok(text, add_special_tokens=False)`
            does; with True they are encoded as plain text.
            """
            results = []
            for text in texts:
                if split_special_tokens:
                    pieces = [text]
                else:
                    pieces = self.tokens_trie.split(text)
                ids, offsets, pos = [], [], 0
                for piece in pieces:
                    if not piece:
                        continue
                    if not split_special_tokens and piece in self._added_tokens_encoder:
                        ids.append(self._added_tokens_encoder[piece])
                        offsets.append((pos, pos + len(piece)))
                    else:
                        sp_ids, sp_offsets = _sp_encode_offsets(self.sp_model, piece)
                        ids.extend(sp_ids)
                        offsets.extend((pos + a, pos + b) for a, b in sp_offsets)
                    pos += len(piece)
                results.append((ids, offsets))
            return results

    _SP_CLASS = SentencePieceTokenizer
    return _SP_CLASS


_SP_CLASS = None


def _sp_encode_offsets(sp_model, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """SentencePiece ids with character (not byte) offsets into `text`."""
    proto = sp_model.encode(text, return_type="proto")
    ids = [p.id for p in proto.pieces]
    raw = text.encode("utf-8")
    if len(raw) == len(text):  # ASCII: byte offsets are character offsets
        return ids, [(p.begin, p.end) for p in proto.pieces]
    byte_to_char = [0] * (len(raw) + 1)
    b = 0
    for i, ch in enumerate(text):
        n = len(ch.encode("utf-8"))
        for k in range(n):
            byte_to_char[b + k] = i
        b += n
    byte_to_char[len(raw)] = len(text)
    return ids, [(byte_to_char[p.begin], byte_to_char[p.end]) for p in proto.pieces]


def sentencepiece_tokenizer(model_file: str | Path, **kwargs):
    """An exact SentencePiece-backed tokenizer for a `tokenizer.model` file (LLaMA conventions)."""
    model_file = Path(model_file)
    if not model_file.is_file():
        raise PLWError("no such file", file=str(model_file))
    return _sentencepiece_tokenizer_class()(vocab_file=str(model_file), **kwargs)


def is_sentencepiece_tokenizer(tok) -> bool:
    return _SP_CLASS is not None and isinstance(tok, _SP_CLASS)


def encode_with_offsets(tokenizer, texts: list[str], *, split_special_tokens: bool = True):
    """[(ids, char_offsets)] for each text, with no special tokens added by the tokenizer.

    Works for fast (`tokenizers`-backed) tokenizers and plw's SentencePiece tokenizer. With
    `split_special_tokens=True` (the default, for data fields and the Alpaca/raw templates) a
    literal `</s>` in the data stays text; chat templates render special tokens as text and
    need `False`.
    """
    if hasattr(tokenizer, "encode_with_offsets"):
        return tokenizer.encode_with_offsets(texts, split_special_tokens=split_special_tokens)
    if not getattr(tokenizer, "is_fast", False):
        raise PLWError(f"tokenizer {type(tokenizer).__name__} gives no character offsets; use a fast "
                       "tokenizer or a SentencePiece .model", field="tokenizer")
    if not texts:
        return []
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True,
                    split_special_tokens=split_special_tokens)
    return [(list(ids), _untrim(tokenizer, ids, [tuple(o) for o in offs]))
            for ids, offs in zip(enc["input_ids"], enc["offset_mapping"])]


def _untrim(tokenizer, ids, offsets):
    """Undo `trim_offsets`: a whitespace-only token trimmed to zero width at s really spans [s-k, s)."""
    out = offsets
    for i, (s, e) in enumerate(offsets):
        if s == e:
            text = tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens([ids[i]]))
            if text and not text.strip():
                out = list(out) if out is offsets else out
                out[i] = (max(0, s - len(text)), s)
    return out


def prefix_special_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before a text (usually just BOS)."""
    probe = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    for i in range(len(full) - len(probe) + 1):
        if full[i:i + len(probe)] == probe:
            return list(full[:i])
    return []


def count_tokens(tokenizer, texts: list[str]) -> list[int]:
    """Token count of each text on its own, without special tokens (the paper's Table 1)."""
    if is_sentencepiece_tokenizer(tokenizer):
        # Batch encoding in C++; identical to encode_with_offsets(...) with split specials.
        return [len(ids) for ids in tokenizer.sp_model.encode(list(texts))]
    return [len(ids) for ids, _ in encode_with_offsets(tokenizer, list(texts))]


# --------------------------------------------------------------------------------------------
# The built-in tokenizer: a byte-level BPE trained on plw's own synthetic data.

BUILTIN_TOKENIZER = "builtin"


def builtin_tokenizer(vocab_size: int = 2048):
    """The built-in default tokenizer, trained deterministically on the synthetic data (cached)."""
    key = vocab_size
    if key not in _BUILTIN_CACHE:
        from plw.data.builtin_corpus import builtin_training_texts

        _BUILTIN_CACHE[key] = train_tokenizer(builtin_training_texts(), vocab_size=vocab_size)
    # A copy: callers may change padding side, pad token or templates.
    return copy.deepcopy(_BUILTIN_CACHE[key])


_BUILTIN_CACHE: dict = {}
