"""The pairwise judge against a real HTTP server on 127.0.0.1 speaking the OpenAI
chat-completions protocol (test infrastructure standing in for an external judge service)."""

from __future__ import annotations

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from plw.errors import PLWError
from plw.eval.judge import (JudgeConfig, alpaca_eval_prompt_file, load_alpaca_eval, load_prompt,
                            parse_ranking, to_messages, win_rate)


def _ranking(first: str) -> str:
    second = "model_2" if first == "model_1" else "model_1"
    return (f"[\n    {{'model': '{first}', 'rank': 1}},\n"
            f"    {{'model': '{second}', 'rank': 2}}\n]")


class JudgeServer:
    """A deterministic judge: `policy(answer_1, answer_2) -> reply text`."""

    def __init__(self, policy, fail_first: int = 0, status: int = 500):
        self.policy, self.fail_first, self.status = policy, fail_first, status
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if len(outer.requests) <= outer.fail_first:
                    return self._send(outer.status, {"error": "busy"})
                prompt = body["messages"][-1]["content"]
                answers = re.findall(r'"answer": """(.*?)"""', prompt, flags=re.S)
                reply = outer.policy(*answers)
                self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": reply}}]})

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def prefers_longer(a: str, b: str) -> str:
    return _ranking("model_1" if len(a) >= len(b) else "model_2")


INSTRUCTIONS = [f"Question {i}?" for i in range(40)]
REFERENCES = [f"reference answer {i}" for i in range(40)]
# The model's answer is longer than the reference on exactly 15 of 40 items.
OUTPUTS = [("a much longer answer of the model " if i % 8 < 3 else "") + f"m{i}"
           for i in range(40)]


def _config(server, **kw):
    return {"base_url": server.base_url, "model": "judge-7b", "api_key_env": "PLW_TEST_JUDGE_KEY",
            "prompt": "plw", "max_retries": 2, "retry_backoff_s": 0.01, **kw}


def test_win_rate_with_a_length_preferring_judge(monkeypatch):
    monkeypatch.setenv("PLW_TEST_JUDGE_KEY", "sk-test-123")
    with JudgeServer(prefers_longer) as server:
        result = win_rate(INSTRUCTIONS, OUTPUTS, REFERENCES, _config(server), seed=3,
                          progress=False)
    wins = [float(len(o) > len(r)) for o, r in zip(OUTPUTS, REFERENCES)]
    assert sum(wins) == 15
    p = sum(wins) / 40
    assert result.win_rate == pytest.approx(100 * p)
    sem = math.sqrt(sum((w - p) ** 2 for w in wins) / 39 / 40)
    assert result.standard_error == pytest.approx(100 * sem)
    assert result.n == 40 and result.n_invalid == 0
    # Both orders were used, and the judge saw the right texts in the right slots.
    firsts = [a["model_first"] for a in result.annotations]
    assert 5 < sum(firsts) < 35
    seen = {}
    for req in server.requests:  # concurrent requests arrive in any order
        prompt = req["messages"][-1]["content"]
        instruction = re.search(r'"instruction": """(.*?)"""', prompt, flags=re.S).group(1)
        seen[instruction] = re.findall(r'"answer": """(.*?)"""', prompt, flags=re.S)
        assert req["model"] == "judge-7b" and req["temperature"] == 0.0
    for ins, ann, out, ref in zip(INSTRUCTIONS, result.annotations, OUTPUTS, REFERENCES):
        assert ann["instruction"] == ins
        assert seen[ins] == ([out, ref] if ann["model_first"] else [ref, out])
    assert all(h["Authorization"] == "Bearer sk-test-123" for h in server.headers)
    assert [r["messages"][0]["role"] for r in server.requests[:1]] == ["system"]


