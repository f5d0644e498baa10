"""LESS warmup: LoRA on a random 5% of the pool, one checkpoint per epoch (``job: less_warmup``).

Paper settings (the config's defaults): LoRA r 128, α 512, dropout 0.1 on q/k/v/o; lr 2e-5,
linear decay, 3% warmup, 4 epochs, a checkpoint per epoch. Training is PEFT + the standard
``transformers.Trainer``; the loss is on response tokens only (prompt labels are -100, the
same tokenisation the gradient featurizer uses). Each checkpoint also gets
``adam_state_by_name.safetensors`` (m and v keyed by parameter name), and the learning rate is
logged every step so matching can weight checkpoints by each epoch's mean LR.

>>> from hf_ext.select.less.warmup import LessWarmupConfig, run_less_warmup
>>> run_less_warmup(LessWarmupConfig(model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct",
...                                  dataset="pool.jsonl", output_dir="outputs/less/warmup"))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
from transformers import TrainerCallback, TrainingArguments

from ...errors import InputError
from ...jobs import check_job_output, job_output, refuse_old_hub_keys
from .formatting import TULU_TEMPLATE, ExampleFormat, tokenize_batch
from .gradients import check_lora_targets
from .optimizer_state import save_adam_state_by_name


@dataclass
class LessWarmupConfig(TrainingArguments):
    """``TrainingArguments`` with LESS's warmup defaults plus the pool, the sample and LoRA settings.

    Every other ``TrainingArguments`` field keeps its meaning and default; the entries below are the fields
    added here and those whose default is LESS's.

    Args:
        model_name_or_path (`str`, *optional*, defaults to `"HuggingFaceTB/SmolLM2-135M-Instruct"`):
            Base causal LM (Hub id or folder) to warm up.
        dataset (`str`, *optional*, defaults to `"dolly_alpagasus_3k"`):
            Pool: bundled name, local file/folder or Hub id.
        dataset_split (`str`, *optional*, defaults to `"train"`):
            Split of the pool.
        instruction_column (`str`, *optional*, defaults to `"instruction"`):
            Column with the instruction.
        input_column (`str` or `None`, *optional*, defaults to `"input"`):
            Column with the optional input (null if none).
        response_column (`str`, *optional*, defaults to `"output"`):
            Column with the response (the only tokens with loss).
        prompt_template (`str`, *optional*, defaults to `TULU_TEMPLATE`):
            Prompt template with {prompt}; LESS uses Tulu's.
        max_length (`int`, *optional*, defaults to `512`):
            Truncate prompt + response to this many tokens.
        warmup_fraction (`float`, *optional*, defaults to `0.05`):
            Fraction of the pool sampled for the warmup (LESS: 5%).
        lora_r (`int`, *optional*, defaults to `128`):
            LoRA rank (LESS: 128).
        lora_alpha (`int`, *optional*, defaults to `512`):
            LoRA alpha (LESS: 512).
        lora_dropout (`float`, *optional*, defaults to `0.1`):
            LoRA dropout (LESS: 0.1).
        lora_target_modules (`list[str]`, *optional*, defaults to `["q_proj", "k_proj", "v_proj", "o_proj"]`):
            Modules that get LoRA (LESS: q/k/v/o).
        output_dir (`str` or `None`, *optional*, defaults to `"outputs/less/warmup"`):
            Where checkpoint-* folders go.
        learning_rate (`float`, *optional*, defaults to `2e-5`):
            Peak learning rate (LESS: 2e-5).
        lr_scheduler_type (`str`, *optional*, defaults to `"linear"`):
            LR schedule (LESS: linear).
        warmup_steps (`float`, *optional*, defaults to `0.03`):
            LR warmup; a float < 1 is a fraction of steps (LESS: 3%).
        num_train_epochs (`float`, *optional*, defaults to `4.0`):
            Epochs (LESS: 4, one checkpoint each).
        save_strategy (`str`, *optional*, defaults to `"epoch"`):
            Checkpoint once per epoch (LESS needs one per epoch).
        logging_steps (`float`, *optional*, defaults to `1`):
            Log every step: matching weights epochs by their mean LR.
        per_device_train_batch_size (`int`, *optional*, defaults to `1`):
            Batch size per device.
        gradient_accumulation_steps (`int`, *optional*, defaults to `32`):
            Gradient accumulation (LESS: 32 → batch 128 on 4 GPUs).
        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            Replace an existing output folder that hf_ext did not write (folders of earlier hf_ext runs are
            replaced without it).
        hub_endpoint (`str` or `None`, *optional*, defaults to `None`):
            Hub endpoint URL (default: HF_ENDPOINT or huggingface.co).
    """

    model_name_or_path: str = field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "Base causal LM (Hub id or folder) to warm up."}
    )
    dataset: str = field(default="dolly_alpagasus_3k", metadata={"help": "Pool: bundled name, local file/folder or Hub id."})
    dataset_split: str = field(default="train", metadata={"help": "Split of the pool."})
    instruction_column: str = field(default="instruction", metadata={"help": "Column with the instruction."})
    input_column: Optional[str] = field(default="input", metadata={"help": "Column with the optional input (null if none)."})
    response_column: str = field(default="output", metadata={"help": "Column with the response (the only tokens with loss)."})
    prompt_template: str = field(default=TULU_TEMPLATE, metadata={"help": "Prompt template with {prompt}; LESS uses Tulu's."})
    max_length: int = field(default=512, metadata={"help": "Truncate prompt + response to this many tokens."})
    warmup_fraction: float = field(default=0.05, metadata={"help": "Fraction of the pool sampled for the warmup (LESS: 5%)."})
    lora_r: int = field(default=128, metadata={"help": "LoRA rank (LESS: 128)."})
    lora_alpha: int = field(default=512, metadata={"help": "LoRA alpha (LESS: 512)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout (LESS: 0.1)."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], metadata={"help": "Modules that get LoRA (LESS: q/k/v/o)."}
    )
    # TrainingArguments fields with LESS's values as defaults.
    output_dir: Optional[str] = field(default="outputs/less/warmup", metadata={"help": "Where checkpoint-* folders go."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate (LESS: 2e-5)."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "LR schedule (LESS: linear)."})
    warmup_steps: float = field(default=0.03, metadata={"help": "LR warmup; a float < 1 is a fraction of steps (LESS: 3%)."})
    num_train_epochs: float = field(default=4.0, metadata={"help": "Epochs (LESS: 4, one checkpoint each)."})
    save_strategy: str = field(default="epoch", metadata={"help": "Checkpoint once per epoch (LESS needs one per epoch)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every step: matching weights epochs by their mean LR."})
    per_device_train_batch_size: int = field(default=1, metadata={"help": "Batch size per device."})
    gradient_accumulation_steps: int = field(default=32, metadata={"help": "Gradient accumulation (LESS: 32 → batch 128 on 4 GPUs)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing output folder that hf_ext did not write "
                                                                         "(folders of earlier hf_ext runs are replaced without it)."})
    hub_endpoint: Optional[str] = field(default=None, metadata={"help": "Hub endpoint URL (default: HF_ENDPOINT or huggingface.co)."})

    check_recipe: ClassVar = staticmethod(refuse_old_hub_keys)

    def __post_init__(self) -> None:
        if not 0 < self.warmup_fraction <= 1:
            raise InputError(f"warmup_fraction must be in (0, 1], got {self.warmup_fraction} (LESS: 0.05).")
        if self.save_strategy != "epoch":  # a str enum after super().__post_init__; compare before
            raise InputError(f"save_strategy must be 'epoch' (LESS takes one checkpoint per epoch), got {self.save_strategy!r}.")
        super().__post_init__()
        check_job_output(self)  # output folder and Hub settings, before any work

    @property
    def example_format(self) -> ExampleFormat:
        return ExampleFormat(self.instruction_column, self.input_column, self.response_column, self.prompt_template, self.max_length)


class SaveAdamStateByNameCallback(TrainerCallback):
    """After each save, write the checkpoint's Adam moments keyed by parameter name."""

    def on_save(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.is_world_process_zero and model is not None and optimizer is not None:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                save_adam_state_by_name(model, optimizer, folder)


def warmup_sample(num_rows: int, fraction: float, seed: int) -> list[int]:
    """The seeded random warmup subset: round(fraction * rows) indices (at least 1), in pool order.

    Args:
        num_rows (`int`):
            Number of rows in the pool.
        fraction (`float`):
            Share of the pool to sample, in (0, 1].
        seed (`int`):
            Seed of the draw (the config's `seed`).
    """
    k = max(1, int(round(num_rows * fraction)))
    return np.sort(np.random.default_rng(seed).choice(num_rows, size=k, replace=False)).tolist()


def build_lora_model(model, config: LessWarmupConfig):
    """Wrap `model` with LoRA on `lora_target_modules` (checked first: a clear error names what exists).

    Args:
        model (`transformers.PreTrainedModel`):
            The base causal LM.
        config (`LessWarmupConfig`):
            Supplies `lora_r`, `lora_alpha`, `lora_dropout` and `lora_target_modules`.
    """
    from peft import LoraConfig, get_peft_model

    check_lora_targets(model, config.lora_target_modules)
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules), task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def run_less_warmup(config: LessWarmupConfig, *, model=None, tokenizer=None, dataset=None) -> dict[str, Any]:
    """Warm up LoRA on a random `warmup_fraction` of the pool; returns metrics (also ``metrics.json``).

    The checkpoints, tokenizer and metrics are written to a temporary folder that replaces
    ``output_dir`` when the warmup finished (:func:`hf_ext.jobs.job_output`), then pushed with ``push_to_hub``.

    `model`, `tokenizer` and `dataset` may be passed as objects (tests, notebooks); otherwise
    they load from `model_name_or_path` and `dataset`.

    Args:
        config (`LessWarmupConfig`):
            The warmup's training, data and LoRA settings.
        model (`transformers.PreTrainedModel` or `None`, *optional*, defaults to `None`):
            Base causal LM to wrap with LoRA; `None` loads `config.model_name_or_path` in float32.
        tokenizer (`PreTrainedTokenizerBase` or `None`, *optional*, defaults to `None`):
            Its tokenizer (gets the eos token as pad token when it has none); `None` loads the model's.
        dataset (`datasets.Dataset` or `None`, *optional*, defaults to `None`):
            The pool; `None` loads `config.dataset` (split `config.dataset_split`).
    """
    import torch
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer

    from ...data import load_pool
    from ...models import load_model, load_tokenizer

    if dataset is None:
        dataset, _ = load_pool(config.dataset, split=config.dataset_split)
    fmt = config.example_format
    fmt.check_columns(dataset.column_names, "The LESS warmup")
    tokenizer = tokenizer or load_tokenizer(config.model_name_or_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model if model is not None else load_model(config.model_name_or_path, AutoModelForCausalLM, dtype=torch.float32)
    model = build_lora_model(model, config)

    idx = warmup_sample(len(dataset), config.warmup_fraction, config.seed)
    train = dataset.select(idx).map(
        lambda b: tokenize_batch(tokenizer, fmt, b), batched=True, remove_columns=dataset.column_names, desc="Tokenizing warmup set"
    )
    train = train.filter(lambda ex: any(t != -100 for t in ex["labels"]), desc="Dropping rows without response tokens")
    with job_output(config, repo_type="model", writer="less_warmup", commit_message="hf_ext: LESS warmup checkpoints") as result:
        args = copy.copy(config)  # the Trainer writes into the temporary folder and never pushes: job_output does, last
        args.output_dir, args.push_to_hub = str(result.dir), False
        trainer = Trainer(
            model=model, args=args, train_dataset=train, processing_class=tokenizer,
            data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True),
            callbacks=[SaveAdamStateByNameCallback()],
        )
        train_result = trainer.train()
        checkpoints = sorted(result.dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        tokenizer.save_pretrained(result.dir)
        result.metrics = {
            "pool_size": len(dataset),
            "warmup_size": len(idx),
            "warmup_trained_rows": len(train),
            "warmup_indices": idx,
            "train_loss": train_result.training_loss,
            "checkpoints": [str(Path(config.output_dir) / c.name) for c in checkpoints],
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        }
        result.card = warmup_card(config, result.metrics, trainer.state.log_history)
    return result.metrics


def warmup_card(config: LessWarmupConfig, metrics: dict[str, Any], log_history: list[dict[str, Any]]):
    """The warmup folder's root card: what was trained on what, each checkpoint, how LESS uses them.

    Args:
        config (`LessWarmupConfig`):
            The warmup's settings.
        metrics (`dict[str, Any]`):
            The run's metrics (``warmup_size``, ``pool_size``, ``checkpoints``, ``train_loss``...).
        log_history (`list[dict[str, Any]]`):
            The Trainer's ``state.log_history`` (the loss at each checkpoint's step is read from it).
    """
    from ...hub.cards import card_hub_id, markdown_table, render_model_card

    base, dataset = card_hub_id(config.model_name_or_path), card_hub_id(config.dataset, "datasets")
    card_data = {"library_name": "peft", "tags": ["hf-ext", "less", "lora", "data-selection"],
                 **({"base_model": base, "base_model_relation": "adapter"} if base else {}), **({"datasets": [dataset]} if dataset else {})}
    losses = {int(h["step"]): h["loss"] for h in log_history if "loss" in h and "step" in h}
    rows = []
    for path in metrics["checkpoints"]:
        step = int(Path(path).name.split("-")[-1])
        logged = [s for s in losses if s <= step]
        rows.append([f"`{Path(path).name}/`", step, losses[max(logged)] if logged else "n/a"])
    usage = (f"```yaml\njob: less_select\nwarmup_dir: {config.output_dir}   # this folder (a local copy of it, when it came from the Hub)\n"
             f"model_name_or_path: {base or config.model_name_or_path}\n```")
    return render_model_card(
        "model_card.md.j2", card_data, title="LESS warmup checkpoints",
        summary=(f"LoRA warmup for LESS (Xia et al., arXiv 2402.04333): rank {config.lora_r} (α {config.lora_alpha}) on "
                 f"{', '.join(config.lora_target_modules)}, trained on a random {config.warmup_fraction:.0%} of the pool "
                 f"({metrics['warmup_size']} of {metrics['pool_size']} rows, {metrics['warmup_trained_rows']} with response tokens) "
                 f"for {config.num_train_epochs:g} epochs at learning rate {config.learning_rate:g}; mean training loss "
                 f"{metrics['train_loss']:.4f}. Each checkpoint holds the adapter and Adam's moments by parameter name, "
                 f"which LESS's gradient features read."),
        base_model=base, base_model_relation="adapter",
        sections=[{"title": "Checkpoints", "body": markdown_table(["checkpoint", "step", "last logged loss"], rows)},
                  {"title": "Use", "body": usage}],
    )
