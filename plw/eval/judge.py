"""AlpacaEval-1-style pairwise win rate against reference outputs, with any judge model
served behind an OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp, OpenAI...).

For each instruction the judge sees the model's output and the reference output (by default
AlpacaEval 1's text-davinci-003 outputs) in a random order (seeded), so a judge's position
bias cancels on average, and ranks them. Win rate = 100 × mean preference for the model
(a tie or an unparseable answer is reported, not counted); standard error = 100 × SEM.

The judge prompt is AlpacaEval 1's default annotator prompt (`alpaca_eval_gpt4`), read from
the `alpaca-eval` package's data when it is installed (`pip install plw[judge]`), otherwise
plw's own prompt of the same protocol (rank two answers as a Python list of dicts). The
AlpacaEval set is read from a local file; nothing is downloaded from the hub.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import random
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from plw.errors import PLWError
from plw.eval.alpaca_eval import DEFAULT_ALPACA_EVAL, AlpacaEvalSet, load_alpaca_eval  # noqa: F401 (re-exported)
from plw.ui import progress_bar


# plw's fallback prompt: the AlpacaEval 1 protocol (rank model_1 / model_2), own wording.
PLW_RANKING_PROMPT = """<|im_start|>system
You compare the answers of two AI assistants to the same instruction.
<|im_end|>
<|im_start|>user
Decide which of two answers a careful human would prefer for the instruction below.

Instruction:
{
    "instruction": \"\"\"{instruction}\"\"\",
}

Answers:
[
    {
        "model": "model_1",
        "answer": \"\"\"{output_1}\"\"\"
    },
    {
        "model": "model_2",
        "answer": \"\"\"{output_2}\"\"\"
    }
]

Reply with only a Python list ranking the two models, best first (rank 1), exactly in this form:
[
    {'model': <model-name>, 'rank': <model-rank>},
    {'model': <model-name>, 'rank': <model-rank>}
]
<|im_end|>"""


class JudgeConfig(BaseModel):
    """Where the judge is served and how to ask it."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="OpenAI-compatible API root, e.g. http://localhost:8000/v1")
    model: str = Field(description="model name the server expects")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="env var holding the API "
                                    "key; None or unset sends no key (local servers)")
    max_tokens: int = Field(100, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0)
    retry_backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles")
    concurrency: int = Field(4, ge=1)
    prompt: str = Field("alpaca_eval_gpt4", description="'alpaca_eval_gpt4' (AlpacaEval 1's "
                        "annotator prompt), 'plw' (plw's own) or a path to a template file with "
                        "{instruction}, {output_1}, {output_2} and <|im_start|> role blocks")


# --------------------------------------------------------------------------- data

# --------------------------------------------------------------------------- prompt

