"""`PLWTrainer`: `transformers.Trainer` with the PLW loss and one normaliser per optimizer step.

Gradient scaling (checked against transformers 5.x `Trainer._inner_training_loop` /
`training_step`): for each optimizer step the Trainer fetches the step's micro-batches with
`get_batch_samples` and passes one value to every `compute_loss` call as `num_items_in_batch`.
We compute that value as Σ `plw.loss.normalizer_value` over the step's micro-batches, summed over
data-parallel ranks (an all-reduce), call it N. Each micro-batch's loss is then Σ_mb w·ℓ / N, and
since DDP/FSDP/ZeRO average gradients over ranks, we multiply by the world size. We set
`loss_is_scaled_for_ga = True` so `training_step` does not divide by the accumulation steps again
(DeepSpeed is told `scale_wrt_gas=False` by the Trainer). The gradient of one optimizer step is
therefore exactly Σ_all w·ℓ / Σ_all w for the `weight_sum` normaliser, whatever the split into
micro-batches and ranks. A numeric normaliser is the per-step denominator as given.

The Minkowski penalty is added once per optimizer step: 1/k of it on each of the k micro-batches,
not multiplied by the world size (every rank adds it and the gradients are averaged).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from plw.train.forward import LossRequest, attach_plw_loss


class PLWLossMixin:
    """The PLW loss for any `transformers.Trainer` subclass (e.g. TRL's `SFTTrainer`).

    `class PLWSFTTrainer(PLWLossMixin, SFTTrainer): pass` trains TRL's way with the PLW loss, given
    a tokenised dataset with the weight columns and `data_collator=PLWCollator(...)`.
    """

    loss_is_scaled_for_ga = True

    def __init__(self, *args, normalizer: Any = "weight_sum", label_smoothing: float = 0.0,
                 track_prompt_nll: bool = True, loss_backend: str = "auto",
                 loss_strategy: str = "auto",
                 minkowski_coef: float = 0.0, minkowski_p: float = 1.0,
                 initial_params: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.args, "remove_unused_columns", False):
            raise ValueError("PLWTrainer needs TrainingArguments(remove_unused_columns=False) "
                             "so the weight columns reach the loss")
        attach_plw_loss(self.model)
        # Our loss is normalised over the whole optimizer step. Transformers versions that predate
        # `loss_is_scaled_for_ga` decide the same thing from this flag.
        self.model_accepts_loss_kwargs = True
        self.plw_normalizer = normalizer
        self.plw_label_smoothing = label_smoothing
        self.plw_track_prompt_nll = track_prompt_nll
        self.plw_backend = loss_backend
        self.plw_strategy = loss_strategy
        self.minkowski_coef = minkowski_coef
        self.minkowski_p = minkowski_p
        self.initial_params = initial_params
        if minkowski_coef and initial_params is None:
            raise ValueError("minkowski_coef > 0 needs initial_params (see plw.train.diagnostics.snapshot)")
        self._device_initial = None
        # Running sums live on the training device (no host sync per micro-batch); they are read
        # once per optimizer step / log. _nll: prompt NLL sum, n_prompt, completion NLL sum, n_completion.
        dev = self.args.device
        self._nll = torch.zeros(4, dtype=torch.float64, device=dev)
        self._step_loss = torch.zeros((), dtype=torch.float64, device=dev)
        self._tokens = torch.zeros((), dtype=torch.float64, device=dev)
        self.step_losses: list[float] = []

    # ---- one normaliser per optimizer step ---------------------------------------------

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        from plw.loss import normalizer_value

        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        if not batches:
            return batches, None
        if not isinstance(self.plw_normalizer, str):
            return batches, float(self.plw_normalizer)
        total = sum(
            torch.as_tensor(normalizer_value(b["labels"], b["weights"], self.plw_normalizer,
                                             completion_mask=b.get("completion_mask")),
                            dtype=torch.float64).to(device)
            for b in batches)
        if self.accelerator.num_processes > 1:
            total = self.accelerator.reduce(total.to(device), reduction="sum")
        return batches, total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        normalizer = self.plw_normalizer if num_items_in_batch is None else num_items_in_batch
        request = LossRequest(
            inputs["weights"], inputs.get("completion_mask"), normalizer,
            label_smoothing=self.plw_label_smoothing if model.training else 0.0,
            track_masked_nll=self.plw_track_prompt_nll, backend=self.plw_backend,
            strategy=self.plw_strategy)
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                    position_ids=inputs.get("position_ids"), labels=inputs["labels"], loss_request=request)
        loss = out["loss"]
        if model.training:
            # Logged values come from the request: a mixed-precision wrapper may have cast `out`.
            self._accumulate_nll(request.stats())
            mask = inputs.get("attention_mask")
            self._tokens += mask.sum() if mask is not None else inputs["input_ids"].numel()
            scale = 1
            if num_items_in_batch is not None:
                # DP ranks average gradients; the normaliser already covers all ranks.
                scale = self.accelerator.num_processes
                loss = loss * scale
            self._step_loss += request.loss_value.to(self._step_loss) * scale
            if self.minkowski_coef:
                loss = loss + self.minkowski_coef * self._penalty(model) / max(
                    1, getattr(self, "current_gradient_accumulation_steps", 1))
        return (loss, out) if return_outputs else loss

    def _penalty(self, model):
        from plw.train.regularizers import minkowski_penalty

        inner = self.accelerator.unwrap_model(model)
        if self._device_initial is None:
            dev = next(inner.parameters()).device
            self._device_initial = {k: v.to(dev) for k, v in self.initial_params.items()}
        return minkowski_penalty(inner.named_parameters(), self._device_initial, self.minkowski_p)

    # ---- logging: prompt / completion NLL, per-step loss ---------------------------------

    def _accumulate_nll(self, out) -> None:
        self._nll += torch.stack([out["prompt_nll_sum"], out["n_prompt"], out["completion_nll_sum"],
                                  out["n_completion"]]).to(self._nll)

    def pop_step_loss(self) -> float:
        """The data loss of the last optimizer step (mean over ranks of Σ micro-batch losses)."""
        value = self._step_loss.clone()
        self._step_loss.zero_()
        if self.accelerator.num_processes > 1:
            value = self.accelerator.reduce(value, reduction="mean")
        loss = float(value)
        self.step_losses.append(loss)
        return loss

    def train_tokens_total(self) -> int:
        """Non-padding input tokens trained on so far, over all ranks (collective)."""
        value = self._tokens.clone()
        if self.accelerator.num_processes > 1:
            value = self.accelerator.reduce(value, reduction="sum")
        return int(value)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # every rank logs the loss at the same step: the reduce is collective
            totals = self._nll.clone()
            self._nll.zero_()
            if self.accelerator.num_processes > 1:
                totals = self.accelerator.reduce(totals, reduction="sum")
            p, n_p, c, n_c = totals.tolist()
            if n_p and self.plw_track_prompt_nll:
                logs["prompt_nll"] = p / n_p
            if n_c:
                logs["completion_nll"] = c / n_c
        super().log(logs, start_time)

    # ---- validation: completion NLL, independent of PLW ----------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Mean completion-token NLL on the validation split (every rank evaluates all of it)."""
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        metrics = {f"{metric_key_prefix}_completion_nll": completion_nll(
            self.model_wrapped if self.model_wrapped is not None else self.model, dataset,
            self.data_collator, batch_size=self.args.per_device_eval_batch_size,
            device=self.args.device, backend=self.plw_backend)}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class PLWTrainer(PLWLossMixin, Trainer):
    """Trainer whose loss is the PLW-weighted cross-entropy from `plw.loss.linear_cross_entropy`.

    Batches must carry `labels`, `weights` (and optionally `completion_mask`); use
    `plw.train.collator.PLWCollator` and `remove_unused_columns=False`.
    """


@torch.no_grad()
def completion_nll(model, dataset, collator, *, batch_size: int = 8, device=None,
                   backend: str = "auto") -> float:
    """Mean NLL per completion token of `model` on tokenised examples (labels/weights ignored)."""
    was_training = model.training
    model.eval()
    attach_plw_loss(model)
    total, count = 0.0, 0
    try:
        for start in range(0, len(dataset), batch_size):
            batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            batch = {k: v.to(device) if device is not None else v for k, v in batch.items()}
            weights = batch["completion_mask"].to(torch.float32) * batch["labels"].ne(-100)
            n = int(weights[:, 1:].sum())
            if n == 0:
                continue
            request = LossRequest(weights, batch["completion_mask"], 1.0, backend=backend)
            model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                  position_ids=batch.get("position_ids"), labels=batch["labels"], loss_request=request)
            total += float(request.loss_value)  # full precision, whatever the wrapper returns
            count += n
    finally:
        model.train(was_training)
    return total / count if count else float("nan")
