"""Inference for `plw serve`: model loading, continuous batching, sampling (see `engine`)."""

from plw.serve.inference.batching import Batcher, ContextTooLong, GenerationRequest, RequestTimeout
from plw.serve.inference.engine import (Generation, InferenceEngine, chat_prompt_ids, generate, stream,
                                        text_prompt_ids)
from plw.serve.inference.loading import BUILTIN_TINY, LoadedModel, load_for_inference
from plw.serve.inference.sampling import SamplingParams

__all__ = ["Batcher", "ContextTooLong", "GenerationRequest", "RequestTimeout", "Generation",
           "InferenceEngine", "chat_prompt_ids", "generate", "stream", "text_prompt_ids", "BUILTIN_TINY",
           "LoadedModel", "load_for_inference", "SamplingParams"]
