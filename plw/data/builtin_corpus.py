"""The text the built-in tokenizer is trained on: plw's templates and its synthetic data.

Apart from the tokenizer wrapper (`tokenizer`), which only knows how to train and load.
"""

from __future__ import annotations

from plw.data.synthetic import generate
from plw.data.templates import (ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT, INVERT_INSTRUCTION,
                                INVERT_INSTRUCTION_WITH_INPUT)


def builtin_training_texts() -> list[str]:
    """Deterministic: the same list on every call."""
    texts = [ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT, INVERT_INSTRUCTION, INVERT_INSTRUCTION_WITH_INPUT]
    for rec in generate(2000, seed=12345, long_fraction=0.5):
        texts.extend([rec.instruction, rec.input, rec.output])
    return texts
