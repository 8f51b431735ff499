"""plw.eval: benchmarks through lm-evaluation-harness, generation metrics, a pairwise judge.

- `evaluate(model, tokenizer, suite, limit=..., batch_size=...)` -> rows
  `{"benchmark", "metric", "score", "group"}` (suites "builtin", "offline", "paper" or task names);
- `plw.eval.generation`: `generation_lengths`, `memorization_bleu`, `generate`;
- `plw.eval.judge`: `win_rate`, `JudgeConfig`, `load_alpaca_eval`.

Heavy libraries are imported inside the functions, so importing plw.eval is cheap.
"""

from plw.eval.harness import SUITES, evaluate, resolve_suite
from plw.eval.spec import TaskSpec

__all__ = ["SUITES", "TaskSpec", "evaluate", "resolve_suite"]
