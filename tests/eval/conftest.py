"""Fixtures of the plw.eval tests: a small byte-level tokenizer and a tiny random Llama."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def eval_tokenizer():
    from plw.data.synthetic import generate
    from plw.data.templates import render
    from plw.data.tokenizer import train_tokenizer

    texts = []
    for record in generate(300, seed=3):
        prompt, completion = render(record, "alpaca", None)
        texts.append(prompt + completion)
    texts += ["Question: How do I open a jar?\nAnswer: Twist the lid.",
              "Q: Where were the 1992 Olympics held?\nA: Barcelona, Spain."] * 5
    return train_tokenizer(texts, vocab_size=768)


@pytest.fixture(scope="session")
def eval_model(eval_tokenizer):
    from plw.train.tiny import tiny_llama

    return tiny_llama(eval_tokenizer, seed=0, hidden_size=32, num_layers=2, num_heads=2)
