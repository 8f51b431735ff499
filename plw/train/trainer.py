"""`PLWTrainer` and `PLWConfig`: `transformers.Trainer` with the PLW loss, one normaliser per optimizer step.

Gradient scaling (checked against transformers 5.x `Trainer._inner_training_loop` /
`training_step`): for each optimizer step the Trainer fetches the step's micro-batches with
`get_batch_samples`. There we compute N = Σ `plw.loss.normalizer_value` over the step's
micro-batches, summed over data-parallel ranks (an all-reduce), and keep it ourselves
(`step_normalizer`) instead of handing it to the Trainer as `num_items_in_batch`, which
transformers also fills with its own token counts (in `prediction_step`, say). Each micro-batch's
loss is then Σ_mb w·ℓ / N, and since DDP/FSDP/ZeRO average gradients over ranks, we multiply by
the world size. We set `loss_is_scaled_for_ga = True` so `training_step` does not divide by the
accumulation steps again (DeepSpeed is told `scale_wrt_gas=False` by the Trainer). The gradient of
one optimizer step is therefore exactly Σ_all w·ℓ / Σ_all w for the `weight_sum` normaliser, whatever
the split into micro-batches and ranks. A numeric normaliser is the per-step denominator as given.
Tensor, context and sequence parallelism (ranks that share a batch or split a sequence) are refused.

Evaluation (`evaluate`, `predict`, any `evaluation_loop`) reports `<prefix>_loss` = Σ w·ℓ / Σ N over
the whole set (same normaliser kind as training) and `<prefix>_completion_nll`, the mean NLL of the
completion tokens, which does not depend on the PLW; every rank evaluates the whole set.

The Minkowski penalty is added once per optimizer step: 1/k of it on each of the k micro-batches,
not multiplied by the world size (every rank adds it and the gradients are averaged).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from plw.errors import PLWError
from plw.train.forward import LossRequest, attach_plw_loss

NORMALIZER_NAMES = ("weight_sum", "nonzero_tokens", "completion_tokens")


@dataclasses.dataclass
class PLWLossArguments:
    """The loss settings a PLW trainer reads from its arguments (mixed into `PLWConfig`, `PLWSFTConfig`)."""

    completion_loss_weight: float = dataclasses.field(default=1.0, metadata={
        "help": "weight of completion tokens (λr of WIT); prompt tokens weigh the PLW"})
    normalizer: str = dataclasses.field(default="weight_sum", metadata={
        "help": "loss denominator per optimizer step: weight_sum (Σw), nonzero_tokens (WIT / TRL PR "
                "#6747), completion_tokens, or a positive number"})
    loss_backend: str = dataclasses.field(default="auto", metadata={"help": "auto, torch, cce or liger"})
    loss_strategy: str = dataclasses.field(default="auto", metadata={
        "help": "auto, token_chunks or vocab_blocks (plw's own engine)"})
    log_prompt_nll: bool = dataclasses.field(default=True, metadata={
        "help": "log the prompt tokens' NLL apart (an extra forward-only pass over weight-0 prompt rows)"})

    def __post_init__(self):
        self.normalizer = check_loss_settings(self.completion_loss_weight, self.normalizer)
        super().__post_init__()


def check_loss_settings(completion_loss_weight: float, normalizer: Any):
    """The normaliser as the loss takes it (a name or a positive float); ValueError on bad values."""
    import math

    if not (isinstance(completion_loss_weight, (int, float)) and 0 <= completion_loss_weight <= 1):
        raise ValueError(f"completion_loss_weight must be in [0, 1], got {completion_loss_weight!r}")
    if isinstance(normalizer, str) and normalizer not in NORMALIZER_NAMES:
        try:
            normalizer = float(normalizer)
        except ValueError:
            raise ValueError(f"normalizer must be one of {', '.join(NORMALIZER_NAMES)} or a positive "
                             f"number, got {normalizer!r}") from None
    if not isinstance(normalizer, str) and not (math.isfinite(normalizer) and normalizer > 0):
        raise ValueError(f"a numeric normalizer must be > 0 and finite, got {normalizer!r}")
    return normalizer


@dataclasses.dataclass
class PLWConfig(PLWLossArguments, TrainingArguments):
    """`TrainingArguments` plus the PLW loss settings; `remove_unused_columns` defaults to False so
    the weight columns reach the loss."""

    remove_unused_columns: bool = False


def check_single_process_gpus(n_gpu: int, world_size: int = 1) -> None:
    """Refuse the HF Trainer's single-process multi-GPU mode (nn.DataParallel).

    The PLW forward and the per-step normaliser assume one model replica per process (DDP, FSDP,
    DeepSpeed); DataParallel scatters one process's batch over replicas and would gather per-replica
    sums and means incorrectly.
    """
    if n_gpu > 1 and world_size <= 1:
        raise PLWError(f"{n_gpu} GPUs visible to one process (the Trainer would use nn.DataParallel, "
                       "which plw does not support): launch with `accelerate launch` or `torchrun`, or "
                       "pick one GPU with CUDA_VISIBLE_DEVICES=0", field="devices")


def check_parallelism(trainer) -> None:
    """Refuse tensor / context / sequence parallelism: those ranks share a batch or split a sequence,
    so the per-step normaliser summed over all processes would count tokens several times."""
    sizes = {name: int(getattr(trainer, f"get_{name}_size", lambda: 1)() or 1) for name in ("tp", "cp", "sp")}
    used = {k: v for k, v in sizes.items() if v > 1}
    if used:
        what = ", ".join(f"{k}_size={v}" for k, v in used.items())
        raise PLWError(f"plw's loss supports data parallelism (DDP, FSDP, ZeRO) only, not {what}: its "
                       "normaliser would count tokens shared or split across those ranks wrongly",
                       field="parallelism_config")


class PLWLossMixin:
    """The PLW loss for any `transformers.Trainer` subclass (e.g. TRL's `SFTTrainer`).

    Loss settings come from keyword arguments or, when not given, from the arguments object
    (`PLWConfig` / `plw.integrations.trl.PLWSFTConfig` carry them); batches carry `labels`, `weights`
    and optionally `completion_mask`. `completion_loss_weight` (λr) scales the completion tokens'
    weights, once per micro-batch, before the normaliser is taken.
    """

    loss_is_scaled_for_ga = True

    def __init__(self, *args, normalizer: Any = None, label_smoothing: float | None = None,
                 track_prompt_nll: bool | None = None, loss_backend: str | None = None,
                 loss_strategy: str | None = None, completion_loss_weight: float | None = None,
                 minkowski_coef: float = 0.0, minkowski_p: float = 1.0,
                 initial_params: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        check_single_process_gpus(self.args.n_gpu)
        check_parallelism(self)
        attach_plw_loss(self.model)
        # Our loss is normalised over the whole optimizer step. Transformers versions that predate
        # `loss_is_scaled_for_ga` decide the same thing from this flag.
        self.model_accepts_loss_kwargs = True

        def setting(value, name, default):
            return value if value is not None else getattr(self.args, name, default)

        self.plw_normalizer = check_loss_settings(
            setting(completion_loss_weight, "completion_loss_weight", 1.0),
            setting(normalizer, "normalizer", "weight_sum"))
        self.completion_loss_weight = float(setting(completion_loss_weight, "completion_loss_weight", 1.0))
        self.plw_label_smoothing = setting(label_smoothing, "label_smoothing_factor", 0.0)
        self.plw_track_prompt_nll = setting(track_prompt_nll, "log_prompt_nll", True)
        self.plw_backend = setting(loss_backend, "loss_backend", "auto")
        self.plw_strategy = setting(loss_strategy, "loss_strategy", "auto")
        self.minkowski_coef = minkowski_coef
        self.minkowski_p = minkowski_p
        self.initial_params = initial_params
        if minkowski_coef and initial_params is None:
            raise ValueError("minkowski_coef > 0 needs initial_params (see plw.train.diagnostics.snapshot)")
        self._device_initial = None
        # The denominator of the current optimizer step (set by get_batch_samples), never passed
        # through the Trainer's `num_items_in_batch`.
        self.step_normalizer = None
        # Running sums live on the training device (no host sync per micro-batch); they are read
        # once per optimizer step / log. _nll: prompt NLL sum, n_prompt, completion NLL sum, n_completion.
        dev = self.args.device
        self._nll = torch.zeros(4, dtype=torch.float64, device=dev)
        self._step_loss = torch.zeros((), dtype=torch.float64, device=dev)
        self._tokens = torch.zeros((), dtype=torch.float64, device=dev)
        # Σ w·ℓ, Σ N, completion NLL sum, completion count of the current evaluation.
        self._eval_sums = torch.zeros(4, dtype=torch.float64, device=dev)
        self.step_losses: list[float] = []

    # ---- one normaliser per optimizer step ---------------------------------------------

    def weigh_completion(self, batch: dict) -> dict:
        """Scale the completion tokens' weights by λr (in place, once per micro-batch)."""
        lam = self.completion_loss_weight
        if lam != 1.0 and batch.get("completion_mask") is not None:
            comp = batch["completion_mask"].bool()
            batch["weights"] = torch.where(comp, batch["weights"] * lam, batch["weights"])
        return batch

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        from plw.loss import normalizer_value

        batches = []
        for _ in range(num_batches):
            try:
                batches.append(self.weigh_completion(next(epoch_iterator)))
            except StopIteration:
                break
        self.step_normalizer = None
        if not batches:
            return batches, None
        if not isinstance(self.plw_normalizer, str):
            self.step_normalizer = float(self.plw_normalizer)
            return batches, None
        # Batches were checked at data time: no device→host sync here.
        total = sum(normalizer_value(b["labels"], b["weights"], self.plw_normalizer,
                                     completion_mask=b.get("completion_mask"), validate=False).to(device)
                    for b in batches)
        if self.accelerator.num_processes > 1:
            total = self.accelerator.reduce(total, reduction="sum")
        self.step_normalizer = total
        return batches, None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # `num_items_in_batch` is ignored: transformers fills it with token counts, not PLW weights.
        training = model.training and self.step_normalizer is not None
        request = LossRequest(
            inputs["weights"], inputs.get("completion_mask"),
            self.step_normalizer if training else self.plw_normalizer,
            label_smoothing=self.plw_label_smoothing if model.training else 0.0,
            track_masked_nll=self.plw_track_prompt_nll, backend=self.plw_backend,
            strategy=self.plw_strategy, validate=False)
        out = self._plw_forward(model, inputs, request)
        loss = out["loss"]
        if model.training:
            # Logged values come from the request: a mixed-precision wrapper may have cast `out`.
            self._accumulate_nll(request.stats())
            mask = inputs.get("attention_mask")
            self._tokens += mask.sum() if mask is not None else inputs["input_ids"].numel()
            scale = 1
            if training:
                # DP ranks average gradients; the normaliser already covers all ranks.
                scale = self.accelerator.num_processes
                loss = loss * scale
            self._step_loss += request.loss_value.to(self._step_loss) * scale
            if self.minkowski_coef:
                loss = loss + self.minkowski_coef * self._penalty(model) / max(
                    1, getattr(self, "current_gradient_accumulation_steps", 1))
        return (loss, out) if return_outputs else loss

    @staticmethod
    def _plw_forward(model, inputs, request):
        return model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                     position_ids=inputs.get("position_ids"), labels=inputs["labels"], loss_request=request)

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

    # ---- evaluation: Σ w·ℓ / Σ w and the completion NLL over the whole set -------------------

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """(Σ w·ℓ / N of this batch, None, None); the set's sums are kept for `evaluation_loop`.

        No logits: the loss never materialises them.
        """
        from plw.loss import normalizer_value

        inputs = self.weigh_completion(self._prepare_inputs(inputs))
        kind = self.plw_normalizer if isinstance(self.plw_normalizer, str) else "weight_sum"
        # normalizer 1: the request's loss is the batch's Σ w·ℓ; every valid target is computed
        # (track_masked_nll) so the completion NLL covers completion tokens of any weight.
        request = LossRequest(inputs["weights"], inputs.get("completion_mask"), 1.0,
                                 track_masked_nll=True, backend=self.plw_backend,
                                 strategy=self.plw_strategy, validate=False)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self.compute_loss_context_manager():
                self._plw_forward(model, inputs, request)
        finally:
            model.train(was_training)
        z = normalizer_value(inputs["labels"], inputs["weights"], kind,
                             completion_mask=inputs.get("completion_mask"), validate=False)
        stats = request.stats()
        sums = torch.stack([request.loss_value.double(), z.double(),
                            stats["completion_nll_sum"].double(), stats["n_completion"].double()])
        self._eval_sums += sums.to(self._eval_sums)
        return (request.loss_value.double() / z).float().detach(), None, None

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval"):
        """Every rank evaluates the whole set (no sharding, so no padded duplicates): exact sums.

        A dataset without a length (iterable) is read through the given dataloader instead."""
        from transformers.trainer_utils import EvalLoopOutput

        dataset = dataloader.dataset
        model = self.model_wrapped if self.model_wrapped is not None else self.model
        self._eval_sums.zero_()
        if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
            size, n = self.args.per_device_eval_batch_size, len(dataset)
            batches = (self.data_collator([dataset[i] for i in range(s, min(s + size, n))])
                       for s in range(0, n, size))
        else:
            batches, n = dataloader, 0
        for batch in batches:
            self.prediction_step(model, batch, True, ignore_keys)
            self.control = self.callback_handler.on_prediction_step(self.args, self.state, self.control)
        wl, z, c, n_c = self._eval_sums.tolist()
        metrics = {f"{metric_key_prefix}_loss": wl / z if z else float("nan"),
                   f"{metric_key_prefix}_completion_nll": c / n_c if n_c else float("nan")}
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=n)


class PLWTrainer(PLWLossMixin, Trainer):
    """Trainer whose loss is the PLW-weighted cross-entropy from `plw.loss.linear_cross_entropy`.

    Batches must carry `labels`, `weights` (and optionally `completion_mask`): use
    `plw.train.collator.PLWCollator`, and `PLWConfig` (or `remove_unused_columns=False`).
    """

    def __init__(self, *args, **kwargs):
        targs = kwargs.get("args", args[1] if len(args) > 1 else None)
        if targs is None and len(args) <= 1:  # Trainer's own default would drop the weight columns
            kwargs["args"] = PLWConfig(output_dir="trainer_output")
        elif getattr(targs, "remove_unused_columns", False):
            raise PLWError("PLWTrainer needs remove_unused_columns=False so the weight columns reach "
                           "the loss (PLWConfig defaults to it)", field="remove_unused_columns")
        super().__init__(*args, **kwargs)


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
