"""The AlpacaEval set: instructions and reference outputs from a local JSON list.

Used by the judge (win rate) and by generation length (its prompts); its own module so neither
depends on the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from plw.errors import PLWError
from plw.eval.spec import SHARED_DATA

DEFAULT_ALPACA_EVAL = SHARED_DATA / "alpaca_eval" / "text_davinci_003_model_outputs.json"


@dataclass(frozen=True)
class AlpacaEvalSet:
    instructions: list[str]
    outputs: list[str]        # reference outputs (AlpacaEval 1: text-davinci-003)
    generator: str


def load_alpaca_eval(path=None, *, limit: int | None = None) -> AlpacaEvalSet:
    """The AlpacaEval instructions and reference outputs from a local JSON file."""
    path = Path(path) if path is not None else DEFAULT_ALPACA_EVAL
    if not path.is_file():
        raise PLWError("AlpacaEval file not found (pass the path of an AlpacaEval JSON "
                       "list with instruction/output)", file=str(path))
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PLWError(f"invalid JSON: {err.msg}", file=str(path), line=err.lineno)
    if not isinstance(rows, list) or not rows:
        raise PLWError("expected a non-empty JSON list", file=str(path))
    instructions, outputs = [], []
    for i, row in enumerate(rows[:limit] if limit is not None else rows):
        for key in ("instruction", "output"):
            if not isinstance(row, dict) or not isinstance(row.get(key), str):
                raise PLWError(f"record {i}: missing or not a string", file=str(path), field=key)
        instructions.append(row["instruction"])
        outputs.append(row["output"])
    return AlpacaEvalSet(instructions, outputs, str(rows[0].get("generator", "reference")))
