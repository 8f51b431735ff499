"""Evaluation reports Σ w·ℓ / Σ w over the whole set (evaluate, predict, evaluation_loop), and the
trainer's traps are closed: DataParallel, tensor/context/sequence parallelism, remove_unused_columns."""

from __future__ import annotations

import pytest
import torch

from plw.errors import PLWError
from plw.train import PLWCollator, PLWTrainer
from plw.train.tiny import tiny_llama
from plw.train.trainer import PLWConfig, check_parallelism
from train_helpers import synthetic_rows, tiny_tokenizer


def _reference(model, rows, tok, completion_loss_weight=1.0):
    """fp64 Σ w·ℓ / Σ w and completion NLL over all rows, from materialised logits."""
    batch = PLWCollator(tok.pad_token_id)(rows)
    with torch.no_grad():
        logits = model.double()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    model.float()
    y = batch["labels"][:, 1:]
    w = batch["weights"][:, 1:].double()
    comp = batch["completion_mask"][:, 1:]
    w = torch.where(comp, w * completion_loss_weight, w)
    valid = y != -100
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), y.clamp_min(0), reduction="none")
    loss = float((w * nll * valid).sum() / (w * valid).sum())
    return loss, float(nll[valid & comp].mean())


@pytest.mark.parametrize("clw", [1.0, 0.5])
def test_evaluate_and_predict_report_weighted_mean(tmp_path, clw):
    tok = tiny_tokenizer()
    rows = synthetic_rows(tok, 8, plw=0.1, seed=3)
    model = tiny_llama(tok, seed=0, hidden_size=32)
    args = PLWConfig(output_dir=str(tmp_path), per_device_eval_batch_size=3, report_to="none", use_cpu=True,
                     completion_loss_weight=clw)
    trainer = PLWTrainer(model=model, args=args, data_collator=PLWCollator(tok.pad_token_id), eval_dataset=rows)
    ref_loss, ref_nll = _reference(model, rows, tok, clw)
    got = trainer.predict(rows).metrics
    assert got["test_loss"] == pytest.approx(ref_loss, rel=1e-6)
    assert got["test_completion_nll"] == pytest.approx(ref_nll, rel=1e-6)
    ev = trainer.evaluate()
    assert ev["eval_loss"] == pytest.approx(ref_loss, rel=1e-6)
    assert ev["eval_completion_nll"] == pytest.approx(ref_nll, rel=1e-6)
    # the trap: a token-count normaliser would give Σw·ℓ / #tokens, a different number
    n_tokens = sum(sum(1 for lab in r["labels"][1:] if lab != -100) for r in rows)
    w_sum = sum(sum(r["weights"][1:]) for r in rows)
    assert abs(ref_loss * w_sum / n_tokens - ref_loss) > 0.1


def test_traps_are_refused(tmp_path, monkeypatch):
    from transformers import TrainingArguments

    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=0, hidden_size=32)
    with pytest.raises(PLWError, match="remove_unused_columns"):
        PLWTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True),
                   data_collator=PLWCollator(tok.pad_token_id))
    assert PLWConfig(output_dir=str(tmp_path)).remove_unused_columns is False
    with pytest.raises(ValueError, match="normalizer"):
        PLWConfig(output_dir=str(tmp_path), normalizer="-2")

    class Fake:
        def get_tp_size(self):
            return 2

        def get_cp_size(self):
            return 1

    with pytest.raises(PLWError, match="tp_size=2"):
        check_parallelism(Fake())
    monkeypatch.setattr(TrainingArguments, "n_gpu", property(lambda self: 2))
    with pytest.raises(PLWError, match="DataParallel"):
        PLWTrainer(model=model, args=PLWConfig(output_dir=str(tmp_path), use_cpu=True),
                   data_collator=PLWCollator(tok.pad_token_id))
