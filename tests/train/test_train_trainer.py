"""PLWTrainer arithmetic: gradient accumulation, packing, PLW 0 / 1 against plain HF causal-LM training."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from plw.train.collator import PLWCollator
from plw.train.diagnostics import snapshot
from plw.train.run import _ListDataset
from plw.train.tiny import tiny_llama
from plw.train.trainer import PLWTrainer, completion_nll

from train_helpers import synthetic_rows, tiny_tokenizer


class GradCapture(TrainerCallback):
    """Copies of the gradients just before each optimizer step."""

    def __init__(self):
        self.grads = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})


def _args(tmp_path, per_device, accum, steps=2, optim="sgd", lr=0.05):
    return TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=per_device, gradient_accumulation_steps=accum,
        learning_rate=lr, max_steps=steps, optim=optim, remove_unused_columns=False, report_to="none",
        use_cpu=True, disable_tqdm=True, train_sampling_strategy="sequential", save_strategy="no",
        logging_steps=1, max_grad_norm=0, warmup_steps=0, lr_scheduler_type="constant")


def _plw_run(tmp_path, rows, tok, per_device, accum, *, packing=False, steps=2, **kw):
    model = tiny_llama(tok, seed=0, hidden_size=32)
    cap = GradCapture()
    init = snapshot(model)
    trainer = PLWTrainer(model=model, args=_args(tmp_path, per_device, accum, steps),
                         train_dataset=_ListDataset(rows), data_collator=PLWCollator(tok.pad_token_id, packing=packing),
                         callbacks=[cap], initial_params=init, **kw)
    trainer.train()
    return model, cap.grads, [h["loss"] for h in trainer.state.log_history if "loss" in h], trainer


def _assert_same(a, b, rtol=1e-5, atol=1e-7):
    for (name, x), (_, y) in zip(a.items(), b.items()):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=name)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize("normalizer", ["weight_sum", "nonzero_tokens", "completion_tokens", 100.0])
def test_grad_accumulation_4x2_equals_1x8(tmp_path, tok, normalizer):
    rows = synthetic_rows(tok, 16, plw=0.2)
    m1, g1, l1, _ = _plw_run(tmp_path / "a", rows, tok, 8, 1, normalizer=normalizer)
    m2, g2, l2, _ = _plw_run(tmp_path / "b", rows, tok, 2, 4, normalizer=normalizer)
    for a, b in zip(g1, g2):
        _assert_same(a, b)
    assert l1 == pytest.approx(l2, rel=1e-6)
    _assert_same(dict(m1.named_parameters()), dict(m2.named_parameters()))


def test_grad_accumulation_exact_against_full_batch_formula(tmp_path, tok):
    """The step's gradient is Σ w·ℓ / Σ w over all 8 examples: compare with one fp32 backward."""
    from plw.loss import weighted_cross_entropy

    rows = synthetic_rows(tok, 8, plw=0.2, seed=5)
    _, grads, _, _ = _plw_run(tmp_path, rows, tok, 2, 4, steps=1)
    model = tiny_llama(tok, seed=0, hidden_size=32)
    batch = PLWCollator(tok.pad_token_id)(rows)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    weighted_cross_entropy(logits, batch["labels"], batch["weights"]).loss.backward()
    _assert_same(grads[0], {n: p.grad for n, p in model.named_parameters()}, rtol=1e-4, atol=1e-6)


def test_packing_equals_padding_training(tmp_path, tok):
    rows = synthetic_rows(tok, 16, plw=0.5, seed=2)
    m1, g1, l1, _ = _plw_run(tmp_path / "a", rows, tok, 4, 2)
    m2, g2, l2, _ = _plw_run(tmp_path / "b", rows, tok, 4, 2, packing=True)
    for a, b in zip(g1, g2):
        _assert_same(a, b)
    assert l1 == pytest.approx(l2, rel=1e-6)


def test_minkowski_penalty_once_per_step_under_accumulation(tmp_path, tok):
    rows = synthetic_rows(tok, 16, plw=0.1, seed=4)
    kw = dict(minkowski_coef=0.5, minkowski_p=1.0)
    m1, g1, l1, _ = _plw_run(tmp_path / "a", rows, tok, 8, 1, steps=3, **kw)
    m2, g2, l2, _ = _plw_run(tmp_path / "b", rows, tok, 2, 4, steps=3, **kw)
    m0, g0, l0, _ = _plw_run(tmp_path / "c", rows, tok, 8, 1, steps=3)
    for a, b in zip(g1, g2):
        _assert_same(a, b)
    # From step 2 on the weights moved, so the penalty's gradient (coef · sign(Δ)/numel, mean over tensors) shows.
    name = "model.layers.0.mlp.up_proj.weight"
    diff = g1[1][name] - g0[1][name]
    assert diff.abs().max() > 0
    assert l1[1] > l0[1]


def _hf_rows(rows, mask_prompt):
    out = []
    for r in rows:
        labels = [(-100 if (mask_prompt and not c) else t) for t, c in zip(r["input_ids"], r["completion_mask"])]
        out.append({"input_ids": r["input_ids"], "attention_mask": r["attention_mask"], "labels": labels})
    return out


