"""The local inference engine: models loaded on first use, kept least-recently-used under a memory
budget, each generating through its own continuous batcher.

`InferenceEngine.model(source)` returns the model's `Batcher` (loading it if needed);
`stream(batcher, prompt_ids, params)` is the async view of one request; `generate` collects it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
from typing import AsyncIterator, Callable

from plw.errors import PLWError
from plw.serve.inference.batching import Batcher, GenerationRequest
from plw.serve.inference.loading import LoadedModel, load_for_inference
from plw.serve.inference.sampling import SamplingParams


class InferenceEngine:
    """Loaded models by source (`builtin:tiny`, a directory, a `.gguf` file), LRU under
    `memory_budget` bytes of weights. A model that is generating is never evicted: the budget can
    be exceeded while every loaded model is busy."""

    def __init__(self, *, memory_budget: int | None = None, max_batch_size: int = 32,
                 device: str = "cpu", loader: Callable[..., LoadedModel] = load_for_inference):
        self.memory_budget = memory_budget
        self.max_batch_size = max_batch_size
        self.device = device
        self._loader = loader
        self._models: collections.OrderedDict[str, Batcher] = collections.OrderedDict()
        self._lock = threading.Lock()  # guards _models
        self._load_lock = threading.Lock()  # one load at a time: loads are memory peaks

    def model(self, source: str) -> Batcher:
        """The batcher of `source`, loaded on first use (blocking). `PLWError` if it cannot load."""
        with self._lock:
            if source in self._models:
                self._models.move_to_end(source)
                return self._models[source]
        with self._load_lock:
            with self._lock:
                if source in self._models:
                    return self._models[source]
            lm = self._loader(source, device=self.device)
            batcher = Batcher(lm, max_batch_size=self.max_batch_size, name=source).start()
            with self._lock:
                self._models[source] = batcher
                self._evict(keep=source)
            return batcher

    async def amodel(self, source: str) -> Batcher:
        return await asyncio.to_thread(self.model, source)

    def loaded(self) -> list[str]:
        """Loaded sources, least recently used first."""
        with self._lock:
            return list(self._models)

    def unload(self, source: str) -> None:
        with self._lock:
            batcher = self._models.pop(source, None)
        if batcher is not None:
            batcher.stop()

    def close(self) -> None:
        with self._lock:
            batchers, self._models = list(self._models.values()), collections.OrderedDict()
        for b in batchers:
            b.stop()
        for b in batchers:
            b.join(timeout=5)

    def _evict(self, keep: str) -> None:
        if self.memory_budget is None:
            return
        for source in list(self._models):
            if sum(b.lm.n_bytes for b in self._models.values()) <= self.memory_budget:
                return
            batcher = self._models[source]
            if source != keep and not batcher.busy:
                del self._models[source]
                batcher.stop()


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The model's own chat template over `messages`, ready for the assistant's turn."""
    from plw.data.templates import apply_chat_template

    text = apply_chat_template(tokenizer, messages, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def text_prompt_ids(tokenizer, prompt: str) -> list[int]:
    return tokenizer(prompt)["input_ids"]


async def stream(batcher: Batcher, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[tuple]:
    """The events of one request (see `plw.serve.inference.batching`), ending with "done" or
    "error". Leaving the iteration early (a client that went away) cancels the request."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def emit(*event) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the event loop is gone: nobody is listening
            req.cancel()

    req = GenerationRequest(list(prompt_ids), params, emit)
    batcher.submit(req)
    try:
        while True:
            event = await events.get()
            yield event
            if event[0] in ("done", "error"):
                return
    finally:
        req.cancel()


@dataclasses.dataclass
class Generation:
    texts: list[str]
    finish_reasons: list[str]
    usage: dict


async def generate(batcher: Batcher, prompt_ids: list[int], params: SamplingParams) -> Generation:
    """The whole result of one request; raises what the batcher reported (e.g. `RequestTimeout`)."""
    texts = [""] * params.n
    finish: list[str] = [""] * params.n
    async for event in stream(batcher, prompt_ids, params):
        if event[0] == "delta":
            _, index, text, reason = event
            texts[index] += text
            if reason:
                finish[index] = reason
        elif event[0] == "done":
            return Generation(texts, finish, event[1])
        else:
            raise event[1]
    raise PLWError("generation ended without a result")
