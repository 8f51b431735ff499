"""Continuous batching for one model: every request in flight is generated in one batch.

A thread owns the model. Each step it admits waiting requests (their prompts are prefilled
together, left-padded, and their key/value cache joins the running batch's, padded on the left),
then runs one decode step for every row, samples each row with its own settings, and retires rows
that finished. Rows carry explicit position ids and an attention mask with zeros over padding, so
a row's logits do not depend on its neighbours (up to float rounding).

Results go back through each request's `emit` callback (called on the batcher thread):
`emit("delta", index, text, finish_reason)` for every piece of a choice's text, then
`emit("done", usage)` once, or `emit("error", exception)` once when it fails or times out.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading
import time
from typing import Any, Callable

from plw.serve.inference.loading import LoadedModel
from plw.serve.inference.sampling import SamplingParams, row_generator, sample_rows


class RequestTimeout(Exception):
    """The request ran past its timeout; its rows were dropped from the batch."""


class ContextTooLong(ValueError):
    """The prompt leaves no room for a completion within the model's context length."""


@dataclasses.dataclass(eq=False)
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    emit: Callable[..., None]
    submitted: float = dataclasses.field(default_factory=time.monotonic)
    cancelled: bool = False  # set by the caller (client gone); the batcher drops its rows
    open_rows: int = 0
    completion_tokens: int = 0
    failed: bool = False

    def expired(self, now: float) -> bool:
        t = self.params.timeout
        return t is not None and now - self.submitted > t

    def cancel(self) -> None:
        self.cancelled = True


