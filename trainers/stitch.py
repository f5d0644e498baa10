"""`StitchTrainer`: train only the stitch layers of Branch-Train-Stitch (arXiv 2502.00075).

The seed and the experts are frozen (``requires_grad=False``, eval mode, no optimizer state);
the part of every forward before the first stitch layer runs without an autograd graph.
Checkpoints and the final save hold only the stitch weights and config (``_save`` is
overridden: a checkpoint of the whole stack would be the size of every model), and resuming
loads them back (``_load_from_checkpoint``). With the default Adafactor optimizer a checkpoint
is about the size of the stitch weights (4.6% of the tiny seed in benchmarks/stitch.py).

Example::

    from hf_ext.adapters.stitch import StitchConfig
    from trainers.stitch import StitchTrainer, StitchTrainingConfig
    args = StitchTrainingConfig(output_dir="out", max_steps=200)
    trainer = StitchTrainer(model=seed, experts={"math": m, "code": c}, args=args,
                            stitch_config=StitchConfig(num_stitch_layers=4),
                            train_dataset=packed_blocks, processing_class=tokenizer)
    trainer.train()
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator
from transformers.trainer_callback import ExportableState
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hf_ext.adapters.stitch import StitchConfig, StitchedModel
from hf_ext.errors import InputError
from hf_ext.outputs import SafeResumeMixin

__all__ = ["StitchTrainer", "StitchTrainingConfig", "GateOffsetAnneal", "MOVED_TO_STITCH_CONFIG"]

# Former StitchTrainingConfig fields -> the StitchConfig field that holds the setting now. The stitch layers'
# structure is the model's (StitchTrainer(stitch_config=...) or an already-stitched model), not training's.
MOVED_TO_STITCH_CONFIG = {"num_stitch_layers": "num_stitch_layers", "stitch_after": "stitch_after",
                          "stitch_dropout": "dropout", "stitch_init": "init", "gate_offset": "gate_offset"}


def _moved_fields_error(names: Any) -> InputError | None:
    """One error naming where each former stitch-layer field of StitchTrainingConfig went, or None."""
    moved = [name for name in MOVED_TO_STITCH_CONFIG if name in set(names)]
    if not moved:
        return None
    return InputError("; ".join(
        f"{name} moved to StitchConfig: pass StitchTrainer(stitch_config=StitchConfig({MOVED_TO_STITCH_CONFIG[name]}=...))"
        for name in moved) + ". StitchTrainingConfig holds only the training settings; the stitch layers' structure is "
        "the model's (hf_ext.adapters.stitch.StitchConfig, or an already-stitched StitchedModel).")


def _refuse_moved_keys(values: dict[str, Any], argv: list[str] | None = None) -> None:
    """parse_config's hook (recipes, flags): a former stitch-layer key gets the constructor's error."""
    from hf_ext.config import given_keys

    error = _moved_fields_error(given_keys(values, argv))
    if error is not None:
        raise error


def _refuse_moved_fields(cls: type) -> type:
    """Wrap the dataclass ``__init__`` of `cls` so a former stitch-layer field gets one clear error, not a TypeError."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        error = _moved_fields_error(kwargs)
        if error is not None:
            raise error
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


