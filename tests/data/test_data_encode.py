"""PLW token weights: properties against independent offset computations, chat roles, truncation."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plw import PAPER_PLW_LEVELS
from plw.data import Record, encode_record, pad_batch, tokenize_dataset
from plw.data.encode import DROP_COMPLETION_TOO_LONG, DROP_NO_COMPLETION, DROP_ZERO_WEIGHTS

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Letters, spaces (runs of them), newlines, digits, punctuation, accents, CJK, emoji, and the
# special-token strings, which must stay plain text in data.
TEXT = st.lists(
    st.one_of(st.sampled_from(list("ab cXY  \n\t09.,:#!?éüß日本😀") + ["</s>", "<s>", "<pad>", "  "]),
              st.characters(codec="utf-8", exclude_categories=("Cs",))),
    max_size=30,
).map("".join)
PLW = st.one_of(st.sampled_from(PAPER_PLW_LEVELS), st.floats(0.0, 1.0))


def _reference_fast(tok, prompt: str, completion: str):
    """(ids, is_completion) from the tokenizer's own offsets; the post-processor's specials are prompt."""
    text, boundary = prompt + completion, len(prompt)
    enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True, split_special_tokens=True)
    flags = []
    for (s, e), special in zip(enc["offset_mapping"], enc["special_tokens_mask"]):
        flags.append(False if special else (e > boundary if e > s else s >= boundary))
    return list(enc["input_ids"]) + [tok.eos_token_id], flags + [True]


def _reference_sp(tok, prompt: str, completion: str):
    """(ids, is_completion) straight from sentencepiece, in byte offsets."""
    boundary = len(prompt.encode("utf-8"))
    proto = tok.sp_model.encode(prompt + completion, return_type="proto")
    ids = [tok.bos_token_id] + [p.id for p in proto.pieces] + [tok.eos_token_id]
    flags = [False] + [(p.end > boundary if p.end > p.begin else p.begin >= boundary) for p in proto.pieces]
    return ids, flags + [True]


def _check_weights(tok, reference, prompt, completion, plw):
    rec = Record(prompt=prompt, completion=completion)
    ex = encode_record(rec, tok, template="raw", prompt_loss_weight=plw, max_length=10 ** 6)
    ids, is_comp = reference(tok, prompt, completion)
    assert ex["input_ids"] == ids  # the full text is tokenised once, EOS appended
    assert ex["labels"] == ids and ex["attention_mask"] == [1] * len(ids)
    assert ex["completion_mask"] == [int(c) for c in is_comp]
    for w, c in zip(ex["weights"], is_comp):
        assert w == (1.0 if c else plw)
    n_c = sum(is_comp)
    n_p = len(ids) - n_c
    assert math.isclose(math.fsum(ex["weights"]), n_c + plw * n_p, rel_tol=0, abs_tol=1e-9)
    assert ex["weights"][-1] == 1.0 and ex["input_ids"][-1] == tok.eos_token_id
    return ex


@SETTINGS
@given(prompt=TEXT, completion=TEXT.filter(bool), plw=PLW)
def test_weights_bpe(bpe_tokenizer, prompt, completion, plw):
    _check_weights(bpe_tokenizer, _reference_fast, prompt, completion, plw)


@SETTINGS
@given(prompt=TEXT, completion=TEXT.filter(bool), plw=PLW)
def test_weights_sentencepiece_unigram(unigram_tokenizer, prompt, completion, plw):
    _check_weights(unigram_tokenizer, _reference_sp, prompt, completion, plw)


@SETTINGS
@given(prompt=TEXT, completion=TEXT.filter(bool), plw=PLW)
def test_weights_llama2(llama2_tokenizer, prompt, completion, plw):
    _check_weights(llama2_tokenizer, _reference_sp, prompt, completion, plw)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(TEXT, TEXT.filter(bool)), min_size=1, max_size=5), plw=PLW,
       side=st.sampled_from(["right", "left"]), multiple=st.sampled_from([None, 8]))
def test_no_weight_on_padding(bpe_tokenizer, pairs, plw, side, multiple):
    tok = bpe_tokenizer
    examples, report = tokenize_dataset([Record(prompt=p, completion=c) for p, c in pairs], tok,
                                        template="raw", prompt_loss_weight=plw, max_length=10 ** 6)
    assert report.n_examples == len(pairs) and not report.dropped
    batch = pad_batch(examples, pad_token_id=tok.pad_token_id, padding_side=side, pad_to_multiple_of=multiple)
    pad = batch["attention_mask"] == 0
    assert (batch["weights"][pad] == 0).all() and (batch["labels"][pad] == -100).all()
    assert (batch["completion_mask"][pad] == 0).all() and (batch["input_ids"][pad] == tok.pad_token_id).all()
    assert int((~pad).sum()) == sum(len(e["input_ids"]) for e in examples)
    # After the loss's shift, the target at t+1 is predicted from t: never from a pad position.
    shifted_w, shifted_l = batch["weights"][:, 1:], batch["labels"][:, 1:]
    assert (shifted_w[pad[:, :-1]] == 0).all() and (shifted_l[pad[:, :-1]] == -100).all()
    # Every real target (position >= 1 of its example) keeps its weight.
    total = math.fsum(w for e in examples for w in e["weights"][1:])
    assert math.isclose(float(batch["weights"][:, 1:].double().sum()), total, rel_tol=1e-6)
    if multiple:
        assert batch["input_ids"].shape[1] % multiple == 0


def test_straddling_token_is_completion(bpe_tokenizer):
    """Boundary rule: a token holding any completion character weighs 1."""
    tok = bpe_tokenizer
    prompt, completion = "The answer is 1", "2345"
    ex = encode_record(Record(prompt=prompt, completion=completion), tok, template="raw", prompt_loss_weight=0.0)
    ids, offsets = tok(prompt + completion, return_offsets_mapping=True)["input_ids"], \
        tok(prompt + completion, return_offsets_mapping=True)["offset_mapping"]
    straddle = [i for i, (s, e) in enumerate(offsets) if s < len(prompt) < e]
    assert straddle, "test text should produce a token across the boundary"
    assert all(ex["weights"][i] == 1.0 for i in straddle)


def test_alpaca_template_tokens(bpe_tokenizer):
    """Alpaca: the prompt is the template text (weight PLW), target = output + EOS (weight 1)."""
    tok = bpe_tokenizer
    rec = Record(instruction="Add the numbers.", input="2, 3", output="5")
    ex = encode_record(rec, tok, template="alpaca", prompt_loss_weight=0.25)
    from plw.data.templates import render

    prompt, completion = render(rec, "alpaca", tok)
    assert prompt.endswith("### Response:") and completion == "5"
    n_prompt = len(tok(prompt)["input_ids"])  # BOS + prompt (the prompt ends at a token boundary here)
    assert ex["weights"] == [0.25] * n_prompt + [1.0] * (len(ex["input_ids"]) - n_prompt)
    assert tok.decode(ex["input_ids"][n_prompt:]) == "5</s>"


# ---------------------------------------------------------------------------- chat

CONVO = Record(messages=(
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hi."},
    {"role": "assistant", "content": "hi"},
    {"role": "user", "content": "Count to three."},
    {"role": "tool", "content": "counter ready"},
    {"role": "assistant", "content": "one two three"},
))


def _decoded_by_weight(tok, ex):
    out: dict = {}
    for i, w in zip(ex["input_ids"], ex["weights"]):
        out.setdefault(w, []).append(i)
    return {w: tok.decode(ids) for w, ids in out.items()}


def test_chat_default_roles(bpe_tokenizer):
    tok = bpe_tokenizer
    ex = encode_record(CONVO, tok, template="chat", prompt_loss_weight=0.1)
    by_w = _decoded_by_weight(tok, ex)
    assert set(by_w) == {0.1, 1.0}
    # completion = both assistant contents and their EOS (+ the template's newline after EOS)
    assert by_w[1.0].replace("\n", "") == "hi</s>one two three</s>"
    for text in ("You are terse.", "Say hi.", "Count to three.", "counter ready", "<|assistant|>"):
        assert text in by_w[0.1]
    assert sum(ex["completion_mask"]) == sum(1 for w in ex["weights"] if w == 1.0)
    assert ex["input_ids"][0] == tok.bos_token_id and ex["weights"][0] == 0.1


def test_chat_last_turn_only_and_role_weights(bpe_tokenizer):
    tok = bpe_tokenizer
    ex = encode_record(CONVO, tok, template="chat", prompt_loss_weight=0.1, last_turn_only=True,
                       role_weights={"system": 0.0, "tool": 0.5})
    by_w = _decoded_by_weight(tok, ex)
    assert by_w[1.0].replace("\n", "") == "one two three</s>"
    assert "hi</s>" in by_w[0.1]  # earlier assistant turn is prompt
    assert "You are terse." in by_w[0.0] and "counter ready" in by_w[0.5]
    comp = [i for i, c in zip(ex["input_ids"], ex["completion_mask"]) if c]
    assert tok.decode(comp).replace("\n", "") == "one two three</s>"


def test_chat_llama2_template_format(unigram_tokenizer):
    """SentencePiece tokenizers get LLaMA-2-chat's format; the system prompt folds into the first turn."""
    tok = unigram_tokenizer
    from plw.data.templates import chat_spans

    text, spans = chat_spans(CONVO.__class__(messages=CONVO.messages[:3]), tok)
    assert text == "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nSay hi. [/INST] hi </s>"
    ex = encode_record(Record(messages=CONVO.messages[:3]), tok, template="chat", prompt_loss_weight=0.0)
    comp = [i for i, c in zip(ex["input_ids"], ex["completion_mask"]) if c]
    assert comp[-1] == tok.eos_token_id and tok.sp_model.decode(comp[:-1]).strip() == "hi"
    from plw.errors import PLWError

    with pytest.raises(PLWError, match="system"):
        encode_record(Record(messages=CONVO.messages[:3]), tok, template="chat", prompt_loss_weight=0.0,
                      role_weights={"system": 0.5})