class _Row:
    """One choice of one request: its generated ids, its text so far, and what was emitted."""

    def __init__(self, req: GenerationRequest, index: int, lm: LoadedModel):
        self.req, self.index, self.lm = req, index, lm
        self.generator = row_generator(req.params.seed, index)
        self.ids: list[int] = []
        self.pos = len(req.prompt_ids)  # position id of the next token fed
        self.sent = 0  # characters of text already emitted
        self.next_id = 0  # the last sampled token: fed at the next decode step
        self.n_generated = 0
        limit = lm.max_length - len(req.prompt_ids)
        mt = req.params.max_tokens
        self.max_new = limit if mt is None else min(mt, limit)

    def add(self, token: int) -> bool:
        """Take a sampled token; emit new text; True when the row is finished."""
        self.req.completion_tokens += 1
        self.n_generated += 1
        finish = None
        if token in self.lm.eos_ids:
            finish = "stop"
        else:
            self.ids.append(token)
        text = self.lm.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = _first_stop(text, self.req.params.stop)
        if cut is not None:
            text, finish = text[:cut], "stop"
        elif finish is None and self.n_generated >= self.max_new:
            finish = "length"
        end = len(text) if finish else _safe_end(text, self.req.params.stop)
        if end > self.sent or finish:
            self.req.emit("delta", self.index, text[self.sent:end], finish)
            self.sent = max(self.sent, end)
        return finish is not None


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def _safe_end(text: str, stops: tuple[str, ...]) -> int:
    """How much of `text` can be sent now: not a trailing partial UTF-8 character (decoded as
    U+FFFD), nor a tail that may be the start of a stop sequence."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, end), 0, -1):
            if text[end - k:end] == s[:k]:
                hold = max(hold, k)
                break
    return end - hold


class Batcher:
    """The generation loop of one loaded model (a daemon thread, started by `start`)."""

    def __init__(self, lm: LoadedModel, *, max_batch_size: int = 32, name: str = "model"):
        self.lm = lm
        self.max_batch_size = max_batch_size
        self.inbox: queue.Queue[GenerationRequest | None] = queue.Queue()
        self.waiting: collections.deque[GenerationRequest] = collections.deque()
        self.rows: list[_Row] = []
        self.cache: Any = None
        self.mask: Any = None
        self.steps = 0  # decode steps run (the tests read it to see batching happen)
        self.max_rows_seen = 0
        self._stopping = False
        self._cache_arg = _cache_argument(lm.model)
        self._thread = threading.Thread(target=self._run, name=f"plw-batcher-{name}", daemon=True)

    def start(self) -> "Batcher":
        self._thread.start()
        return self

    def submit(self, req: GenerationRequest) -> None:
        n_prompt = len(req.prompt_ids)
        if n_prompt == 0:
            raise ContextTooLong("the prompt is empty")
        if n_prompt >= self.lm.max_length:
            raise ContextTooLong(f"the prompt has {n_prompt} tokens; this model's context length is "
                                 f"{self.lm.max_length}")
        if self._stopping:
            raise RuntimeError("this model is being unloaded")
        self.inbox.put(req)

    @property
    def busy(self) -> bool:
        return bool(self.rows or self.waiting or not self.inbox.empty())

    def stop(self) -> None:
        """Finish what is queued and in flight, then end the thread."""
        self._stopping = True
        self.inbox.put(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                if not self._collect():
                    return
                try:
                    self._admit()
                    if self.rows:
                        self._decode()
                except Exception as err:  # a failed step fails the requests in it, not the server
                    self._fail_all(err)

    def _collect(self) -> bool:
        """Move requests from the inbox to `waiting`; block while there is nothing to do.
        False when stopping and all work is done."""
        block = not (self.rows or self.waiting)
        while True:
            try:
                item = self.inbox.get(block=block, timeout=None)
            except queue.Empty:
                break
            if item is not None:
                self.waiting.append(item)
            block = False
        self._drop_dead()
        return not (self._stopping and not self.rows and not self.waiting and self.inbox.empty())

    def _drop_dead(self) -> None:
        now = time.monotonic()
        for req in list(self.waiting):
            if req.cancelled or req.expired(now):
                self.waiting.remove(req)
                self._end(req, RequestTimeout() if not req.cancelled else None)
        dead = [i for i, r in enumerate(self.rows) if r.req.cancelled or r.req.expired(now)]
        if dead:
            for req in {self.rows[i].req for i in dead}:
                self._end(req, None if req.cancelled else RequestTimeout())
            self._retire(set(dead), count=False)

    def _end(self, req: GenerationRequest, err: Exception | None) -> None:
        if not req.failed:
            req.failed = True
            req.emit("error", err or RequestTimeout("cancelled"))

    def _admit(self) -> None:
        new: list[_Row] = []
        while self.waiting:
            n = self.waiting[0].params.n
            alone = not (self.rows or new)  # a request wider than the batch still runs, alone
            if not alone and len(self.rows) + len(new) + n > self.max_batch_size:
                break
            req = self.waiting.popleft()
            req.open_rows = req.params.n
            new.extend(_Row(req, i, self.lm) for i in range(req.params.n))
        if new:
            self._prefill(new)

    def _prefill(self, rows: list[_Row]) -> None:
        import torch
        from transformers import DynamicCache

        device = self.lm.model.device
        width = max(len(r.req.prompt_ids) for r in rows)
        pad = self.lm.tokenizer.pad_token_id or 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            p = r.req.prompt_ids
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self.lm.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                            position_ids=positions.to(device), use_cache=True, logits_to_keep=1,
                            **{self._cache_arg: cache})
        self._join(rows, cache, mask.to(device))  # the model filled `cache` in place
        self._sample(out.logits[:, -1, :], first=len(self.rows) - len(rows))

    def _decode(self) -> None:
        import torch

        device = self.lm.model.device
        ids = torch.tensor([[r.next_id] for r in self.rows], dtype=torch.long, device=device)
        positions = torch.tensor([[r.pos] for r in self.rows], dtype=torch.long, device=device)
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        out = self.lm.model(input_ids=ids, attention_mask=self.mask, position_ids=positions,
                            use_cache=True, **{self._cache_arg: self.cache})
        for r in self.rows:
            r.pos += 1
        self.steps += 1
        self._sample(out.logits[:, -1, :], first=0)

    def _sample(self, logits, first: int) -> None:
        rows = self.rows[first:]
        tokens = sample_rows(logits.float().cpu(), [r.req.params for r in rows], [r.generator for r in rows])
        done = set()
        for k, (r, t) in enumerate(zip(rows, tokens)):
            r.next_id = t
            if r.add(t):
                done.add(first + k)
        if done:
            self._retire(done, count=True)

    def _retire(self, indices: set[int], count: bool) -> None:
        """Drop rows `indices` from the batch (and from the cache); finish their requests."""
        for i in indices:
            req = self.rows[i].req
            req.open_rows -= 1
            if count and req.open_rows == 0 and not req.failed:
                req.emit("done", {"prompt_tokens": len(req.prompt_ids),
                                  "completion_tokens": req.completion_tokens,
                                  "total_tokens": len(req.prompt_ids) + req.completion_tokens})
        keep = [i for i in range(len(self.rows)) if i not in indices]
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache = self.mask = None
            return
        index = self._index(keep)
        self.mask = self.mask[index]
        start = int(self.mask.any(dim=0).nonzero()[0])  # columns that are padding in every row go
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]

    def _join(self, rows: list[_Row], cache, mask) -> None:
        """Append prefilled `rows` (their cache and mask) to the running batch, left-padding the
        shorter of the two to a common length."""
        import torch.nn.functional as F

        if not self.rows:
            self.rows, self.cache, self.mask = list(rows), cache, mask
            self.max_rows_seen = max(self.max_rows_seen, len(self.rows))
            return
        old, new = self.mask.shape[1], mask.shape[1]
        width = max(old, new)
        self.mask = torch_cat([F.pad(self.mask, (width - old, 0)), F.pad(mask, (width - new, 0))])
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch_cat([F.pad(mine.keys, (0, 0, width - old, 0)),
                                   F.pad(theirs.keys, (0, 0, width - new, 0))])
            mine.values = torch_cat([F.pad(mine.values, (0, 0, width - old, 0)),
                                     F.pad(theirs.values, (0, 0, width - new, 0))])
        self.rows.extend(rows)
        self.max_rows_seen = max(self.max_rows_seen, len(self.rows))

    def _index(self, keep: list[int]):
        import torch

        return torch.tensor(keep, dtype=torch.long, device=self.mask.device)

    def _fail_all(self, err: Exception) -> None:
        for req in {r.req for r in self.rows} | set(self.waiting):
            self._end(req, err)
        self.rows, self.cache, self.mask = [], None, None
        self.waiting.clear()


def _cache_argument(model) -> str:
    """transformers renamed `past_key_values` to `cache` within 5.x; use the installed name."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def torch_cat(tensors):
    import torch

    return torch.cat(tensors, dim=0)
