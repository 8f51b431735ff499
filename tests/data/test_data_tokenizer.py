"""plw's exact SentencePiece tokenizer, character offsets, and the built-in BPE."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plw.data.tokenizer import (builtin_tokenizer, count_tokens, encode_with_offsets, is_sentencepiece_tokenizer,
                                load_tokenizer, prefix_special_ids)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TEXT = st.lists(st.one_of(st.sampled_from(list("the cat  sat\n\tÉé日😀.,") + ["  ", "</s>", "<s>", "[INST]"]),
                          st.characters(codec="utf-8", exclude_categories=("Cs",))), max_size=30).map("".join)


def _check_exact(tok, text):
    sp = tok.sp_model
    assert tok(text, split_special_tokens=True)["input_ids"] == [tok.bos_token_id] + sp.encode(text)
    ids, offsets = encode_with_offsets(tok, [text])[0]
    assert ids == sp.encode(text)
    # offsets: characters -> the same bytes sentencepiece reports
    proto = sp.encode(text, return_type="proto")
    for (s, e), piece in zip(offsets, proto.pieces):
        assert len(text[:s].encode()) == piece.begin and len(text[:e].encode()) == piece.end
    assert count_tokens(tok, [text]) == [len(ids)]


@SETTINGS
@given(text=TEXT)
def test_sentencepiece_exact_unigram(unigram_tokenizer, text):
    _check_exact(unigram_tokenizer, text)


@SETTINGS
@given(text=TEXT)
def test_sentencepiece_exact_llama2(llama2_tokenizer, text):
    _check_exact(llama2_tokenizer, text)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_offsets_with_special_tokens_match_tokenizer(unigram_tokenizer, bpe_tokenizer, text):
    """Parsing special-token text (chat templates) agrees with tok(text, add_special_tokens=False)."""
    for tok in (unigram_tokenizer, bpe_tokenizer):
        ids, offsets = encode_with_offsets(tok, [text], split_special_tokens=False)[0]
        assert ids == tok(text, add_special_tokens=False)["input_ids"]
        assert all(0 <= s <= e <= len(text) for s, e in offsets)


def test_llama2_known_ids(llama2_tokenizer):
    tok = llama2_tokenizer
    assert is_sentencepiece_tokenizer(tok) and len(tok) == 32000
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    # two spaces: the case transformers' converted tokenizer gets wrong
    assert tok("the  cat")["input_ids"] == [1, 278, 29871, 6635]
    assert tok.decode(tok("Hello  world")["input_ids"], skip_special_tokens=True) == "Hello  world"
    assert prefix_special_ids(tok) == [1]


def test_sentencepiece_save_and_reload(unigram_tokenizer, tmp_path):
    tok = unigram_tokenizer
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert is_sentencepiece_tokenizer(again)
    text = "Count to three, naïvely."
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.chat_template == tok.chat_template
    batch = again([text, "hi"], padding=True)
    assert len(batch["input_ids"][0]) == len(batch["input_ids"][1])


def test_builtin_tokenizer_deterministic(bpe_tokenizer):
    from plw.data.tokenizer import train_tokenizer  # noqa: F401  (the trainer behind it)

    other = builtin_tokenizer()
    assert other is not bpe_tokenizer  # callers get their own copy
    assert other.get_vocab() == bpe_tokenizer.get_vocab()
    assert load_tokenizer("builtin").get_vocab() == bpe_tokenizer.get_vocab()
    assert prefix_special_ids(bpe_tokenizer) == [bpe_tokenizer.bos_token_id]
    assert bpe_tokenizer.pad_token_id is not None and bpe_tokenizer.eos_token_id is not None


def test_load_tokenizer_errors(tmp_path):
    import pytest

    from plw.errors import PLWError

    with pytest.raises(PLWError, match="no such file"):
        load_tokenizer(tmp_path / "missing.model")
    with pytest.raises(PLWError, match="cannot load tokenizer"):
        load_tokenizer(tmp_path)


def test_missing_local_tokenizer_path(tmp_path, monkeypatch):
    """A name that looks like a local path is not sent to the hub (whose error is about repo ids)."""
    import pytest

    from plw.errors import PLWError

    monkeypatch.chdir(tmp_path)
    for name in [str(tmp_path / "no" / "tok"), "./tok", "../tok", "~/surely-not-here-plw-tok", "a/b/c", "tok/"]:
        with pytest.raises(PLWError, match="no such file or directory") as info:
            load_tokenizer(name)
        assert info.value.file == name
    from plw.data.tokenizer import looks_like_path

    assert not looks_like_path("meta-llama/Llama-2-7b-hf") and not looks_like_path("gpt2")