def test_alpaca_record_as_chat(bpe_tokenizer):
    tok = bpe_tokenizer
    rec = Record(instruction="Reverse the word.", input="cat", output="tac")
    ex = encode_record(rec, tok, template="chat", prompt_loss_weight=0.0)
    comp = [i for i, c in zip(ex["input_ids"], ex["completion_mask"]) if c]
    assert tok.decode(comp).strip() == "tac</s>"
    assert "Reverse the word.\n\ncat" in tok.decode(ex["input_ids"])


# ---------------------------------------------------------------------------- truncation

def test_truncation_keeps_completion(bpe_tokenizer):
    tok = bpe_tokenizer
    rec = Record(prompt=" ".join(f"word{i}" for i in range(60)) + "\n", completion="the end")
    full = encode_record(rec, tok, template="raw", prompt_loss_weight=0.5, max_length=10 ** 6)
    n_comp = sum(full["completion_mask"])
    ex = encode_record(rec, tok, template="raw", prompt_loss_weight=0.5, max_length=20)
    assert len(ex["input_ids"]) == 20
    assert ex["input_ids"][0] == tok.bos_token_id  # BOS kept, prompt cut from the left
    assert ex["input_ids"][1:] == full["input_ids"][-19:]
    assert sum(ex["completion_mask"]) == n_comp and ex["input_ids"][-1] == tok.eos_token_id
    examples, report = tokenize_dataset([rec, rec], tok, template="raw", prompt_loss_weight=0.5, max_length=20)
    assert report.n_prompt_truncated == 2 and report.n_examples == 2


