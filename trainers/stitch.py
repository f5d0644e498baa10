"""`StitchTrainer`: train only the stitch layers of Branch-Train-Stitch (arXiv 2502.00075).

The seed and the experts are frozen (``requires_grad=False``, eval mode, no optimizer state);
the part of every forward before the first stitch layer runs without an autograd graph.
Checkpoints and the final save hold only the stitch weights and config (``_save`` is
overridden: a checkpoint of the whole stack would be the size of every model), and resuming
loads them back (``_load_from_checkpoint``). With the default Adafactor optimizer a checkpoint
is about the size of the stitch weights (4.6% of the tiny seed in benchmarks/stitch.py).

Example::

    from trainers.stitch import StitchTrainer, StitchTrainingConfig
    args = StitchTrainingConfig(output_dir="out", num_stitch_layers=4, max_steps=200)
    trainer = StitchTrainer(model=seed, experts={"math": m, "code": c}, args=args,
                            train_dataset=packed_blocks, processing_class=tokenizer)
    trainer.train()
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hf_ext.adapters.stitch import StitchConfig, StitchedModel
from hf_ext.errors import InputError

__all__ = ["StitchTrainer", "StitchTrainingConfig"]


@dataclass
class StitchTrainingConfig(TrainingArguments):
    """`TrainingArguments` for `StitchTrainer`, plus the stitch-layer settings used when the
    trainer builds the stitched model from a seed and experts.

    Defaults differ from `TrainingArguments` where stitch training needs it: a larger learning
    rate (only ~K·(2n+1)·d² new parameters are trained) and ``adam_epsilon=1e-16``: at identity
    init the experts' gate share is e^(−β), so stitch gradients start ~e^(−β) small and Adam's
    ε must sit below them for its scale-free step to move the gates. Gate logits move by about
    lr·d per step at best, so over short runs anneal β (``gate_offset_final``) rather than wait
    for the gates to climb over it; the saved config holds the β in use at the end.

    The default optimizer is Adafactor (``optim="adafactor"``: factored second moments, no first
    moment, scale-free update like Adam's, ε₁ = 1e-30): its state is one row and one column per
    matrix, so a checkpoint is about the size of the stitch weights. AdamW (``optim="adamw_torch"``)
    keeps two full copies and triples it. Intermediate checkpoints hold the stitch weights, the
    optimizer/scheduler/RNG state and the trainer state; the tokenizer (the seed's, unchanged) is
    written only by the final ``save_model``.
    """

    optim: str = field(default="adafactor", metadata={"help": "Optimizer ('adafactor' keeps checkpoints ~ the stitch weights; 'adamw_torch' triples them)."})

    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of the stitch layers."})
    adam_epsilon: float = field(default=1e-16, metadata={"help": "Adam epsilon; must be below the e^-beta-scaled gradients at identity init."})
    logging_steps: float = field(default=10, metadata={"help": "Log every this many steps."})
    report_to: Any = field(default="none", metadata={"help": "Integrations to report to ('none', 'wandb', 'tensorboard', ...)."})
    num_stitch_layers: int = field(default=4, metadata={"help": "K: stitch layers, one after every floor(L/K) layers."})
    stitch_after: list[int] | None = field(default=None, metadata={"help": "Explicit 1-based layer indices for the stitch layers (overrides num_stitch_layers)."})
    stitch_dropout: float = field(default=0.0, metadata={"help": "Dropout inside the stitch layers."})
    stitch_init: Literal["identity", "random"] = field(default="identity", metadata={"help": "'identity': the stitched model equals the seed at step 0."})
    gate_offset: float = field(default=16.0, metadata={"help": "Fixed hub gate-logit offset beta (identity init)."})
    gate_offset_final: float | None = field(default=None, metadata={"help": "Anneal beta linearly to this value over gate_offset_anneal_steps (None: keep beta)."})
    gate_offset_anneal_steps: int = field(default=0, metadata={"help": "Steps over which beta goes from gate_offset to gate_offset_final."})

    def stitch_config(self, expert_names: list[str] | None = None) -> StitchConfig:
        return StitchConfig(expert_names=list(expert_names or []), num_stitch_layers=self.num_stitch_layers,
                            stitch_after=self.stitch_after, dropout=self.stitch_dropout, init=self.stitch_init,
                            gate_offset=self.gate_offset)


class GateOffsetAnneal(TrainerCallback):
    """β(step) = β_0 + (β_final − β_0)·min(1, step / steps): the stitched model equals the seed
    at step 0 (large β_0), and the gates need not climb over β_0 by gradient steps alone.
    Derived from the global step, so resuming from a checkpoint gives the same schedule."""

    def __init__(self, model: StitchedModel, start: float, final: float, steps: int) -> None:
        self.model, self.start, self.final, self.steps = model, start, final, max(1, steps)

    def on_step_begin(self, args, state, control, **kwargs):
        fraction = min(1.0, state.global_step / self.steps)
        self.model.set_gate_offset(self.start + (self.final - self.start) * fraction)

    def on_train_end(self, args, state, control, **kwargs):
        self.on_step_begin(args, state, control)


class StitchTrainer(Trainer):
    """A `Trainer` whose optimizer holds only stitch parameters and whose saves hold only them.

    Args:
        model: a `StitchedModel`, or the seed (instance, Hub id or path) together with `experts`.
        experts: ``{name: model or id}`` when `model` is the seed.
        args: a `StitchTrainingConfig` (a plain `TrainingArguments` works with stitch defaults).
        stitch_config: overrides the stitch settings taken from `args`.
        Other arguments are `Trainer`'s; `data_collator` defaults to stacking packed blocks.
    """

    def __init__(self, model: Any = None, args: TrainingArguments | None = None, *, experts: dict[str, Any] | None = None,
                 stitch_config: StitchConfig | None = None, data_collator: Any = None, **kwargs: Any) -> None:
        args = args if args is not None else StitchTrainingConfig(output_dir="stitch_out")
        if not isinstance(model, StitchedModel):
            if model is None or not experts:
                raise InputError("StitchTrainer needs a StitchedModel, or the seed as `model` plus `experts={name: model}`.")
            if stitch_config is None:
                stitch_config = args.stitch_config(list(experts)) if isinstance(args, StitchTrainingConfig) else StitchConfig(expert_names=list(experts))
            model = StitchedModel(model, experts, stitch_config)
        elif experts is not None:
            raise InputError("Pass `experts` only with a seed model; this StitchedModel already has its experts.")
        super().__init__(model=model, args=args, data_collator=data_collator or default_data_collator, **kwargs)
        final = getattr(args, "gate_offset_final", None)
        if final is not None:
            self.add_callback(GateOffsetAnneal(model, model.gate_offset, final, args.gate_offset_anneal_steps))
        frozen_trainable = [n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("stitch.")]
        if frozen_trainable:  # someone unfroze a seed/expert weight: it would silently train
            raise InputError(f"Only stitch parameters may train, but {frozen_trainable[:3]} require grad; call requires_grad_(False) on them.")

    def _stitched(self) -> StitchedModel:
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self._stitched().save_pretrained(output_dir)
        in_checkpoint = os.path.basename(os.path.normpath(output_dir)).startswith(PREFIX_CHECKPOINT_DIR)
        if self.processing_class is not None and not in_checkpoint:  # the seed's tokenizer: once, in the final save
            self.processing_class.save_pretrained(output_dir)
        import torch

        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        stitched = self.accelerator.unwrap_model(model, keep_torch_compile=False) if model is not None else self._stitched()
        stitched.load_stitch_weights(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        self._stitched().load_stitch_weights(self.state.best_model_checkpoint)