def test_position_bias_cancels_by_random_order():
    with JudgeServer(lambda a, b: _ranking("model_1")) as server:
        result = win_rate(INSTRUCTIONS * 5, OUTPUTS * 5, REFERENCES * 5, _config(server),
                          seed=0, progress=False)
    firsts = [a["model_first"] for a in result.annotations]
    # An always-first judge gives the model exactly the items where it was shown first.
    assert result.win_rate == pytest.approx(100 * sum(firsts) / len(firsts))
    assert 40 < result.win_rate < 60


def test_seeded_order_is_reproducible_and_unparseable_replies_are_counted():
    replies = iter(["Output (a)", _ranking("model_2")] * 20)
    lock = threading.Lock()

    def policy(a, b):
        with lock:
            return next(replies)

    with JudgeServer(policy) as server:
        result = win_rate(INSTRUCTIONS, OUTPUTS, REFERENCES, _config(server, concurrency=1),
                          seed=11, progress=False)
    assert result.n_invalid == 20 and result.n == 20
    with JudgeServer(prefers_longer) as server:
        again = win_rate(INSTRUCTIONS, OUTPUTS, REFERENCES, _config(server), seed=11,
                         progress=False)
    assert [a["model_first"] for a in again.annotations] == \
        [a["model_first"] for a in result.annotations]


def test_retries_server_errors_then_fails_with_one_line():
    with JudgeServer(prefers_longer, fail_first=2) as server:  # two 500s, then answers
        result = win_rate(INSTRUCTIONS[:1], OUTPUTS[:1], REFERENCES[:1],
                          _config(server, max_retries=2), progress=False)
    assert result.n == 1
    with JudgeServer(prefers_longer, fail_first=10, status=401) as server:
        with pytest.raises(PLWError, match="HTTP 401") as err:
            win_rate(INSTRUCTIONS[:1], OUTPUTS[:1], REFERENCES[:1], _config(server),
                     progress=False)
        assert len(server.requests) == 1  # client errors are not retried
    assert err.value.field == "judge.base_url"


def test_bad_judge_config_and_inputs_name_the_field():
    with pytest.raises(PLWError) as err:
        win_rate(["q"], ["a"], ["b"], {"base_url": "http://127.0.0.1:9", "model": "m",
                                       "concurrency": 0})
    assert err.value.field == "judge.concurrency"
    with pytest.raises(PLWError) as err:
        win_rate(["q"], ["a"], ["b"], {"model": "m"})
    assert err.value.field == "judge.base_url"
    with pytest.raises(PLWError, match="as many outputs"):
        win_rate(["q", "r"], ["a"], ["b"], JudgeConfig(base_url="http://x", model="m"))
    with pytest.raises(PLWError, match="not found"):
        load_prompt("/no/such/template.txt")


def test_parse_ranking():
    assert parse_ranking(_ranking("model_1")) == 1
    assert parse_ranking("Sure!\n" + _ranking("model_2") + "\nDone.") == 2
    assert parse_ranking("[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 1}]") is None
    assert parse_ranking("Output (a)") is None
    assert parse_ranking("[{'model': 'model_1'}]") is None


def test_prompt_templates_fill_literally():
    for name in ("plw", "alpaca_eval_gpt4"):
        template = load_prompt(name)
        msgs = to_messages(template, instruction="Say {x}", output_1='A "one"', output_2="B {two}")
        text = "\n".join(m["content"] for m in msgs)
        assert "Say {x}" in text and 'A "one"' in text and "B {two}" in text
        assert msgs[-1]["role"] == "user" and "{output_1}" not in text
    if alpaca_eval_prompt_file() is not None:  # the alpaca-eval package is installed
        assert load_prompt("alpaca_eval_gpt4") == alpaca_eval_prompt_file().read_text()


def test_load_alpaca_eval(shared, tmp_path):
    data = load_alpaca_eval()
    assert len(data.instructions) == len(data.outputs) == 805
    assert data.generator == "text_davinci_003"
    assert len(load_alpaca_eval(limit=3).instructions) == 3
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "x"}]')
    with pytest.raises(PLWError) as err:
        load_alpaca_eval(bad)
    assert err.value.field == "output" and str(bad) in err.value.one_line()
