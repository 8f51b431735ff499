"""PLW in TRL users' own scripts: `PLWSFTConfig` and `PLWSFTTrainer`, drop-ins for TRL's SFT pair.

TRL prepares the data its own way: tokenisation and chat templates, `completion_mask` (prompt-
completion data) or `assistant_masks` (conversational data, `{% generation %}` markers), truncation
at `max_length` (1024 by default), packing (`bfd`, `bfd_split`, `wrapped`) and padding-free batches.
TRL then keeps only `input_ids` and `labels`: it truncates and packs exactly those two columns. So
plw writes each token's role into its label, where nothing can separate them:

    completion (and TRL's EOS)   label = token id            (>= 0, as TRL has it)
    prompt                       label = -101 - token id     (<= -101)
    nothing (padding, cut)       label = -100

The labels go through TRL's truncation and packing untouched, and the collator turns them back
into token ids, `weights` (completion 1, prompt PLW) and `completion_mask` for each batch — after
truncation and packing, so weights can never fall out of step with the tokens. The loss is plw's
(`PLWLossMixin`): one normaliser per optimizer step, `completion_loss_weight` λr, WIT's
`nonzero_tokens` normaliser as an option.

The first token of every example is never a target inside its example; its label is -100 so that
`wrapped` packing, which concatenates examples, never trains one example's last token to predict
the next example's first. Examples whose completion is cut off entirely by truncation are dropped
(as TRL does at PLW 0), so every PLW trains on the same examples.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from trl import SFTConfig, SFTTrainer

from plw.errors import PLWError
from plw.train.trainer import PLWLossArguments, PLWLossMixin

PROMPT_BASE = -101  # prompt label = PROMPT_BASE - token id
IGNORE = -100
# The one TRL method plw extends is private; its signature is checked so a TRL that changed it
# fails at construction with one line instead of deep inside data preparation.
PREPARE_PARAMS = ("dataset", "processing_class", "args", "packing", "formatting_func", "dataset_name")


def check_trl_compatible() -> None:
    import inspect

    import trl

    params = tuple(inspect.signature(SFTTrainer._prepare_dataset).parameters)[1:]
    if params != PREPARE_PARAMS:
        raise PLWError(f"TRL {trl.__version__}'s SFTTrainer._prepare_dataset{params} is not the "
                       f"{PREPARE_PARAMS} plw extends (tested with TRL 1.16); install a TRL of that "
                       f"series or use `plw train`", field="trl")


@dataclasses.dataclass
class PLWSFTConfig(PLWLossArguments, SFTConfig):
    """TRL's `SFTConfig` plus `prompt_loss_weight` (and λr, the normaliser, the loss engine).

    PLW 0 is TRL's completion-only (or assistant-only) loss, PLW 1 its full-sequence loss;
    `completion_only_loss` is therefore not used.
    """

    prompt_loss_weight: float = dataclasses.field(default=0.1, metadata={
        "help": "loss weight of prompt tokens in [0, 1] (completion tokens weigh completion_loss_weight)"})

    def __post_init__(self):
        plw = self.prompt_loss_weight
        if isinstance(plw, bool) or not isinstance(plw, (int, float)) or not 0 <= plw <= 1:
            raise ValueError(f"prompt_loss_weight must be in [0, 1], got {plw!r}")
        super().__post_init__()


def encode_roles(labels: list[int], input_ids: list[int]) -> list[int]:
    """TRL's completion/assistant-masked labels → role-coded labels (see the module docstring)."""
    out = [lab if lab != IGNORE else PROMPT_BASE - tok for lab, tok in zip(labels, input_ids)]
    if out:
        out[0] = IGNORE
    return out


def decode_roles(labels: torch.Tensor, prompt_loss_weight: float) -> dict[str, torch.Tensor]:
    """Role-coded labels → token labels, `weights` (completion 1, prompt PLW) and `completion_mask`."""
    prompt = labels <= PROMPT_BASE
    completion = labels >= 0
    weights = torch.where(completion, 1.0, torch.where(prompt, float(prompt_loss_weight), 0.0))
    return {"labels": torch.where(prompt, PROMPT_BASE - labels, labels),
            "weights": weights.to(torch.float32), "completion_mask": completion}


