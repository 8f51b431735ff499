"""`POST /v1/chat/completions` and `POST /v1/completions` in OpenAI's shapes, for the server's base
models and the caller's fine-tuned ones.

A chat request is rendered with the model's own chat template; `stream: true` answers with
server-sent events (`chat.completion.chunk` / `text_completion` objects, then `data: [DONE]`).
Another project's fine-tuned model answers 404 as an unknown one does. The backend (plw's engine,
or vLLM with `--inference-backend vllm`) is made on first use and kept on the app.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, AsyncIterator, Literal, Optional, Union

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from plw.errors import PLWError
from plw.serve.auth import Caller, current_caller
from plw.serve.errors import APIError
from plw.serve.inference.backend import model_source
from plw.serve.inference.batching import ContextTooLong, RequestTimeout
from plw.serve.inference.sampling import SamplingParams
from plw.serve.models import resolve_model

router = APIRouter(prefix="/v1", tags=["inference"])

MAX_N = 16
DEFAULT_TIMEOUT_S = 300.0


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI's other options are accepted and ignored

    model: str
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[dict] = None
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    logprobs: Optional[Any] = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[dict], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: only text is supported
            if any(p.get("type") != "text" for p in self.content):
                raise APIError(400, "only text content parts are supported", param="messages")
            return "".join(str(p.get("text", "")) for p in self.content)
        return self.content or ""


class ChatRequest(_Request):
    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)


class CompletionRequest(_Request):
    prompt: Union[str, list[str]]
    max_tokens: Optional[int] = Field(16, ge=1)  # the legacy endpoint's default
    echo: bool = False


def backend_of(request: Request):
    """The app's inference backend, made on first use from the server's settings."""
    app = request.app
    backend = getattr(app.state, "inference", None)
    if backend is None:
        settings = app.state.plw.settings
        if getattr(settings, "inference_backend", "local") == "vllm":
            from plw.serve.inference.vllm_backend import VLLMBackend

            backend = VLLMBackend()
        else:
            from plw.serve.inference.backend import LocalBackend
            from plw.serve.inference.engine import InferenceEngine

            mb = getattr(settings, "inference_memory_mb", None)
            backend = LocalBackend(InferenceEngine(
                memory_budget=int(mb * 2 ** 20) if mb else None,
                max_batch_size=getattr(settings, "inference_max_batch", 32)))
        app.state.inference = backend
    return backend


def _params(body: _Request, max_tokens: int | None, timeout: float) -> SamplingParams:
    if body.logprobs:
        raise APIError(400, "logprobs are not supported", param="logprobs")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name):
            raise APIError(400, f"{name} is not supported (only 0)", param=name)
    return SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                          stop=tuple(body.stop or ()), seed=body.seed, n=body.n, timeout=timeout)


def _timeout(request: Request) -> float:
    return float(getattr(request.app.state.plw.settings, "request_timeout", None) or DEFAULT_TIMEOUT_S)


async def _start(backend, source: str, prompt_ids: list[int], params: SamplingParams) -> tuple[Any, tuple]:
    """The request's event iterator and its first event; errors before any output become API errors."""
    events = backend.stream(source, prompt_ids, params)
    try:
        first = await events.__anext__()
    except ContextTooLong as err:
        raise APIError(400, str(err), param="messages", code="context_length_exceeded") from None
    except PLWError as err:
        raise APIError(500, f"the model could not be loaded: {err}") from None
    if first[0] == "error":
        raise _api_error(first[1])
    return events, first


def _api_error(err: Exception) -> APIError:
    if isinstance(err, RequestTimeout):
        return APIError(408, "The request timed out before the completion was finished.",
                        code="timeout", type="timeout_error")
    return APIError(500, "The server had an error while generating.")


async def _prompt_ids(backend, source: str, **kw) -> list[int]:
    try:
        return await backend.prompt_ids(source, **kw)
    except PLWError as err:
        if err.field in ("template", "messages"):
            raise APIError(400, err.problem, param="messages") from None
        raise APIError(500, f"the model could not be loaded: {err}") from None


async def _collect(events, first, n: int) -> tuple[list[str], list[str], dict]:
    texts, finish = [""] * n, ["stop"] * n
    async for event in _events(events, first):
        if event[0] == "delta":
            texts[event[1]] += event[2]
            if event[3]:
                finish[event[1]] = event[3]
        elif event[0] == "done":
            return texts, finish, event[1]
        else:
            raise _api_error(event[1])
    raise APIError(500, "The server had an error while generating.")