@_refuse_moved_fields
@dataclass
class StitchTrainingConfig(TrainingArguments):
    """`TrainingArguments` for `StitchTrainer`: how the stitch layers train, never what they are.

    The stitch layers' structure (``num_stitch_layers``, ``stitch_after``, ``dropout``, ``init``,
    ``gate_offset``, ...) is a :class:`~hf_ext.adapters.stitch.StitchConfig`, given the TRL way as
    ``StitchTrainer(..., stitch_config=StitchConfig(...))`` (like ``peft_config``) or taken from an
    already-stitched `StitchedModel`; passing one of those names here raises an error that says so.

    Defaults differ from `TrainingArguments` where stitch training needs it: a larger learning
    rate (only ~K·(2n+1)·d² new parameters are trained) and ``adam_epsilon=1e-16``: at identity
    init the experts' gate share is e^(−β), so stitch gradients start ~e^(−β) small and Adam's
    ε must sit below them for its scale-free step to move the gates. Gate logits move by about
    lr·d per step at best, so β is annealed by default (the BTS replication's schedule: from the
    model's ``StitchConfig.gate_offset`` = 16 to ``gate_offset_final`` = 2 over the first 30% of
    the steps) rather than left for the gates to climb over. The annealed β is runtime state: it
    follows the trainer's global step, is logged as ``stitch/gate_offset``, and a save writes the
    β in use into ``stitch_config.json``; this config and the model's `StitchConfig` are not changed.

    Datasets are packed blocks (an ``input_ids`` column, e.g. from `hf_ext.lm.pack_texts`) or
    text in ``dataset_text_field``, which the trainer tokenizes and packs into blocks of
    ``max_length`` tokens (TRL's field names).

    The default optimizer is Adafactor (``optim="adafactor"``: factored second moments, no first
    moment, scale-free update like Adam's, ε₁ = 1e-30): its state is one row and one column per
    matrix, so a checkpoint is about the size of the stitch weights. AdamW (``optim="adamw_torch"``)
    keeps two full copies and triples it. Intermediate checkpoints hold the stitch weights, the
    optimizer/scheduler/RNG state and the trainer state; the tokenizer (the seed's, unchanged) is
    written only by the final ``save_model``.

    Args:
        learning_rate (`float`, *optional*, defaults to `0.001`):
            Peak learning rate of the stitch layers.
        optim (`str`, *optional*, defaults to `"adafactor"`):
            Optimizer ('adafactor' keeps checkpoints ~ the stitch weights; 'adamw_torch' triples them).
        adam_epsilon (`float`, *optional*, defaults to `1e-16`):
            Adam epsilon; must be below the e^-beta-scaled gradients at identity init.
        logging_steps (`float`, *optional*, defaults to `10`):
            Log every this many steps.
        report_to (`Any`, *optional*, defaults to `"none"`):
            Integrations to report to ('none', 'wandb', 'tensorboard', ...).
        gate_offset_final (`float` or `None`, *optional*, defaults to `2.0`):
            Anneal beta linearly from the model's gate offset (StitchConfig.gate_offset) to this value over
            gate_offset_anneal_steps, so the stitched model starts as the seed and the experts' share (~e^-beta) opens
            to where gradients can train the gates. None: keep beta frozen at the model's gate offset (the exact
            identity start, but with beta = 16 the gates barely move and the loss stays flat for hundreds of steps).
            Must not exceed the model's gate offset (that would sharpen the gates).
        gate_offset_anneal_steps (`float`, *optional*, defaults to `0.3`):
            Steps over which beta goes from the model's gate offset to gate_offset_final; below 1, a fraction of the
            total training steps.
        dataset_text_field (`str`, *optional*, defaults to `"text"`):
            Text column of datasets without input_ids; tokenized with processing_class and packed.
        max_length (`int`, *optional*, defaults to `1024`):
            Tokens per packed block when the trainer packs a text dataset.
    """

    optim: str = field(default="adafactor", metadata={"help": "Optimizer ('adafactor' keeps checkpoints ~ the stitch weights; 'adamw_torch' triples them)."})

    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of the stitch layers."})
    adam_epsilon: float = field(default=1e-16, metadata={"help": "Adam epsilon; must be below the e^-beta-scaled gradients at identity init."})
    logging_steps: float = field(default=10, metadata={"help": "Log every this many steps."})
    report_to: Any = field(default="none", metadata={"help": "Integrations to report to ('none', 'wandb', 'tensorboard', ...)."})
    gate_offset_final: float | None = field(default=2.0, metadata={"help": (
        "Anneal beta linearly from the model's gate offset (StitchConfig.gate_offset) to this value over "
        "gate_offset_anneal_steps, so the stitched model starts as the seed and the experts' share (~e^-beta) opens "
        "to where gradients can train the gates. None: keep beta frozen at the model's gate offset (the exact "
        "identity start, but with beta = 16 the gates barely move and the loss stays flat for hundreds of steps). "
        "Must not exceed the model's gate offset (that would sharpen the gates).")})
    gate_offset_anneal_steps: float = field(default=0.3, metadata={"help": (
        "Steps over which beta goes from the model's gate offset to gate_offset_final; below 1, a fraction of the "
        "total training steps.")})
    dataset_text_field: str = field(default="text", metadata={"help": "Text column of datasets without input_ids; tokenized with processing_class and packed."})
    max_length: int = field(default=1024, metadata={"help": "Tokens per packed block when the trainer packs a text dataset."})

    check_recipe: ClassVar = staticmethod(_refuse_moved_keys)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gate_offset_anneal_steps < 0:
            raise InputError(f"StitchTrainingConfig.gate_offset_anneal_steps must be >= 0, got {self.gate_offset_anneal_steps}.")
        if self.max_length < 2:
            raise InputError(f"StitchTrainingConfig.max_length must be at least 2 tokens, got {self.max_length}.")


