"""Fixtures for plw.data tests: tokenizers that need no hub (and LLaMA-2's when ../shared has it)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """The built-in byte-level BPE (a fast `tokenizers` tokenizer)."""
    from plw.data.tokenizer import builtin_tokenizer

    return builtin_tokenizer()


@pytest.fixture(scope="session")
def unigram_model_file(tmp_path_factory) -> Path:
    """A small SentencePiece unigram model trained here (byte fallback, LLaMA-like settings)."""
    import sentencepiece as spm

    from plw.data.synthetic import generate

    texts = []
    for r in generate(600, seed=3):
        texts += [r.instruction, r.input, r.output]
    texts = [t for t in texts if t] + ["naïve café déjà vu", "Größe straße", "日本語のテキスト"]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buf, vocab_size=400,
                                   model_type="unigram", byte_fallback=True, character_coverage=1.0,
                                   bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2,
                                   num_threads=1, input_sentence_size=0)
    path = tmp_path_factory.mktemp("spm") / "tokenizer.model"
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="session")
def unigram_tokenizer(unigram_model_file):
    """plw's exact SentencePiece tokenizer over the small unigram model."""
    from plw.data.tokenizer import load_tokenizer

    return load_tokenizer(unigram_model_file)


@pytest.fixture(scope="session")
def llama2_tokenizer(llama2_tokenizer_dir):
    from plw.data.tokenizer import load_tokenizer

    return load_tokenizer(llama2_tokenizer_dir)


@pytest.fixture(scope="session")
def demo_file(shared) -> Path:
    path = shared / "data" / "instructions" / "alpaca_gpt4_demo.json"
    if not path.is_file():
        pytest.skip("alpaca_gpt4_demo.json not present in ../shared")
    return path
