"""The inference engine without a server: continuous batching gives each request what it gets
alone, per-request sampling, stop sequences, timeouts, cancellation, LRU eviction, adapters."""

from __future__ import annotations

import asyncio

import pytest
import torch

from plw.serve.inference import (ContextTooLong, InferenceEngine, RequestTimeout, SamplingParams,
                                 chat_prompt_ids, generate, load_for_inference, stream, text_prompt_ids)
from plw.serve.inference.batching import _safe_end

PROMPTS = ["Name three colours.", "What is 2 plus 2?", "Write a long story about a cat who",
           "hi", "Translate 'dog' into French, please, and explain the word's origin."]


@pytest.fixture(scope="module")
def engine():
    eng = InferenceEngine(max_batch_size=4)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def sharp(tmp_path_factory):
    """builtin:tiny with sharpened attention (q and k scaled up), saved as a model directory: the
    random init attends almost uniformly, which would hide wrong positions or masks."""
    lm = load_for_inference("builtin:tiny")
    with torch.no_grad():
        for layer in lm.model.model.layers:
            layer.self_attn.q_proj.weight.mul_(6)
            layer.self_attn.k_proj.weight.mul_(6)
    path = tmp_path_factory.mktemp("sharp")
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return str(path)


def _ids(batcher, text):
    return chat_prompt_ids(batcher.lm.tokenizer, [{"role": "user", "content": text}])


def test_batched_greedy_equals_one_at_a_time(engine, sharp):
    b = engine.model(sharp)
    params = SamplingParams(max_tokens=12, temperature=0)
    prompts = [_ids(b, p) for p in PROMPTS]

    async def run():
        alone = [await generate(b, p, params) for p in prompts]
        steps = b.steps
        # five requests on a batch of at most four: the fifth joins when a row frees up, and
        # requests of different lengths share one left-padded cache
        together = await asyncio.gather(*(generate(b, p, params) for p in prompts))
        return alone, together, b.steps - steps

    alone, together, steps = asyncio.run(run())
    assert [g.texts for g in together] == [g.texts for g in alone]
    assert [g.usage for g in together] == [g.usage for g in alone]
    assert all(g.usage["completion_tokens"] == 12 and g.finish_reasons == ["length"] for g in alone)
    assert b.max_rows_seen == 4
    assert steps < 5 * 11  # batched: fewer decode steps than one request after another


def test_seeded_sampling_does_not_depend_on_the_batch(engine):
    b = engine.model("builtin:tiny")
    p = _ids(b, PROMPTS[0])
    params = SamplingParams(max_tokens=10, temperature=1.0, top_p=0.9, seed=11, n=2)

    async def run():
        alone = await generate(b, p, params)
        others = [generate(b, _ids(b, q), SamplingParams(max_tokens=10, temperature=0.7)) for q in PROMPTS[1:3]]
        together = (await asyncio.gather(generate(b, p, params), *others))[0]
        return alone, together, await generate(b, p, SamplingParams(max_tokens=10, temperature=1.0, top_p=0.9, seed=12))

    alone, together, other_seed = asyncio.run(run())
    assert together.texts == alone.texts
    assert alone.texts[0] != alone.texts[1]  # n=2: two samples
    assert other_seed.texts[0] == alone.texts[1]  # choice i samples with seed + i


def test_stop_sequences_and_streaming(engine):
    b = engine.model("builtin:tiny")
    p = text_prompt_ids(b.lm.tokenizer, "Once upon a time")

    async def run():
        free = (await generate(b, p, SamplingParams(max_tokens=16, temperature=0))).texts[0]
        stop = free[5:8]
        params = SamplingParams(max_tokens=16, temperature=0, stop=("zzzz-never", stop))
        cut = await generate(b, p, params)
        pieces = [e for e in [e async for e in stream(b, p, params)] if e[0] == "delta"]
        return free, stop, cut, pieces

    free, stop, cut, pieces = asyncio.run(run())
    assert cut.texts[0] == free[:free.find(stop)] and cut.finish_reasons == ["stop"]
    assert "".join(e[2] for e in pieces) == cut.texts[0]
    assert [e[3] for e in pieces][-1] == "stop" and all(e[3] is None for e in pieces[:-1])