class GateOffsetAnneal(TrainerCallback, ExportableState):
    """β(step) = β_0 + (β_final − β_0)·min(1, step / steps): the stitched model equals the seed
    at step 0 (large β_0), and the gates need not climb over β_0 by gradient steps alone.
    Derived from the trainer state's global step, so resuming from a checkpoint gives the same
    schedule. ``steps`` below 1 is a fraction of the run's total steps.

    The β in use is runtime state of the run, not of any config: it is set on the model being
    trained (the callback handler's ``model``), kept as ``gate_offset`` here, and saved with every
    checkpoint in the trainer state (``trainer_state.json``, ``stateful_callbacks``), beside the
    global step it follows.

    Args:
        start (`float`):
            β at step 0 (the model's gate offset when training starts).
        final (`float`):
            β after the anneal.
        steps (`float`):
            Steps of the anneal; below 1, a fraction of ``state.max_steps``.
        gate_offset (`float` or `None`, *optional*, defaults to `None`):
            The β in use (restored from a checkpoint); ``None``: `start`.
    """

    def __init__(self, start: float, final: float, steps: float, gate_offset: float | None = None) -> None:
        self.start, self.final, self.steps = float(start), float(final), steps
        self.gate_offset = self.start if gate_offset is None else float(gate_offset)

    def offset_at(self, global_step: int, max_steps: int) -> float:
        """β at `global_step` of a run of `max_steps` steps."""
        steps = self.steps * (max_steps or 1) if self.steps < 1 else self.steps
        fraction = min(1.0, global_step / max(1, round(steps)))
        return self.start + (self.final - self.start) * fraction

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.gate_offset = self.offset_at(state.global_step, state.max_steps)
        if model is not None:
            model.set_gate_offset(self.gate_offset)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.on_step_begin(args, state, control, model=model)

    def state(self) -> dict:
        return {"args": {"start": self.start, "final": self.final, "steps": self.steps}, "attributes": {"gate_offset": self.gate_offset}}


