"""PLWSFTTrainer on TRL's own data pipeline equals TRL's SFTTrainer at PLW 0 and 1, and PLWTrainer between."""

from __future__ import annotations

import pytest
import torch

from trl_helpers import conversational, losses, messages, prompt_completion, run


def _same_params(a, b, rtol=1e-5, atol=1e-7):
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert sorted(pa) == sorted(pb)
    for name in pa:
        torch.testing.assert_close(pa[name], pb[name], rtol=rtol, atol=atol, msg=name)


def _moved(model):
    from plw.train.tiny import tiny_llama
    from train_helpers import tiny_tokenizer

    init = dict(tiny_llama(tiny_tokenizer(), seed=0, hidden_size=32).named_parameters())
    return max(float((p - init[n]).abs().max()) for n, p in model.named_parameters())


@pytest.mark.parametrize("setting", [
    dict(),                                               # TRL's default max_length (1024), padded
    dict(max_length=16),                                  # truncation drops prompt-only examples
    dict(packing=True, max_length=32),                    # bfd packing, padding-free
])
def test_plw0_equals_trl_completion_only(tmp_path, setting):
    rows = prompt_completion(long_prompts=2)
    trl, t1 = run("pc", rows, tmp_path / "trl", trl_completion_only=True, **setting)
    plw, t2 = run("pc", rows, tmp_path / "plw", plw=0.0, **setting)
    assert len(t1.train_dataset) == len(t2.train_dataset)
    assert losses(t2) == pytest.approx(losses(t1), rel=1e-5)
    assert _moved(plw) > 1e-3
    _same_params(trl, plw)


@pytest.mark.parametrize("kind", ["pc", "conversational"])
def test_plw1_equals_trl_full_sequence(tmp_path, kind):
    rows = prompt_completion() if kind == "pc" else conversational()
    trl, t1 = run(kind, rows, tmp_path / "trl", trl_completion_only=False)
    plw, t2 = run(kind, rows, tmp_path / "plw", plw=1.0)
    assert losses(t2) == pytest.approx(losses(t1), rel=1e-5)
    _same_params(trl, plw)


def test_messages_plw0_equals_trl_assistant_only(tmp_path):
    rows = messages()
    trl, _ = run("msgs", rows, tmp_path / "trl", assistant_only_loss=True)
    plw, _ = run("msgs", rows, tmp_path / "plw", plw=0.0)
    _same_params(trl, plw)


def test_fractional_plw_equals_plw_trainer_on_the_same_tokens(tmp_path):
    """PLW 0.3 through TRL's pipeline == PLWTrainer on the tokens and weights it produced."""
    from plw.integrations.trl import decode_roles
    from plw.train import PLWCollator, PLWTrainer
    from plw.train.tiny import tiny_llama
    from plw.train.trainer import PLWConfig
    from train_helpers import tiny_tokenizer
    from trl_helpers import config_kwargs

    rows = prompt_completion()
    plw, t1 = run("pc", rows, tmp_path / "trl", plw=0.3)
    tok = tiny_tokenizer()
    tokens = []
    for ex in t1.train_dataset:
        dec = decode_roles(torch.tensor(ex["labels"]), 0.3)
        tokens.append({"input_ids": ex["input_ids"], "labels": dec["labels"].tolist(),
                       "weights": dec["weights"].tolist(), "completion_mask": dec["completion_mask"].tolist()})
    kw = config_kwargs(tmp_path / "plain")
    kw.pop("dataset_num_proc")
    model = tiny_llama(tok, seed=0, hidden_size=32)
    trainer = PLWTrainer(model=model, args=PLWConfig(**kw), train_dataset=tokens,
                         data_collator=PLWCollator(tok.pad_token_id))
    trainer.train()
    assert losses(trainer) == pytest.approx(losses(t1), rel=1e-6)
    _same_params(model, plw)


def test_weights_follow_truncation_and_packing(tmp_path):
    """Weights are made from TRL's truncated, packed labels: prompt PLW, completion 1, boundaries 0."""
    from plw.integrations.trl import PROMPT_BASE

    rows = prompt_completion(n=12, long_prompts=1)
    for setting in (dict(max_length=16), dict(packing=True, max_length=24),
                    dict(packing=True, packing_strategy="wrapped", max_length=24)):
        _, tr = run("pc", rows, tmp_path, plw=0.25, steps=1, **setting)
        batch = tr.data_collator([tr.train_dataset[i] for i in range(len(tr.train_dataset))])
        w, lab, comp = batch["weights"], batch["labels"], batch["completion_mask"]
        assert w.shape == lab.shape == batch["input_ids"].shape
        assert bool((lab > PROMPT_BASE).all())  # decoded back to token ids
        valid = lab != -100
        assert set(w[valid & comp].unique().tolist()) == {1.0}
        assert set(w[valid & ~comp].unique().tolist()) <= {0.25}
        assert float(w[~valid].abs().sum()) == 0
        if "position_ids" in batch:  # padding-free: no target crosses an example boundary
            assert float(w[batch["position_ids"] == 0].sum()) == 0


