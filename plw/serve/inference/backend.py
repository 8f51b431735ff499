"""What the inference routes call: a backend turns a resolved model plus a prompt into events.

`LocalBackend` runs plw's own engine (CPU or one GPU, continuous batching); `plw.serve.inference.
vllm_backend.VLLMBackend` runs vLLM on GPU servers. Both give the same events as
`plw.serve.inference.engine.stream`: ("delta", index, text, finish_reason), then ("done", usage) or
("error", exception).
"""

from __future__ import annotations

from typing import AsyncIterator, Protocol

from plw.serve.inference.engine import InferenceEngine, chat_prompt_ids, stream, text_prompt_ids
from plw.serve.inference.sampling import SamplingParams


class Backend(Protocol):
    async def prompt_ids(self, source: str, *, messages: list[dict] | None = None,
                         prompt: str | None = None) -> list[int]: ...

    def stream(self, source: str, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[tuple]: ...

    def close(self) -> None: ...


def model_source(resolved) -> str:
    """What to load for a `plw.serve.models.ResolvedModel`: the fine-tuned model's directory (full
    weights, or a LoRA adapter whose run config names its base), else the base model's source."""
    return str(resolved.path) if resolved.path is not None else resolved.base.source


class LocalBackend:
    def __init__(self, engine: InferenceEngine):
        self.engine = engine

    async def prompt_ids(self, source: str, *, messages: list[dict] | None = None,
                         prompt: str | None = None) -> list[int]:
        tokenizer = (await self.engine.amodel(source)).lm.tokenizer
        if messages is not None:
            return chat_prompt_ids(tokenizer, messages)
        return text_prompt_ids(tokenizer, prompt or "")

    async def stream(self, source: str, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[tuple]:
        batcher = await self.engine.amodel(source)
        async for event in stream(batcher, prompt_ids, params):
            yield event

    def close(self) -> None:
        self.engine.close()