class StitchTrainer(SafeResumeMixin, Trainer):
    """A `Trainer` whose optimizer holds only stitch parameters and whose saves hold only them.

    Logged with the loss (and in ``trainer.state.log_history``), averaged over the logging
    interval: per stitch layer k, ``stitch/{k}/e2h_hub`` and ``stitch/{k}/e2h_{expert}`` (the mean
    E2H mixing weights on the hub and on every expert) or ``stitch/{k}/h2e_{expert}`` (the mean
    H2E gate: the hub's share in that expert's state), and ``stitch/gate_offset`` (the current β).
    ``save_model`` and ``push_to_hub`` write the stitch card (README.md, ``base_model`` = seed +
    experts, relation ``adapter``) with a plot of these over training (``gates.png``) and the
    latest held-out loss if the trainer evaluated.

    Args:
        model (`StitchedModel` or `Any`, *optional*, defaults to `None`):
            A `StitchedModel` (its stitch layers are trained), or the seed (instance, Hub id or path) together with
            `experts`; required.
        args (`TrainingArguments` or `None`, *optional*, defaults to `None`):
            A `StitchTrainingConfig` (a plain `TrainingArguments` trains with the frozen gate offset and no
            annealing); ``None``: ``StitchTrainingConfig(output_dir="stitch_out")``.
        experts (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            ``{name: model or Hub id or path}`` when `model` is the seed; refused with a `StitchedModel`.
        stitch_config (`StitchConfig` or `None`, *optional*, defaults to `None`):
            The stitch layers built when `model` is the seed (TRL's ``peft_config`` way); ``None``: ``StitchConfig()``.
            Refused with a `StitchedModel`, which has its own.
        data_collator (`Any`, *optional*, defaults to `None`):
            The `Trainer`'s collator; ``None``: `default_data_collator` (stacks packed blocks).
        train_dataset (`Any`, *optional*, defaults to `None`):
            Packed blocks (an ``input_ids`` column) or text in ``args.dataset_text_field``, which is tokenized with
            `processing_class` and packed into blocks of ``args.max_length`` tokens.
        eval_dataset (`Any`, *optional*, defaults to `None`):
            Held-out data in the same forms as `train_dataset` (or a dict of them).
        processing_class (`Any`, *optional*, defaults to `None`):
            The seed's tokenizer: packs text datasets and is saved with the final ``save_model``.
        peft_config (`Any`, *optional*, defaults to `None`):
            Refused when given: the stitch layers are already the only trainable parameters.
        **kwargs:
            Passed to `Trainer` (``callbacks``, ``compute_metrics``, ...).
    """

    def __init__(self, model: Any = None, args: TrainingArguments | None = None, *, experts: dict[str, Any] | None = None,
                 stitch_config: StitchConfig | None = None, data_collator: Any = None, train_dataset: Any = None,
                 eval_dataset: Any = None, processing_class: Any = None, peft_config: Any = None, **kwargs: Any) -> None:
        if peft_config is not None:
            raise InputError(
                "StitchTrainer does not take peft_config: the seed and the experts are frozen and the stitch layers are "
                "already the only trainable parameters (an adapter of their own). Drop peft_config; to train fewer "
                "parameters, use fewer stitch layers (StitchConfig.num_stitch_layers or stitch_after, given as "
                "StitchTrainer(stitch_config=StitchConfig(...)))."
            )
        args = args if args is not None else StitchTrainingConfig(output_dir="stitch_out")
        final = getattr(args, "gate_offset_final", None)
        if not isinstance(model, StitchedModel):
            if model is None or not experts:
                raise InputError("StitchTrainer needs a StitchedModel, or the seed as `model` plus `experts={name: model}`.")
            if stitch_config is not None and not isinstance(stitch_config, StitchConfig):
                raise InputError(f"stitch_config must be a hf_ext.adapters.stitch.StitchConfig, got {type(stitch_config).__name__}.")
            layers = stitch_config if stitch_config is not None else StitchConfig()
            if final is not None and final > layers.gate_offset:  # before the seed and the experts load
                raise InputError(
                    f"gate_offset_final={final} is larger than gate_offset={layers.gate_offset} (StitchConfig.gate_offset, "
                    "beta at step 0): annealing would sharpen the gates (shrink the experts' share) instead of opening them. "
                    f"Set gate_offset_final <= {layers.gate_offset}, or None to keep beta as it is."
                )
            model = StitchedModel(model, experts, layers)
        elif experts is not None:
            raise InputError("Pass `experts` only with a seed model; this StitchedModel already has its experts.")
        elif stitch_config is not None:
            raise InputError("Pass `stitch_config` only with a seed model; this StitchedModel already has its stitch layers "
                             "(model.stitch_config). Build a new StitchedModel for other stitch layers.")
        if final is not None and final > model.gate_offset:
            raise InputError(
                f"gate_offset_final={final} is larger than the model's gate offset beta={model.gate_offset}: annealing "
                "would sharpen the gates (shrink the experts' share) instead of opening them. Set gate_offset_final <= "
                f"{model.gate_offset}, or None to keep beta as it is."
            )
        train_dataset = _blocks(train_dataset, "train_dataset", args, processing_class)
        eval_dataset = _blocks(eval_dataset, "eval_dataset", args, processing_class)
        super().__init__(model=model, args=args, data_collator=data_collator or default_data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)
        if final is not None:
            self.add_callback(GateOffsetAnneal(model.gate_offset, final, args.gate_offset_anneal_steps))
        frozen_trainable = [n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("stitch.")]
        if frozen_trainable:  # someone unfroze a seed/expert weight: it would silently train
            raise InputError(f"Only stitch parameters may train, but {frozen_trainable[:3]} require grad; call requires_grad_(False) on them.")
        self._gate_sums: dict[str, Any] = {}
        self._gate_batches = 0

    def _stitched(self) -> StitchedModel:
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    # -- logging --------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if self.model.training:
            for name, value in self._stitched().gate_means().items():
                self._gate_sums[name] = self._gate_sums.get(name, 0.0) + value
            self._gate_batches += 1
        return result

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the gate means since the last one (averaged over processes)
            import torch

            if self._gate_batches:
                names = sorted(self._gate_sums)
                means = torch.stack([self._gate_sums[n] for n in names]) / self._gate_batches
                means = self.accelerator.gather(means[None]).mean(0)
                logs.update(zip(names, means.tolist()))
            logs["stitch/gate_offset"] = self._stitched().gate_offset
            self._gate_sums, self._gate_batches = {}, 0
        super().log(logs, start_time)

    # -- saving, cards, the Hub -----------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self._stitched().save_pretrained(output_dir)
        in_checkpoint = os.path.basename(os.path.normpath(output_dir)).startswith(PREFIX_CHECKPOINT_DIR)
        if not in_checkpoint:  # the seed's tokenizer and the card: once, in the final save
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)
            self.stitch_card(output_dir, require_hub_ids=False)
        import torch

        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def plot_gates(self, folder: str | os.PathLike) -> tuple[str, str] | None:
        """Write ``gates.png`` (gate means and β over training) into `folder`; returns (file name, caption)."""
        from hf_ext.adapters.stitch.plots import GATES_PLOT, plot_gate_history

        if not any("stitch/gate_offset" in row for row in self.state.log_history):
            return None
        plot_gate_history(self.state.log_history, os.path.join(folder, GATES_PLOT))
        return GATES_PLOT, "Mean gates per stitch layer and the gate offset beta over training"

    def stitch_card(self, folder: str | os.PathLike | None = None, *, require_hub_ids: bool = True, summary: str = "",
                    datasets: list[str] | None = None):
        """The stitch card (`StitchedModel.model_card`) with this run's gate plot, settings and latest
        held-out loss; written to ``folder/README.md`` (with ``gates.png``) when `folder` is given."""
        evals = [row for row in self.state.log_history if "eval_loss" in row]
        eval_results = [{"task_type": "text-generation", "dataset_type": "held-out", "dataset_name": "held-out text",
                         "metric_type": "loss", "metric_value": evals[-1]["eval_loss"]}] if evals else []
        plots = [self.plot_gates(folder)] if folder is not None else []
        args = self.args
        training = {"steps": self.state.global_step, "learning_rate": args.learning_rate, "optim": getattr(args.optim, "value", args.optim),
                    "gate_offset_final": getattr(args, "gate_offset_final", None)}
        card = self._stitched().model_card(summary=summary, eval_results=eval_results, datasets=datasets, training=training,
                                           plots=[p for p in plots if p], require_hub_ids=require_hub_ids)
        if folder is not None:
            card.save(os.path.join(folder, "README.md"))
        return card

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """Trainer's generic card would describe the whole stack: write the stitch card instead."""
        if self.is_world_process_zero():
            self.stitch_card(self.args.output_dir, require_hub_ids=False)

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True, token: str | None = None,
                    revision: str | None = None, private: bool | None = None, **kwargs: Any):
        """Upload the stitch weights, config, tokenizer, card and gate plot to ``args.hub_model_id`` in one commit.

        The card needs the Hub ids of the seed and the experts (set from models given by id, or in
        the `StitchConfig`); without them this fails before anything is uploaded.
        """
        import tempfile

        from hf_ext.hub import push_folder

        repo_id = self.args.hub_model_id or getattr(self, "hub_model_id", None)  # the latter: set by Trainer's init_hf_repo
        if not repo_id or "/" not in repo_id:
            raise InputError(f"StitchTrainer.push_to_hub needs args.hub_model_id as 'namespace/name', got {repo_id!r}.")
        self._stitched().model_card()  # fails early (InputError) if the seed's or an expert's Hub id is unknown
        if not self.is_world_process_zero():
            return None
        with tempfile.TemporaryDirectory() as tmp:
            self._save(tmp)
            self.stitch_card(tmp, datasets=kwargs.get("dataset"))
            return push_folder(tmp, repo_id, repo_type="model", token=token or self.args.hub_token,
                               private=self.args.hub_private_repo if private is None else private,
                               commit_message=commit_message, revision=revision or self.args.hub_revision)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        stitched = self.accelerator.unwrap_model(model, keep_torch_compile=False) if model is not None else self._stitched()
        stitched.load_stitch_weights(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        self._stitched().load_stitch_weights(self.state.best_model_checkpoint)


def _blocks(dataset: Any, name: str, args: Any, tokenizer: Any) -> Any:
    """Packed blocks as they are; text in ``args.dataset_text_field`` tokenized and packed; else one clear error."""
    if dataset is None:
        return None
    if isinstance(dataset, dict):
        return {key: _blocks(value, f"{name}[{key!r}]", args, tokenizer) for key, value in dataset.items()}
    columns = getattr(dataset, "column_names", None)
    if columns is None or "input_ids" in columns:  # an iterable dataset, a list of blocks, or packed blocks
        return dataset
    field_name = getattr(args, "dataset_text_field", "text")
    if field_name not in columns:
        raise InputError(
            f"{name} has neither packed blocks (an 'input_ids' column) nor the text column {field_name!r} "
            f"(StitchTrainingConfig.dataset_text_field); its columns are {columns}. Set dataset_text_field to the "
            "column that holds the text, or pack the texts with hf_ext.lm.pack_texts."
        )
    if tokenizer is None:
        raise InputError(f"{name} holds text in {field_name!r}: pass processing_class (the seed's tokenizer) so StitchTrainer can pack it.")
    from hf_ext.lm import pack_texts

    return pack_texts(tokenizer, dataset, getattr(args, "max_length", 1024), text_column=field_name)
