"""vLLM as the inference backend of `plw serve` on GPU servers (`--inference-backend vllm`).

Written against vLLM's public async API (`AsyncLLMEngine.from_engine_args`, `generate(prompt,
sampling_params, request_id, lora_request=…)`, `abort`, `SamplingParams`, `TokensPrompt`,
`LoRARequest`). NOT RUN by plw's tests or authors: vLLM needs a GPU and was not installed where
this was written; the local engine is what the test suite checks. See docs/serve-inference.md.

One vLLM engine per base model (vLLM manages its own GPU memory: `gpu_memory_utilization`); a
fine-tuned LoRA adapter runs on its base's engine as a `LoRARequest`; a fully fine-tuned model gets
its own engine. `builtin:tiny` (a random init that exists only in memory) is not served by vLLM.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import AsyncIterator

from plw.errors import PLWError
from plw.serve.inference.batching import ContextTooLong, RequestTimeout
from plw.serve.inference.loading import BUILTIN_TINY
from plw.serve.inference.sampling import SamplingParams


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class VLLMBackend:
    def __init__(self, *, gpu_memory_utilization: float = 0.85, max_lora_rank: int = 64):
        if not vllm_available():
            raise PLWError("vllm is not installed (pip install vllm, on a machine with a GPU)",
                           field="--inference-backend")
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_lora_rank = max_lora_rank
        self._engines: dict[str, object] = {}
        self._tokenizers: dict[str, object] = {}
        self._adapters: dict[str, int] = {}
        self._lock = asyncio.Lock()

    # -- what a source means to vLLM ---------------------------------------------------------
    def _split(self, source: str) -> tuple[str, str | None]:
        """(base model to run, LoRA adapter directory or None)."""
        if source == BUILTIN_TINY:
            raise PLWError("builtin:tiny exists only in memory; the vllm backend serves models on disk",
                           field="model")
        path = Path(source)
        if not (path / "adapter_config.json").is_file():
            return source, None
        base = None
        if (path / "config.yaml").is_file():
            from plw.train import load_config

            base = load_config(path / "config.yaml").model
        if base is None:
            base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base or base == BUILTIN_TINY:
            raise PLWError(f"the adapter's base {base!r} cannot run on vllm", file=source)
        return base, source

    async def _engine(self, base: str):
        async with self._lock:
            if base not in self._engines:
                from vllm import AsyncEngineArgs, AsyncLLMEngine

                args = AsyncEngineArgs(model=base, enable_lora=True, max_lora_rank=self.max_lora_rank,
                                       gpu_memory_utilization=self.gpu_memory_utilization,
                                       trust_remote_code=False)
                self._engines[base] = AsyncLLMEngine.from_engine_args(args)
            return self._engines[base]

    def _lora(self, adapter: str | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        ident = self._adapters.setdefault(adapter, len(self._adapters) + 1)
        return LoRARequest(Path(adapter).name, ident, adapter)

    # -- the Backend protocol ----------------------------------------------------------------
    async def prompt_ids(self, source: str, *, messages: list[dict] | None = None,
                         prompt: str | None = None) -> list[int]:
        from plw.serve.inference.engine import chat_prompt_ids, text_prompt_ids

        if source not in self._tokenizers:
            from plw.data.tokenizer import load_tokenizer

            base, adapter = self._split(source)
            self._tokenizers[source] = await asyncio.to_thread(load_tokenizer, adapter or base)
        tok = self._tokenizers[source]
        return chat_prompt_ids(tok, messages) if messages is not None else text_prompt_ids(tok, prompt or "")

    async def stream(self, source: str, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[tuple]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        base, adapter = self._split(source)
        engine = await self._engine(base)
        max_len = getattr(getattr(engine, "model_config", None), "max_model_len", None)
        if max_len and len(prompt_ids) >= max_len:
            raise ContextTooLong(f"the prompt has {len(prompt_ids)} tokens; this model's context length "
                                 f"is {max_len}")
        sp = VSamplingParams(n=params.n, temperature=params.temperature, top_p=params.top_p,
                             max_tokens=params.max_tokens, stop=list(params.stop) or None, seed=params.seed)
        request_id = uuid.uuid4().hex
        sent = [0] * params.n
        done: set[int] = set()
        generated = 0
        loop = asyncio.get_running_loop()
        deadline = None if params.timeout is None else loop.time() + params.timeout
        outputs = engine.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), sp, request_id,
                                  lora_request=self._lora(adapter))
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    out = await asyncio.wait_for(outputs.__anext__(), left)
                except StopAsyncIteration:
                    break
                for o in out.outputs:  # cumulative text per choice
                    reason = o.finish_reason if o.finish_reason in ("stop", "length") else None
                    if len(o.text) > sent[o.index] or (reason and o.index not in done):
                        yield ("delta", o.index, o.text[sent[o.index]:], reason)
                        sent[o.index] = len(o.text)
                    if reason:
                        done.add(o.index)
                if out.finished:
                    generated = sum(len(o.token_ids) for o in out.outputs)
            yield ("done", {"prompt_tokens": len(prompt_ids), "completion_tokens": generated,
                            "total_tokens": len(prompt_ids) + generated})
        except asyncio.TimeoutError:
            yield ("error", RequestTimeout())
        finally:
            await engine.abort(request_id)

    def close(self) -> None:
        for engine in self._engines.values():
            shutdown = getattr(engine, "shutdown", None)
            if shutdown is not None:
                shutdown()
        self._engines.clear()