class RoleWeightCollator:
    """Wraps TRL's collator: its padded / padding-free batch with the labels decoded into weights."""

    def __init__(self, collator, prompt_loss_weight: float):
        self.collator = collator
        self.prompt_loss_weight = prompt_loss_weight

    def __call__(self, examples):
        batch = self.collator(examples)
        batch.update(decode_roles(batch["labels"], self.prompt_loss_weight))
        return batch


class ArgsView:
    """`args` with a few attributes replaced (TRL's data preparation reads only attributes)."""

    def __init__(self, args, **overrides):
        self._args, self._overrides = args, overrides

    def __getattr__(self, name):
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._args, name)


def _columns(dataset) -> list[str]:
    names = getattr(dataset, "column_names", None)
    return list(names) if names is not None else list(next(iter(dataset)).keys())


def _is_chat_lm(example: dict) -> bool:
    """A conversational language-modeling example (`messages`): roles need TRL's assistant masks."""
    from trl.data_utils import is_conversational

    return "prompt" not in example and is_conversational(example)


class PLWSFTTrainer(PLWLossMixin, SFTTrainer):
    """TRL's `SFTTrainer` with plw's prompt-loss-weighted loss; takes a `PLWSFTConfig`.

    Datasets: prompt-completion (standard or conversational), conversational `messages` (the
    assistant turns are the completion: the chat template needs `{% generation %}` markers, which
    TRL adds itself to the templates it knows), or language modeling (`text`: every token is a
    completion token, so the PLW has no effect).
    """

    def __init__(self, model, args: PLWSFTConfig | None = None, data_collator=None, train_dataset=None,
                 eval_dataset=None, processing_class=None, **kwargs):
        check_trl_compatible()
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            args = PLWSFTConfig(f"{str(name).rstrip('/').split('/')[-1]}-SFT")
        elif not isinstance(args, PLWSFTConfig):
            raise TypeError(f"PLWSFTTrainer takes a PLWSFTConfig (TRL's SFTConfig plus prompt_loss_weight), "
                            f"got {type(args).__name__}")
        if train_dataset is not None and _is_chat_lm(next(iter(train_dataset))):
            # Roles of `messages` data come from TRL's assistant masks (its assistant-only loss).
            args.assistant_only_loss = True
        try:
            super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                             eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)
        except ValueError as err:
            if "chat template is not training-compatible" in str(err):
                raise PLWError("a PLW on `messages` data needs to know the assistant's tokens: give the "
                               "tokenizer a chat template with {% generation %} markers (SFTConfig."
                               "chat_template_path), or convert the data to prompt-completion form",
                               field="chat_template") from None
            raise
        self.data_collator = RoleWeightCollator(self.data_collator, args.prompt_loss_weight)

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        if "labels" in _columns(dataset):
            # Labels made by the user: TRL's pipeline as is; every target is a completion token.
            return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func,
                                            dataset_name)
        # 1. TRL tokenises and masks (no truncation, packing or shuffling yet) ...
        saved = self.completion_only_loss
        self.completion_only_loss = True
        try:
            tokens = super()._prepare_dataset(
                dataset, processing_class, ArgsView(args, max_length=None, shuffle_dataset=False), False,
                formatting_func, dataset_name)
        finally:
            self.completion_only_loss = saved
        # 2. ... masked tokens become prompt-coded labels ...
        tokens = tokens.map(lambda ex: {"labels": encode_roles(ex["labels"], ex["input_ids"])},
                            **_map_kwargs(tokens, args, f"Coding roles of the {dataset_name} dataset"))
        # 3. ... and TRL truncates, packs and shuffles input_ids and labels together.
        out = super()._prepare_dataset(tokens, processing_class, args, packing, None, dataset_name)
        if not packing and args.max_length is not None:
            out = out.filter(lambda ex: any(lab >= 0 for lab in ex["labels"]),
                             **_map_kwargs(out, args, f"Dropping {dataset_name} examples without completion"))
        return out


def _map_kwargs(dataset, args, desc: str) -> dict[str, Any]:
    import datasets

    if isinstance(dataset, datasets.Dataset):  # IterableDataset.map takes neither
        return {"num_proc": args.dataset_num_proc, "desc": desc}
    return {}