def test_long_completion_dropped_or_truncated(bpe_tokenizer):
    tok = bpe_tokenizer
    long = Record(prompt="Write:", completion=" ".join(["lots of words"] * 30))
    short = Record(prompt="Write:", completion="ok")
    assert encode_record(long, tok, template="raw", prompt_loss_weight=0.0, max_length=16) is None
    examples, report = tokenize_dataset([long, short, long], tok, template="raw", prompt_loss_weight=0.0, max_length=16)
    assert report.n_examples == 1 and report.dropped == {DROP_COMPLETION_TOO_LONG: 2}
    assert "dropped 2" in report.summary()
    ex = encode_record(long, tok, template="raw", prompt_loss_weight=0.0, max_length=16, on_long_completion="truncate")
    assert len(ex["input_ids"]) == 16 and ex["input_ids"][-1] != tok.eos_token_id
    _, report = tokenize_dataset([long], tok, template="raw", prompt_loss_weight=0.0, max_length=16, on_long_completion="truncate")
    assert report.n_completion_truncated == 1
    # a prompt longer than max_length under right truncation leaves no completion: dropped
    big_prompt = Record(prompt=" ".join(["p"] * 40), completion=" ".join(["c"] * 40))
    _, report = tokenize_dataset([big_prompt], tok, template="raw", prompt_loss_weight=0.0, max_length=10,
                                 on_long_completion="truncate")
    assert report.dropped == {DROP_NO_COMPLETION: 1}


