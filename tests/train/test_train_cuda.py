"""Training on a CUDA GPU under bf16 autocast (fp32 master weights), as `plw train` does on a bf16 GPU.

A real-architecture Llama (GQA, head dim 128, SwiGLU, RoPE; 2 layers so it stays small) trains a few
steps through `PLWTrainer` and, where `plw.integrations.trl` exists, through `PLWSFTTrainer`. The step
gradient (2 micro-batches, one normaliser) is compared with plain HF autocast logits + the weighted
loss in fp32: the loss path is the engine, everything else is the same model. Marked `cuda`: skipped
without a GPU; `bench/gpu_check.sh` runs them on one.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytestmark = pytest.mark.cuda

SHAPE = dict(hidden_size=1024, num_attention_heads=8, num_key_value_heads=2, intermediate_size=2816,
             num_hidden_layers=2, vocab_size=32000)
SEQ, PROMPT, PLW = 512, 384, 0.1
DEVICE = "cuda"  # a module constant so that the checks themselves can be tried on CPU autocast


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SHAPE, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(DEVICE)  # fp32 master weights


def _rows(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = SEQ - 16 * i  # unequal lengths: the collator pads, padded targets weigh 0
        ids = torch.randint(4, SHAPE["vocab_size"], (length,), generator=g).tolist()
        comp = [t >= PROMPT for t in range(length)]
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "labels": ids,
                     "weights": [1.0 if c else PLW for c in comp], "completion_mask": comp})
    return rows


def _reference_step_grads(model, batch):
    """Σ w·ℓ / Σ w over the whole step from HF's own autocast logits (fp32 loss), and its gradients."""
    from plw.loss import weighted_cross_entropy

    model = copy.deepcopy(model)
    batch = {k: v.to(DEVICE) for k, v in batch.items()}
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = weighted_cross_entropy(logits.float(), batch["labels"], batch["weights"]).loss
    loss.backward()
    return float(loss.detach()), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def grad_capture():
    """A TrainerCallback keeping copies of the gradients just before each optimizer step (built here so
    that collecting this module, on CPU machines too, does not import transformers)."""
    from transformers import TrainerCallback

    class GradCapture(TrainerCallback):
        def __init__(self):
            self.grads = []

        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            self.grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters()
                               if p.grad is not None})
    return GradCapture()


def _check_run(model, capture, history, ref_loss, ref_grads):
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[0] == pytest.approx(ref_loss, rel=1e-2)
    assert losses[-1] < losses[0]  # the same 4 rows each step: the loss must fall
    first = capture.grads[0]
    assert set(first) == set(ref_grads)
    assert all(g.dtype == torch.float32 for g in first.values())  # fp32 master gradients, never bf16
    flat = torch.cat([first[n].flatten() for n in ref_grads])
    ref = torch.cat([ref_grads[n].flatten() for n in ref_grads])
    assert _rel(flat, ref) < 2e-2, _rel(flat, ref)
    head = model.get_output_embeddings().weight
    assert _rel(first["lm_head.weight"], ref_grads["lm_head.weight"]) < 2e-2
    assert head.dtype == torch.float32


def _common(tmp_path):
    return dict(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                learning_rate=3e-4, max_steps=3, bf16=True, report_to="none", save_strategy="no",
                logging_steps=1, disable_tqdm=True, train_sampling_strategy="sequential",
                lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0,
                dataloader_num_workers=0, use_cpu=DEVICE == "cpu")


def test_plwtrainer_bf16_autocast_steps(tmp_path):
    from transformers import TrainingArguments

    from plw.train.collator import PLWCollator
    from plw.train.trainer import PLWTrainer

    rows = _rows(4)
    model = _model()
    collator = PLWCollator(0)
    ref_loss, ref_grads = _reference_step_grads(model, collator(rows))
    capture = grad_capture()
    args = TrainingArguments(**_common(tmp_path), remove_unused_columns=False)
    trainer = PLWTrainer(model=model, args=args, train_dataset=rows, data_collator=collator,
                         callbacks=[capture])
    trainer.train()
    _check_run(model, capture, trainer.state.log_history, ref_loss, ref_grads)


def test_trl_integration_bf16_autocast_steps(tmp_path):
    """PLWSFTTrainer (plw.integrations.trl) on TRL's tokenised-dataset path: prompt weight 0.1."""
    integration = pytest.importorskip("plw.integrations.trl")
    import datasets

    from plw.data.tokenizer import train_tokenizer
    from plw.train.collator import PLWCollator

    rows = _rows(4)
    model = _model()
    ref_loss, ref_grads = _reference_step_grads(model, PLWCollator(0)(rows))
    tok = train_tokenizer(["a small text for a tokenizer"] * 4, vocab_size=300)
    ds = datasets.Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows],
                                     "completion_mask": [[int(c) for c in r["completion_mask"]] for r in rows]})
    capture = grad_capture()
    args = integration.PLWSFTConfig(**_common(tmp_path), prompt_loss_weight=PLW, packing=False,
                                    max_length=SEQ)
    trainer = integration.PLWSFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                                        callbacks=[capture])
    trainer.train()
    _check_run(model, capture, trainer.state.log_history, ref_loss, ref_grads)