def test_quick_start_script_with_the_import_swapped(tmp_path):
    """TRL's quick start, `from plw.integrations.trl import ...` and prompt_loss_weight=0.1, on each
    dataset kind at TRL's default max_length, packing off and on."""
    import datasets

    from plw.integrations.trl import PLWSFTConfig as SFTConfig
    from plw.integrations.trl import PLWSFTTrainer as SFTTrainer
    from plw.train.tiny import tiny_llama
    from train_helpers import tiny_tokenizer

    tok = tiny_tokenizer()
    for rows in (prompt_completion(), conversational(), messages()):
        for packing in (False, True):
            trainer = SFTTrainer(
                model=tiny_llama(tok, hidden_size=32),
                args=SFTConfig(output_dir=str(tmp_path), prompt_loss_weight=0.1, packing=packing, max_steps=2,
                               report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True),
                train_dataset=datasets.Dataset.from_list(rows), processing_class=tok)
            trainer.train()
            assert trainer.args.max_length == 1024  # TRL's default, untouched
            assert trainer.state.global_step == 2


def test_bad_settings_are_refused(tmp_path):
    import datasets
    from trl import SFTConfig

    from plw.errors import PLWError
    from plw.integrations.trl import PLWSFTConfig, PLWSFTTrainer
    from plw.train.tiny import tiny_llama
    from train_helpers import tiny_tokenizer

    with pytest.raises(ValueError, match="prompt_loss_weight must be in"):
        PLWSFTConfig(output_dir=str(tmp_path), prompt_loss_weight=1.5)
    with pytest.raises(ValueError, match="completion_loss_weight"):
        PLWSFTConfig(output_dir=str(tmp_path), completion_loss_weight=-1)
    with pytest.raises(ValueError, match="normalizer must be one of"):
        PLWSFTConfig(output_dir=str(tmp_path), normalizer="tokens")
    tok = tiny_tokenizer()
    ds = datasets.Dataset.from_list(messages(4))
    with pytest.raises(TypeError, match="PLWSFTConfig"):
        PLWSFTTrainer(model=tiny_llama(tok, hidden_size=32), args=SFTConfig(output_dir=str(tmp_path), use_cpu=True),
                      train_dataset=ds, processing_class=tok)
    plain = tiny_tokenizer().__class__.from_pretrained  # a copy whose template has no generation markers
    tok2 = tiny_tokenizer()
    tok2.save_pretrained(tmp_path / "tok")
    tok2 = plain(tmp_path / "tok")
    tok2.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    with pytest.raises(PLWError, match="generation"):
        PLWSFTTrainer(model=tiny_llama(tok2, hidden_size=32), args=PLWSFTConfig(output_dir=str(tmp_path), use_cpu=True),
                      train_dataset=ds, processing_class=tok2)


def test_evaluate_prepares_a_raw_eval_set(tmp_path):
    """`evaluate(raw dataset)` goes through TRL's preparation and reports plw's weighted loss."""
    import datasets

    _, tr = run("pc", prompt_completion(8), tmp_path, plw=0.5, steps=1)
    metrics = tr.evaluate(eval_dataset=datasets.Dataset.from_list(prompt_completion(6, seed=5)))
    assert metrics["eval_loss"] > 0 and metrics["eval_completion_nll"] > 0
    assert metrics["eval_loss"] != metrics["eval_completion_nll"]  # the prompt tokens count at PLW 0.5


def test_a_trl_with_another_prepare_dataset_fails_at_construction(monkeypatch):
    """plw extends TRL's private `_prepare_dataset`: a TRL that changed it is one clear error."""
    from trl import SFTTrainer

    from plw.errors import PLWError
    from plw.integrations.trl import PLWSFTTrainer, check_trl_compatible

    check_trl_compatible()  # the installed TRL is the tested one

    def changed(self, dataset, processing_class, args, packing, formatting_func, dataset_name, extra):
        raise AssertionError("not reached")

    monkeypatch.setattr(SFTTrainer, "_prepare_dataset", changed)
    with pytest.raises(PLWError, match="_prepare_dataset") as err:
        PLWSFTTrainer(model="unused")
    assert err.value.field == "trl"