def test_all_zero_weights_dropped(bpe_tokenizer):
    convo = Record(messages=({"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}))
    _, report = tokenize_dataset([convo], bpe_tokenizer, template="chat", prompt_loss_weight=0.0,
                                 role_weights={"assistant": 0.0})
    assert report.dropped == {DROP_ZERO_WEIGHTS: 1} and report.n_examples == 0


def test_tokenize_dataset_matches_encode_record(unigram_tokenizer, bpe_tokenizer):
    from plw.data.synthetic import generate

    recs = generate(40, seed=5)
    for tok in (unigram_tokenizer, bpe_tokenizer):
        examples, report = tokenize_dataset(recs, tok, template="alpaca", prompt_loss_weight=0.1, max_length=64)
        single = [encode_record(r, tok, template="alpaca", prompt_loss_weight=0.1, max_length=64) for r in recs]
        assert examples == [e for e in single if e is not None]
        assert report.n_tokens == sum(len(e["input_ids"]) for e in examples)
        assert report.n_completion_tokens == sum(sum(e["completion_mask"]) for e in examples)


@pytest.mark.parametrize("kwargs, field", [({"prompt_loss_weight": 1.5}, "prompt_loss_weight"), ({"prompt_loss_weight": float("nan")}, "prompt_loss_weight"),
                                           ({"prompt_loss_weight": 0.1, "max_length": 1}, "max_length"),
                                           ({"prompt_loss_weight": 0.1, "role_weights": {"bot": 1.0}}, "role_weights"),
                                           ({"prompt_loss_weight": 0.1, "template": "vicuna"}, "template")])
def test_bad_settings(bpe_tokenizer, kwargs, field):
    from plw.errors import PLWError

    kwargs.setdefault("template", "raw")
    with pytest.raises(PLWError) as err:
        encode_record(Record(prompt="a", completion="b"), bpe_tokenizer, **kwargs)
    assert err.value.field == field


def test_trimmed_offsets_whitespace_before_boundary():
    """Fast tokenizers with trim_offsets give whitespace tokens zero width at their end; they stay prompt."""
    from tokenizers import processors

    from plw.data.tokenizer import builtin_tokenizer, encode_with_offsets

    tok = builtin_tokenizer()
    tok.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    prompt, completion = "Answer:\n\n   ", "42 is  it"
    ids, offsets = encode_with_offsets(tok, [prompt + completion])[0]
    assert all(e > s for s, e in offsets)
    ex = encode_record(Record(prompt=prompt, completion=completion), tok, template="raw", prompt_loss_weight=0.0,
                       max_length=10 ** 6)
    # joint tokens: ... 'Ġ' 'Ġ' | 'Ġ42' (straddles: completion) 'Ġis' 'Ġ' 'Ġit' </s>
    first = ex["completion_mask"].index(1)
    assert all(ex["completion_mask"][first:])
    assert tok.convert_ids_to_tokens(ex["input_ids"][first - 2:first + 1]) == ["Ġ", "Ġ", "Ġ42"]
    assert tok.decode(ex["input_ids"][first:]) == " 42 is  it</s>"


def test_old_plw_keyword_still_works_with_a_deprecation_warning(bpe_tokenizer):
    rec = Record(instruction="Add 2 and 3.", output="5")
    new = encode_record(rec, bpe_tokenizer, template="alpaca", prompt_loss_weight=0.25)
    with pytest.warns(FutureWarning, match="use prompt_loss_weight="):
        old = encode_record(rec, bpe_tokenizer, template="alpaca", plw=0.25)
    assert old == new
    with pytest.raises(TypeError, match="prompt_loss_weight"):
        tokenize_dataset([rec], bpe_tokenizer)
