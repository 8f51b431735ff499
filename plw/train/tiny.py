"""The built-in default model: a tiny random-init Llama sized to a tokenizer.

Used by the quickstart, the tests and the CPU benchmarks, so that nothing needs the hub.
"""

from __future__ import annotations


def tiny_llama_config(vocab_size: int, *, hidden_size: int = 64, num_layers: int = 2,
                      num_heads: int = 4, intermediate_size: int | None = None,
                      max_position_embeddings: int = 1024, tie_word_embeddings: bool = False,
                      bos_token_id: int = 1, eos_token_id: int = 2, pad_token_id: int = 0):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        attention_dropout=0.0,
    )


def tiny_llama(tokenizer, *, seed: int = 0, **config_kwargs):
    """A random-init `LlamaForCausalLM` whose vocabulary matches `tokenizer` (fp32)."""
    import torch
    from transformers import LlamaForCausalLM

    config = tiny_llama_config(
        len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        **config_kwargs,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def tiny_for_config(config, tokenizer):
    """The random init a `builtin:tiny` run of `config` (a `TrainConfig`) starts from: the same seed
    and shape rebuild it exactly, which is how a LoRA adapter on it is loaded again."""
    return tiny_llama(tokenizer, seed=config.seed, hidden_size=config.tiny.hidden_size,
                      num_layers=config.tiny.num_layers, num_heads=config.tiny.num_heads,
                      max_position_embeddings=max(1024, config.max_length))