def test_safe_end_holds_back_partial_stops_and_characters():
    assert _safe_end("hello wor", ("world",)) == 6
    assert _safe_end("hello", ("xyz",)) == 5
    assert _safe_end("abc\ufffd", ()) == 3


def test_timeout_and_cancel_leave_the_batch_working(engine):
    b = engine.model("builtin:tiny")
    p = _ids(b, PROMPTS[2])

    async def run():
        slow = generate(b, p, SamplingParams(max_tokens=400, temperature=0, timeout=0.3))
        ok = generate(b, p, SamplingParams(max_tokens=5, temperature=0))
        results = await asyncio.gather(slow, ok, return_exceptions=True)
        events = stream(b, p, SamplingParams(max_tokens=400, temperature=0))
        await events.__anext__()
        await events.aclose()  # the client went away
        for _ in range(200):
            if not b.busy:
                break
            await asyncio.sleep(0.05)
        return results

    slow, ok = asyncio.run(run())
    assert isinstance(slow, RequestTimeout)
    assert ok.usage["completion_tokens"] == 5
    assert not b.busy and b.rows == []


def test_prompt_longer_than_the_context_is_refused(engine):
    b = engine.model("builtin:tiny")
    with pytest.raises(ContextTooLong):
        asyncio.run(generate(b, [5] * (b.lm.max_length + 1), SamplingParams(max_tokens=1)))


def test_least_recently_used_model_is_evicted(tmp_path):
    tiny = load_for_inference("builtin:tiny")
    tiny.model.save_pretrained(tmp_path / "a")
    tiny.tokenizer.save_pretrained(tmp_path / "a")
    eng = InferenceEngine(memory_budget=int(tiny.n_bytes * 1.5))
    try:
        eng.model("builtin:tiny")
        eng.model(str(tmp_path / "a"))
        assert eng.loaded() == [str(tmp_path / "a")]
        eng.model("builtin:tiny")
        assert eng.loaded() == ["builtin:tiny"]
    finally:
        eng.close()


def test_lora_adapter_of_a_plw_run_loads_on_its_base(tmp_path):
    """A `plw train --lora` output on builtin:tiny: the adapter goes on the same random init (the
    run's seed), merged; its logits equal PEFT's unmerged model's."""
    from peft import LoraConfig, get_peft_model

    from plw.data.tokenizer import builtin_tokenizer
    from plw.train import TrainConfig
    from plw.train.config import save_config
    from plw.train.tiny import tiny_llama

    tok = builtin_tokenizer()
    config = TrainConfig(model="builtin:tiny", seed=5, lora=True)
    base = tiny_llama(tok, seed=5, hidden_size=config.tiny.hidden_size, num_layers=config.tiny.num_layers,
                      num_heads=config.tiny.num_heads, max_position_embeddings=max(1024, config.max_length))
    peft = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8,
                                           target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    save_config(config, tmp_path / "config.yaml")
    lm = load_for_inference(str(tmp_path))
    ids = torch.tensor([text_prompt_ids(tok, "Name three colours.")])
    with torch.no_grad():
        want = peft(input_ids=ids).logits
        got = lm.model(input_ids=ids).logits
    assert not hasattr(lm.model, "peft_config")  # merged: generation costs what the base costs
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--max-batch-size", "0"], "--max-batch-size: must be >= 1"),
    (["--request-timeout", "-1"], "--request-timeout: must be > 0"),
    (["--inference-memory-mb", "0"], "--inference-memory-mb: must be > 0"),
    (["--inference-backend", "tgi"], "--inference-backend: expected local or vllm"),
    (["--inference-backend", "vllm"], "--inference-backend: vllm is not installed"),
])
def test_serve_refuses_bad_inference_options(args, message, tmp_path, capsys):
    import importlib.util

    from plw.cli import main

    if "vllm" in args and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    assert main(["serve", "--data-dir", str(tmp_path / "d"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