def alpaca_eval_prompt_file(name: str = "alpaca_eval_gpt4") -> Path | None:
    """The annotator prompt shipped in the installed `alpaca-eval` package, if any.

    Located without importing the package (its import needs setuptools' pkg_resources)."""
    spec = importlib.util.find_spec("alpaca_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "evaluators_configs" / name
    for candidate in sorted(root.glob("*.txt")):
        return candidate
    return None


def load_prompt(prompt: str) -> str:
    if prompt == "plw":
        return PLW_RANKING_PROMPT
    if prompt == "alpaca_eval_gpt4":
        path = alpaca_eval_prompt_file(prompt)
        return path.read_text(encoding="utf-8") if path is not None else PLW_RANKING_PROMPT
    path = Path(prompt)
    if not path.is_file():
        raise PLWError("judge prompt template not found", file=prompt, field="prompt")
    text = path.read_text(encoding="utf-8")
    for key in ("{instruction}", "{output_1}", "{output_2}"):
        if key not in text:
            raise PLWError(f"template lacks {key}", file=prompt, field="prompt")
    return text


def to_messages(template: str, **values: str) -> list[dict]:
    """Fill a `<|im_start|>role ... <|im_end|>` template (AlpacaEval's ChatML) into chat
    messages. Values are substituted literally (they may contain braces)."""
    text = re.sub(r"\{(instruction|output_1|output_2)\}", lambda m: values[m.group(1)], template)
    messages = []
    for block in text.split("<|im_start|>")[1:]:
        block = block.split("<|im_end|>")[0]
        role, _, content = block.partition("\n")
        messages.append({"role": role.strip().split(" ")[0], "content": content.strip()})
    return messages or [{"role": "user", "content": text.strip()}]


def parse_ranking(completion: str) -> int | None:
    """1 or 2: which of model_1/model_2 the judge ranked first; None when unparseable."""
    match = re.search(r"\[\s*\{.*\}\s*\]", completion, flags=re.S)
    if not match:
        return None
    try:
        ranking = ast.literal_eval(match.group(0))
        rank_1 = [r["rank"] for r in ranking if r["model"] == "model_1"]
        rank_2 = [r["rank"] for r in ranking if r["model"] == "model_2"]
    except (ValueError, SyntaxError, TypeError, KeyError):
        return None
    if len(rank_1) != 1 or len(rank_2) != 1 or {rank_1[0], rank_2[0]} != {1, 2}:
        return None
    return 1 if rank_1[0] == 1 else 2


# --------------------------------------------------------------------------- client

def chat_completion(config: JudgeConfig, messages: list[dict]) -> str:
    """One chat completion from the judge server (retrying transient failures)."""
    url = config.base_url.rstrip("/") + "/chat/completions"
    body = json.dumps({"model": config.model, "messages": messages,
                       "max_tokens": config.max_tokens,
                       "temperature": config.temperature}).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(config.api_key_env) if config.api_key_env else None
    if key:
        headers["Authorization"] = f"Bearer {key}"
    for attempt in range(config.max_retries + 1):
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=config.timeout_s) as response:
                payload = json.loads(response.read().decode("utf-8"))
            return payload["choices"][0]["message"]["content"] or ""
        except urllib.error.HTTPError as err:
            retry = err.code == 429 or err.code >= 500
            problem = f"judge server answered HTTP {err.code} at {url}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            retry, problem = True, f"cannot reach the judge at {url}: {err}"
        except (KeyError, IndexError, TypeError, json.JSONDecodeError):
            retry, problem = False, f"judge server at {url} did not answer in the chat format"
        if not retry or attempt == config.max_retries:
            raise PLWError(problem, field="judge.base_url")
        time.sleep(min(config.retry_backoff_s * 2.0 ** attempt, 60.0))
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- win rate

@dataclass(frozen=True)
class WinRate:
    win_rate: float            # percent of judged pairs where the model's output won
    standard_error: float      # percent
    n: int                     # pairs with a valid judgement
    n_invalid: int             # unparseable judgements (excluded)
    annotations: list[dict] = field(repr=False)


def win_rate(instructions: Sequence[str], outputs: Sequence[str],
             reference_outputs: Sequence[str], judge: JudgeConfig | dict, *, seed: int = 0,
             progress: bool = True) -> WinRate:
    """Pairwise win rate of `outputs` against `reference_outputs` as ranked by `judge`."""
    if isinstance(judge, dict):
        try:
            judge = JudgeConfig.model_validate(judge)
        except Exception as err:  # pydantic.ValidationError: name the first bad field
            first = err.errors()[0] if hasattr(err, "errors") else {"loc": (), "msg": str(err)}
            raise PLWError(first["msg"], field="judge." + ".".join(map(str, first["loc"])))
    if not (len(instructions) == len(outputs) == len(reference_outputs)) or not instructions:
        raise PLWError(f"need as many outputs ({len(outputs)}) and reference outputs "
                       f"({len(reference_outputs)}) as instructions ({len(instructions)}), >0",
                       field="outputs")
    template = load_prompt(judge.prompt)
    rng = random.Random(seed)
    model_first = [rng.random() < 0.5 for _ in instructions]

    def judge_one(i: int) -> dict:
        a, b = (outputs[i], reference_outputs[i]) if model_first[i] else \
            (reference_outputs[i], outputs[i])
        reply = chat_completion(judge, to_messages(template, instruction=instructions[i],
                                                   output_1=a, output_2=b))
        first = parse_ranking(reply)
        won = None if first is None else float((first == 1) == model_first[i])
        return {"instruction": instructions[i], "model_first": model_first[i],
                "judge_reply": reply, "preferred": first, "model_won": won}

    annotations = [None] * len(instructions)
    with progress_bar(progress, "judging", len(instructions)) as bar, \
            ThreadPoolExecutor(max_workers=judge.concurrency) as pool:
        for i, ann in zip(range(len(instructions)),
                          pool.map(judge_one, range(len(instructions)))):
            annotations[i] = ann
            bar.advance(1)
    wins = [a["model_won"] for a in annotations if a["model_won"] is not None]
    n = len(wins)
    mean = sum(wins) / n if n else float("nan")
    sem = math.sqrt(sum((w - mean) ** 2 for w in wins) / (n - 1) / n) if n > 1 else float("nan")
    return WinRate(100 * mean, 100 * sem, n, len(annotations) - n, annotations)