async def _events(events, first) -> AsyncIterator[tuple]:
    """`first`, then the rest of `events`; closing it early (the client went away) cancels the
    request in the batcher."""
    try:
        yield first
        async for event in events:
            yield event
    finally:
        await events.aclose()


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _error_sse(err: Exception) -> str:
    e = _api_error(err)
    return _sse({"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}})


def _usage_wanted(body: _Request) -> bool:
    return bool((body.stream_options or {}).get("include_usage"))


@router.post("/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, caller: Caller = Depends(current_caller)):
    """Creates a model response for the given chat conversation (OpenAI's chat completions)."""
    resolved = await caller.state.db.read(resolve_model, caller, body.model)
    backend = backend_of(request)
    source = model_source(resolved)
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    prompt_ids = await _prompt_ids(backend, source, messages=messages)
    params = _params(body, body.max_completion_tokens or body.max_tokens, _timeout(request))
    events, first = await _start(backend, source, prompt_ids, params)
    cid, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
    head = {"id": cid, "created": created, "model": body.model, "system_fingerprint": "plw"}
    if not body.stream:
        texts, finish, usage = await _collect(events, first, body.n)
        return {**head, "object": "chat.completion", "usage": usage,
                "choices": [{"index": i, "message": {"role": "assistant", "content": t, "refusal": None},
                             "finish_reason": f, "logprobs": None} for i, (t, f) in enumerate(zip(texts, finish))]}

    async def sse() -> AsyncIterator[str]:
        chunk = {**head, "object": "chat.completion.chunk"}
        for i in range(body.n):
            yield _sse({**chunk, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                              "finish_reason": None, "logprobs": None}]})
        async for line in _stream(events, first, chunk, body, _chat_deltas):
            yield line

    return StreamingResponse(sse(), media_type="text/event-stream")


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request, caller: Caller = Depends(current_caller)):
    """Creates a completion for the given prompt (OpenAI's legacy completions); a list of prompts
    gives `n` choices per prompt, prompt by prompt."""
    resolved = await caller.state.db.read(resolve_model, caller, body.model)
    backend = backend_of(request)
    source = model_source(resolved)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts:
        raise APIError(400, "prompt must not be empty", param="prompt")
    if body.stream and len(prompts) > 1:
        raise APIError(400, "stream supports one prompt", param="prompt")
    params = _params(body, body.max_tokens, _timeout(request))
    cid, created = "cmpl-" + secrets.token_hex(12), int(time.time())
    head = {"id": cid, "created": created, "model": body.model, "system_fingerprint": "plw"}
    started = []
    for p in prompts:
        ids = await _prompt_ids(backend, source, prompt=p)
        started.append(await _start(backend, source, ids, params))
    if not body.stream:
        choices, usage = [], {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for k, (events, first) in enumerate(started):
            texts, finish, u = await _collect(events, first, body.n)
            usage = {key: usage[key] + u[key] for key in usage}
            choices += [{"index": k * body.n + i, "text": (prompts[k] if body.echo else "") + t,
                         "finish_reason": f, "logprobs": None} for i, (t, f) in enumerate(zip(texts, finish))]
        return {**head, "object": "text_completion", "choices": choices, "usage": usage}

    events, first = started[0]

    async def sse() -> AsyncIterator[str]:
        chunk = {**head, "object": "text_completion"}
        if body.echo:
            for i in range(body.n):
                yield _sse({**chunk, "choices": [{"index": i, "text": prompts[0], "finish_reason": None,
                                                  "logprobs": None}]})
        async for line in _stream(events, first, chunk, body, _text_deltas):
            yield line

    return StreamingResponse(sse(), media_type="text/event-stream")


async def _stream(events, first, chunk: dict, body, deltas) -> AsyncIterator[str]:
    """The SSE lines of one generation: `deltas(index, text, finish_reason)` gives the choices of a
    piece of text; usage when asked for; an error ends the stream without [DONE], as OpenAI's does."""
    async for event in _events(events, first):
        if event[0] == "delta":
            for choice in deltas(*event[1:]):
                yield _sse({**chunk, "choices": [choice]})
        elif event[0] == "done":
            if _usage_wanted(body):
                yield _sse({**chunk, "choices": [], "usage": event[1]})
        else:
            yield _error_sse(event[1])
            return
    yield "data: [DONE]\n\n"


def _chat_deltas(i: int, text: str, reason: str | None) -> list[dict]:
    out = [{"index": i, "delta": {"content": text}, "finish_reason": None, "logprobs": None}] if text else []
    if reason:
        out.append({"index": i, "delta": {}, "finish_reason": reason, "logprobs": None})
    return out


def _text_deltas(i: int, text: str, reason: str | None) -> list[dict]:
    return [{"index": i, "text": text, "finish_reason": reason, "logprobs": None}] if text or reason else []