def _hf_collate(pad_id):
    def collate(rows):
        n = max(len(r["input_ids"]) for r in rows)
        def pad(key, v):
            return torch.tensor([r[key] + [v] * (n - len(r[key])) for r in rows])
        return {"input_ids": pad("input_ids", pad_id), "attention_mask": pad("attention_mask", 0),
                "labels": pad("labels", -100)}
    return collate


@pytest.mark.parametrize("plw", [0.0, 1.0])
def test_plw_0_and_1_match_plain_hf_training(tmp_path, tok, plw):
    """PLW 0 == Alpaca-style -100 prompt labels, PLW 1 == unmasked, with HF's own causal-LM loss (Adam)."""
    from plw.data.encode import tokenize_dataset
    from plw.data.records import load_records

    records = load_records("builtin:short?n=24")
    rows, _ = tokenize_dataset(records, tok, template="alpaca", prompt_loss_weight=plw, max_length=128)
    m1, _, l1, _ = _plw_run(tmp_path / "plw", rows, tok, 4, 2, steps=3)
    model = tiny_llama(tok, seed=0, hidden_size=32)
    cap = GradCapture()
    args = _args(tmp_path / "hf", 4, 2, steps=3)
    hf = Trainer(model=model, args=args, train_dataset=_ListDataset(_hf_rows(rows, mask_prompt=plw == 0.0)),
                 data_collator=_hf_collate(tok.pad_token_id), callbacks=[cap])
    hf.train()
    l2 = [h["loss"] for h in hf.state.log_history if "loss" in h]
    assert l1 == pytest.approx(l2, rel=1e-5)
    _assert_same(dict(m1.named_parameters()), dict(model.named_parameters()), rtol=1e-4, atol=1e-6)


def test_logs_prompt_and_completion_nll_and_val_nll_is_plw_free(tmp_path, tok):
    from plw.data.encode import tokenize_dataset
    from plw.data.records import load_records

    records = load_records("builtin:short?n=16")
    _, _, _, trainer = _plw_run(tmp_path, synthetic_rows(tok, 8, plw=0.0), tok, 4, 1, steps=1,
                                track_prompt_nll=True)
    log = trainer.state.log_history[0]
    assert log["prompt_nll"] > 0 and log["completion_nll"] > 0  # prompt NLL logged even at PLW 0
    model = tiny_llama(tok, seed=3, hidden_size=32)
    vals = []
    for plw in (0.0, 0.3, 1.0):
        rows, _ = tokenize_dataset(records, tok, template="alpaca", prompt_loss_weight=plw, max_length=128)
        vals.append(completion_nll(model, rows, PLWCollator(tok.pad_token_id), batch_size=5))
    assert vals[0] == pytest.approx(vals[1], rel=1e-6) and vals[0] == pytest.approx(vals[2], rel=1e-6)
    # independent: mean NLL over completion targets from full logits
    batch = PLWCollator(tok.pad_token_id)(rows)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double(), -1)
    tgt = batch["input_ids"][:, 1:]
    nll = -logp[:, :-1].gather(-1, tgt[..., None])[..., 0]
    mask = batch["completion_mask"][:, 1:]
    assert vals[0] == pytest.approx(float(nll[mask].mean()), rel=1e-5)


def test_label_smoothing_reaches_the_loss(tmp_path, tok):
    from plw.loss import weighted_cross_entropy

    rows = synthetic_rows(tok, 4, plw=0.4, seed=9)
    _, _, l_ls, _ = _plw_run(tmp_path, rows, tok, 4, 1, steps=1, label_smoothing=0.2)
    model = tiny_llama(tok, seed=0, hidden_size=32)
    batch = PLWCollator(tok.pad_token_id)(rows)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ref = weighted_cross_entropy(logits, batch["labels"], batch["weights"], label_smoothing=0.2)
    assert l_ls[0] == pytest.approx(float(ref.loss), rel=1e-5)


def test_trl_sfttrainer_with_the_plw_mixin(tmp_path, tok):
    """`PLWLossMixin` on TRL's SFTTrainer gives the same updates as PLWTrainer; bf16 autocast runs too."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from plw.train.trainer import PLWLossMixin

    class PLWSFTTrainer(PLWLossMixin, SFTTrainer):
        pass

    rows = synthetic_rows(tok, 16, plw=0.2, seed=6)
    m1, _, l1, _ = _plw_run(tmp_path / "plw", rows, tok, 4, 2)
    losses = {}
    for bf16 in (False, True):
        model = tiny_llama(tok, seed=0, hidden_size=32)
        args = SFTConfig(output_dir=str(tmp_path / f"trl{bf16}"), per_device_train_batch_size=4,
                         gradient_accumulation_steps=2, max_steps=2, remove_unused_columns=False, report_to="none",
                         use_cpu=True, save_strategy="no", logging_steps=1, max_length=None, learning_rate=0.05,
                         optim="sgd", max_grad_norm=0, warmup_steps=0, lr_scheduler_type="constant",
                         train_sampling_strategy="sequential", bf16=bf16, disable_tqdm=True)
        trainer = PLWSFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                                processing_class=tok, data_collator=PLWCollator(tok.pad_token_id))
        trainer.train()
        losses[bf16] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        if not bf16:
            _assert_same(dict(m1.named_parameters()), dict(model.named_parameters()))
    assert losses[False] == pytest.approx(l1, rel=1e-6)
    assert losses[True] == pytest.approx(l1, rel=3e-2)  # bf16 autocast: same run within bf16 precision
