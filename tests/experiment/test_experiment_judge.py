"""The AlpacaEval-1 win rate row: a sweep with a judge talks to an OpenAI-compatible endpoint
(here a local HTTP server that prefers the longer answer) and records `alpaca_eval/win_rate`."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pandas as pd
import pytest

from plw.experiment.runner import run_sweep
from plw.experiment.spec import load_spec


class _Judge(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        answers = re.findall(r'"answer": """(.*?)"""', text, flags=re.S)
        first = "model_1" if len(answers[0]) >= len(answers[1]) else "model_2"
        other = "model_2" if first == "model_1" else "model_1"
        type(self).requests.append((self.path, body["model"]))
        reply = f"[{{'model': '{first}', 'rank': 1}}, {{'model': '{other}', 'rank': 2}}]"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_url():
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_sweep_records_judge_win_rate(tiny_spec, tmp_path, judge_url, monkeypatch):
    # Reference outputs far longer than any 8-token generation: the length-preferring judge
    # must rank the reference first every time, so the model's win rate is exactly 0.
    ref = tmp_path / "alpaca_eval.json"
    ref.write_text(json.dumps([{"instruction": f"Say something about {w}.", "output": f"{w} " * 200,
                                "generator": "ref"} for w in ("cats", "rain", "maps")]))
    _Judge.requests.clear()
    import plw.eval.generation as generation

    calls = []
    original = generation.generation_lengths
    monkeypatch.setattr(generation, "generation_lengths",
                        lambda *a, **k: calls.append(a[2]) or original(*a, **k))
    # Generation length on the same prompts as the judge: generated once, used twice.
    eval_cfg = {"suite": "builtin", "limit": 4, "generation_prompts": 3, "generation_set": str(ref),
                "memorization_prompts": 0, "max_new_tokens": 8,
                "judge": {"base_url": judge_url, "model": "judge-model", "reference_file": str(ref),
                          "limit": 3, "prompt": "plw", "max_retries": 0, "api_key_env": None}}
    spec = load_spec(tiny_spec(plw=[0.0], datasets=["builtin:short?n=32"], eval=eval_cfg))
    outcome = run_sweep(spec, progress=False)
    assert not outcome.failed, outcome.failed
    df = pd.read_parquet(outcome.store_dir / "results.parquet")
    row = df[df["benchmark"] == "alpaca_eval"]
    assert list(row["metric"]) == ["win_rate"] and list(row["group"]) == ["gen"]
    assert row["score"].iloc[0] == 0.0
    assert len(calls) == 1 and len(calls[0]) == 3
    assert df["generation_length"].notna().all()
    assert len(_Judge.requests) == 3 and all(p == "/v1/chat/completions" and m == "judge-model"
                                             for p, m in _Judge.requests)
