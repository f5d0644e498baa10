"""Critic-RM (Yu et al. 2024, arXiv 2411.16646): one causal LM that writes a critique and
reads a scalar reward after it.

The model is a causal LM (its LM head writes critiques) plus a scalar reward head ``score``
(a bias-free linear layer on the final hidden state, as in transformers' sequence
classifiers). A training sequence is the critique prompt of (prompt, response) — the chat
template of :func:`hf_ext.critique.prompts.critique_messages` — followed by a critique from
stage 1 and EOS. The reward is read at the last non-pad token, i.e. after the critique. The
loss is

    λ(t) · L_critique + (1 − λ(t)) · L_BT

where L_critique is the next-token loss on the critique tokens only (chosen and rejected
sequences), L_BT is TRL's RewardTrainer loss (−log σ(r_c − r_r − margin) plus
``center_rewards_coefficient · mean((r_c + r_r)²)``), and t = step / max_steps goes from 0
to 1. λ decays from ``critique_weight_start`` to ``critique_weight_end``; the default is a
cosine decay 0.9 → 0.1 (critique-heavy first, reward-heavy last, as the paper describes; its
exact schedule is not published, so all three shapes are configurable).

Inference: :meth:`CriticRewardModel.score` generates m critiques with the LM head, reads the
reward after each, and averages; with ``num_critiques=0`` it is the fast path that reads the
reward right after the critique prompt, without generating.

Example:
    >>> from hf_ext.testing import tiny_llama, tiny_tokenizer
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"prompt": ["2+2?"] * 4, "chosen": ["4"] * 4, "rejected": ["5"] * 4,
    ...     "chosen_critique": ["Correct. Score: 9"] * 4, "rejected_critique": ["Wrong. Score: 2"] * 4})
    >>> args = CriticRMConfig("/tmp/critic-rm-doc", max_steps=1, per_device_train_batch_size=2,
    ...     report_to="none", bf16=False, activation_checkpointing=False, use_cpu=True)
    >>> trainer = CriticRMTrainer(tiny_llama(), args, train_dataset=ds, processing_class=tiny_tokenizer())
    >>> 0.0 < trainer.critique_weight() <= 0.9
    True
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate.utils import is_peft_model
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, set_seed
from trl import RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference
from trl.trainer.utils import pad

from hf_ext.critique.prompts import CRITIQUE_SYSTEM, CRITIQUE_USER, critique_messages
from hf_ext.errors import InputError
from hf_ext.outputs import SafeResumeMixin

from .reward_common import (
    RewardModelConfig,
    check_packed_attention,
    last_token_index,
    model_inputs,
    pack_sequences,
    packed_sums,
    real_tokens,
    reward_index,
    unwrap,
    use_packed_sdpa,
)

REWARD_HEAD = "score"  # same name as transformers' sequence-classification heads
HEAD_FILE = "reward_head.safetensors"


@dataclass
class CriticRMConfig(RewardModelConfig):
    """Configuration of :class:`CriticRMTrainer`: TRL's RewardConfig plus the critique loss.

    The λ schedule weighs the critique loss against the Bradley–Terry loss; see the module
    docstring. Everything else (margin column, ``center_rewards_coefficient``, ``max_length``,
    PEFT, gradient checkpointing) behaves as in TRL's RewardTrainer.
    """

    critique_weight_schedule: Literal["constant", "linear", "cosine"] = field(
        default="cosine",
        metadata={"help": "Shape of λ(t), the weight of the critique loss over training: constant (λ = start), "
                          "linear or cosine decay from critique_weight_start to critique_weight_end."},
    )
    critique_weight_start: float = field(
        default=0.9, metadata={"help": "λ at the first step (critique-heavy). Use 0 for a pure Bradley–Terry reward model."}
    )
    critique_weight_end: float = field(default=0.1, metadata={"help": "λ at the last step (reward-heavy)."})
    prompt_column: str = field(default="prompt", metadata={"help": "Column with the prompt text."})
    chosen_critique_column: str = field(default="chosen_critique", metadata={"help": "Column with the critique of the chosen response."})
    rejected_critique_column: str = field(default="rejected_critique", metadata={"help": "Column with the critique of the rejected response."})
    fast_path_weight: float = field(
        default=0.0,
        metadata={"help": "Weight w of a second Bradley–Terry term on the reward read right after the critique prompt "
                          "(before the critique), which trains the no-generation fast path: L_BT = (1 − w)·BT(after critique) "
                          "+ w·BT(before critique). 0 is the paper's loss; rows without critiques are unaffected."},
    )
    max_critique_length: int | None = field(
        default=256, metadata={"help": "Critiques are cut to this many tokens before EOS (None: no cut)."}
    )

    def __post_init__(self) -> None:
        if self.ddp_find_unused_parameters is None:
            # Every trainable parameter gets a gradient (the LM head through the critique loss or a
            # zero-weighted term), and the reward head runs in a hook that DDP's search for unused
            # parameters cannot see from the model outputs: that search would mark it ready twice.
            self.ddp_find_unused_parameters = False
        if self.bf16 is None and not self.fp16:
            # TRL turns an unset bf16 on, which fails on machines without bf16 support (CPU):
            # unset means "bf16 where the GPU supports it", so one recipe parses everywhere.
            self.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()) and not self.use_cpu
        super().__post_init__()
        for name in ("critique_weight_start", "critique_weight_end", "fast_path_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be in [0, 1] (it weighs the critique loss against the reward loss), got {value}.")
        if self.critique_weight_schedule not in ("constant", "linear", "cosine"):
            raise InputError(f"critique_weight_schedule must be constant, linear or cosine, got {self.critique_weight_schedule!r}.")


def critique_weight(schedule: str, start: float, end: float, progress: float) -> float:
    """λ at training progress in [0, 1]: constant = start; linear and cosine go start → end."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return start
    if schedule == "linear":
        return start + (end - start) * progress
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- model


def attach_reward_head(model: PreTrainedModel) -> PreTrainedModel:
    """Give a causal LM a scalar reward head ``score`` (kept if it already has a 1-output one)."""
    if not hasattr(model, "get_output_embeddings") or model.get_output_embeddings() is None:
        raise InputError(
            f"Critic-RM needs a causal LM with an LM head to write critiques, got {type(model).__name__}. "
            "Pass an AutoModelForCausalLM (or its Hub id), not a sequence-classification model."
        )
    head = getattr(model, REWARD_HEAD, None)
    if head is not None:
        if not isinstance(head, nn.Linear) or head.out_features != 1:
            out = getattr(head, "out_features", "?")
            raise InputError(
                f"The model's reward head `{REWARD_HEAD}` has {out} outputs (num_labels={out}), but a reward model needs "
                "num_labels=1: one scalar reward per sequence. Remove the head or build it with one output."
            )
        return model
    hidden = model.config.get_text_config().hidden_size
    param = model.get_output_embeddings().weight
    head = nn.Linear(hidden, 1, bias=False).to(device=param.device, dtype=param.dtype)
    std = getattr(model.config.get_text_config(), "initializer_range", 0.02)
    nn.init.normal_(head.weight, std=std)
    model.add_module(REWARD_HEAD, head)
    model.config.num_labels = 1
    model.config.critic_rm = {"reward_head": REWARD_HEAD}  # marks checkpoints that carry the head
    return model


class _HiddenTap:
    """Forward hook on the decoder: applies the reward head to its final (normed) hidden states.

    Running the head inside the model's forward keeps DDP's bookkeeping right (a parameter used
    outside ``forward`` is "marked ready twice"); the head costs one dot product per position."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.rewards: torch.Tensor | None = None  # (batch, length) reward at every position
        self.last: torch.Tensor | None = None  # the previous forward's, for a second read-out

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        head = getattr(unwrap(self.model), REWARD_HEAD)
        weight = head.weight if hasattr(head, "weight") else next(head.parameters())
        self.rewards = head(hidden.to(weight.dtype)).squeeze(-1).float()


def forward_rewards(model: Any, tap: _HiddenTap, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    logits_to_keep: int | torch.Tensor = 1, *, position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
    """One forward pass of a right-padded batch (``attention_mask``) or a packed one
    (``position_ids``, see :mod:`trainers.reward_common`): the reward at each sequence's last
    token, and the LM outputs with logits only at ``logits_to_keep`` (the last n positions, or a
    tensor of positions), so reward-only batches skip the vocabulary head."""
    batch = {"input_ids": input_ids, **({"attention_mask": attention_mask} if attention_mask is not None else {"position_ids": position_ids})}
    outputs = model(**model_inputs(batch), logits_to_keep=logits_to_keep)
    all_rewards = tap.rewards
    tap.rewards, tap.last = None, all_rewards
    return all_rewards.reshape(-1)[reward_index(batch)], outputs


def critique_context(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str) -> list[int]:
    """Token ids of the critique prompt for (prompt, response), ready for the critique."""
    if getattr(tokenizer, "chat_template", None):
        # No worked examples: the trained model has learnt the format, and they would cost tokens on every row.
        messages = critique_messages(prompt, response, examples=False)
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    text = CRITIQUE_SYSTEM + "\n\n" + CRITIQUE_USER.format(prompt=prompt, response=response) + "\n\n"
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def critique_tokens(tokenizer: PreTrainedTokenizerBase, critique: str, max_tokens: int | None = None) -> list[int]:
    ids = tokenizer(critique, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    return ids + [tokenizer.eos_token_id]


# --------------------------------------------------------------------------- data


@dataclass
class DataCollatorForCritiquePreference(DataCollatorForPreference):
    """TRL's preference collator plus ``critique_mask`` (1 on critique tokens), padded like
    ``input_ids``: chosen rows first, then rejected rows. With ``padding_free`` (TRL's name) all
    of them are concatenated into one row instead, with ``position_ids`` restarting per sequence
    and no ``attention_mask``."""

    padding_free: bool = False

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        masks = []
        for side in ("chosen", "rejected"):
            for example in examples:
                mask = example.get(f"{side}_critique_mask")
                masks.append(torch.tensor(mask if mask is not None else [0] * len(example[f"{side}_ids"])))
        if self.padding_free:
            output = pack_sequences([torch.tensor(e[f"{side}_ids"]) for side in ("chosen", "rejected") for e in examples])
            output["critique_mask"] = torch.cat(masks)[None]
            if "margin" in examples[0]:
                output["margin"] = torch.tensor([e["margin"] for e in examples], dtype=torch.float)
            return output
        output = super().torch_call(examples)
        output["critique_mask"] = pad(masks, padding_value=0, padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of)
        return output


class CriticRMTrainer(SafeResumeMixin, RewardTrainer):
    """TRL's RewardTrainer with a critique-writing LM head (Critic-RM). See the module docstring.

    Args:
        model: a causal LM id/path or instance (a reward head ``score`` is added), or a checkpoint
            saved by this trainer.
        args: a :class:`CriticRMConfig`.
        train_dataset: rows with ``prompt``, ``chosen``, ``rejected``, ``chosen_critique``,
            ``rejected_critique`` (and optionally ``margin``), or already tokenized rows with
            ``chosen_ids``, ``rejected_ids``, ``chosen_critique_mask``, ``rejected_critique_mask``.
        eval_dataset: the same; critique columns may be missing (the reward is then read right
            after the critique prompt: the fast path).
        peft_config: a PEFT config; ``score`` is added to its ``modules_to_save`` so the reward
            head trains and is saved with the adapter.
        Other arguments as in ``trl.RewardTrainer``.
    """

    _tag_names = ["trl", "reward-trainer", "critic-rm", "hf_ext"]
    _name = "Critic-RM"

    def __init__(self, model: Any, args: CriticRMConfig | None = None, data_collator: Any = None, train_dataset: Any = None,
                 eval_dataset: Any = None, processing_class: PreTrainedTokenizerBase | None = None, peft_config: Any = None,
                 **kwargs: Any) -> None:
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            args = CriticRMConfig(f"{str(name).rstrip('/').split('/')[-1]}-CriticRM")
        if not isinstance(args, CriticRMConfig):
            raise InputError(f"CriticRMTrainer needs a CriticRMConfig, got {type(args).__name__}.")
        set_seed(args.seed)  # as TRL does before it adds a random head: reproducible head init
        if isinstance(model, (str, os.PathLike)):
            model = load_critic_lm(str(model), **(args.model_init_kwargs or {}) if isinstance(args.model_init_kwargs, dict) else {})
        elif not is_peft_model(model):
            model = attach_reward_head(model)
        if peft_config is not None:
            peft_config = _with_reward_head_saved(peft_config)
        if processing_class is None:
            from hf_ext.models import load_tokenizer

            processing_class = load_tokenizer(getattr(model.config, "_name_or_path", None) or str(model))
        if data_collator is None:
            # TRL's rule: no pad token → EOS pads (RewardModelConfig refuses TRL's deprecated args.pad_token)
            processing_class.pad_token = processing_class.pad_token or processing_class.eos_token
            data_collator = DataCollatorForCritiquePreference(
                pad_token_id=processing_class.pad_token_id, pad_to_multiple_of=args.pad_to_multiple_of, padding_free=args.padding_free
            )
        super().__init__(model, args, data_collator=data_collator, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, peft_config=peft_config, **kwargs)
        if args.padding_free:
            use_packed_sdpa(self.model)
            check_packed_attention(self.model)
        self._tap = _HiddenTap(self.model)
        unwrap(self.model).get_decoder().register_forward_hook(self._tap)
        if is_peft_model(self.model):  # a model built from a config saves base_model_name_or_path=None
            name = getattr(unwrap(self.model).config, "_name_or_path", None) or None
            for adapter_config in self.model.peft_config.values():
                adapter_config.base_model_name_or_path = adapter_config.base_model_name_or_path or name

    # ---- data
    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", "margin", "chosen_critique_mask", "rejected_critique_mask"]

    def _prepare_dataset(self, dataset: Any, processing_class: PreTrainedTokenizerBase, args: CriticRMConfig, dataset_name: str) -> Any:
        columns = list(dataset.column_names or [])
        if "chosen_ids" in columns and "rejected_ids" in columns:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        needed = [args.prompt_column, "chosen", "rejected"]
        missing = [c for c in needed if c not in columns]
        critique_cols = [args.chosen_critique_column, args.rejected_critique_column]
        has_critiques = all(c in columns for c in critique_cols)
        if dataset_name == "train" and not has_critiques:
            missing += [c for c in critique_cols if c not in columns]
        if missing:
            raise InputError(
                f"The {dataset_name} dataset for CriticRMTrainer is missing column(s) {missing}; it has {columns}. "
                "Generate critiques with hf_ext.critique.generate_critiques + consistency_filter + to_training_pairs, "
                "or rename your columns (prompt_column / chosen_critique_column / rejected_critique_column)."
            )

        def tokenize(example: dict[str, Any]) -> dict[str, Any]:
            out = {}
            for side, critique_col in zip(("chosen", "rejected"), critique_cols):
                context = critique_context(processing_class, example[args.prompt_column], example[side])
                critique = critique_tokens(processing_class, example[critique_col], args.max_critique_length) if has_critiques else []
                out[f"{side}_ids"] = context + critique
                out[f"{side}_critique_mask"] = [0] * len(context) + [1] * len(critique)
            return out

        keep = [c for c in ("margin",) if c in columns]
        dataset = dataset.map(tokenize, remove_columns=[c for c in columns if c not in keep], desc=f"Tokenizing {dataset_name} critiques")
        before = len(dataset)
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if len(dataset) < before:
            import logging

            logging.getLogger(__name__).warning(
                "%d of %d %s rows are longer than max_length=%s and were dropped (as TRL's RewardTrainer does).",
                before - len(dataset), before, dataset_name, args.max_length)
        return dataset

    # ---- loss
    def critique_weight(self) -> float:
        """λ at the current step."""
        max_steps = max(1, self.state.max_steps or self.args.max_steps or 1)
        return critique_weight(self.args.critique_weight_schedule, self.args.critique_weight_start,
                               self.args.critique_weight_end, self.state.global_step / max_steps)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        lam = self.critique_weight()
        critique_mask, input_ids = inputs["critique_mask"], inputs["input_ids"]
        packed = "attention_mask" not in inputs  # padding_free: one row, position_ids restart per sequence
        has_critique = bool(critique_mask.any())
        keep: int | torch.Tensor = 1
        if has_critique and packed:  # LM logits only where the next token is a critique token
            keep = torch.nonzero(critique_mask[0, 1:]).squeeze(-1)
        elif has_critique:  # LM logits only from the earliest critique token on: the vocabulary head is costly
            first = int(critique_mask.float().argmax(-1)[critique_mask.any(-1)].min())
            keep = input_ids.shape[1] - first + 1
        rewards, outputs = forward_rewards(model, self._tap, input_ids, inputs.get("attention_mask"), keep,
                                           position_ids=inputs.get("position_ids"))
        all_rewards = self._tap.last.reshape(-1)
        rewards_chosen, rewards_rejected = torch.chunk(rewards, chunks=2)
        bt_loss = self._bradley_terry(rewards_chosen, rewards_rejected, inputs.get("margin"))
        if self.args.fast_path_weight > 0 and has_critique:
            # Reward at the last token before the critique (the last token itself for rows without one).
            counts = packed_sums(critique_mask, inputs["position_ids"]) if packed else critique_mask.sum(-1)
            fast = all_rewards[reward_index(inputs) - counts]
            w = self.args.fast_path_weight
            bt_loss = (1 - w) * bt_loss + w * self._bradley_terry(*torch.chunk(fast, chunks=2), inputs.get("margin"))
        self._tap.last = None

        if has_critique and packed:
            labels = input_ids[0, keep + 1]
            critique_loss = F.cross_entropy(outputs.logits[0].float(), labels)
        elif has_critique:
            logits = outputs.logits[:, :-1].float()  # position p predicts token p + 1
            labels = input_ids[:, -keep + 1 :].masked_fill(critique_mask[:, -keep + 1 :] == 0, -100)
            critique_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        else:  # keep the LM head in the graph (DDP waits for a gradient of every trainable parameter)
            critique_loss = 0.0 * outputs.logits.sum()
        loss = lam * critique_loss + (1.0 - lam) * bt_loss if lam > 0 else bt_loss

        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(real_tokens(inputs)).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        with torch.no_grad():
            gather = lambda t: self.accelerator.gather_for_metrics(t.detach().float().reshape(1)).mean().item()  # noqa: E731
            all_rewards = self.accelerator.gather(rewards.detach())
            self._metrics[mode]["min_reward"].append(all_rewards.min().item())
            self._metrics[mode]["mean_reward"].append(all_rewards.mean().item())
            self._metrics[mode]["max_reward"].append(all_rewards.max().item())
            self._metrics[mode]["accuracy"].append(gather((rewards_chosen > rewards_rejected).float().mean()))
            self._metrics[mode]["margin"].append(gather((rewards_chosen - rewards_rejected).mean()))
            self._metrics[mode]["reward_loss"].append(gather(bt_loss))
            self._metrics[mode]["critique_loss"].append(gather(critique_loss))
            self._metrics[mode]["critique_tokens"].append(gather(critique_mask.sum()))
            self._metrics[mode]["critique_weight"].append(lam)
        if return_outputs:
            return loss, {"logits": torch.stack([rewards_chosen, rewards_rejected], dim=1)}
        return loss

    def _bradley_terry(self, rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor, margin: torch.Tensor | None) -> torch.Tensor:
        """Exactly trl.RewardTrainer.compute_loss: −log σ(r_c − r_r − margin) + centering."""
        if margin is not None:
            loss = -F.logsigmoid(rewards_chosen - rewards_rejected - margin).mean()
        else:
            loss = -F.logsigmoid(rewards_chosen - rewards_rejected).mean()
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)
        return loss

    # ---- inference
    def score(self, prompt: str, response: str, num_critiques: int = 1, **generate_kwargs: Any) -> float:
        """Reward of `response` to `prompt`: mean over `num_critiques` generated critiques
        (0 = fast path without generation)."""
        scorer = CriticRewardModel(self.model, self.processing_class)
        return scorer.score(prompt, response, num_critiques=num_critiques, **generate_kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            save_reward_head(self.model, output_dir)


def _with_reward_head_saved(peft_config: Any) -> Any:
    """PEFT pitfall: a head that is not in ``modules_to_save`` stays frozen at its random init
    and is missing from the saved adapter. Add ``score`` (on a copy of the config)."""
    import copy

    config = copy.deepcopy(peft_config)
    modules = list(config.modules_to_save or [])
    if REWARD_HEAD not in modules:
        modules.append(REWARD_HEAD)
    config.modules_to_save = modules
    return config


def save_reward_head(model: Any, output_dir: str | os.PathLike) -> Path:
    """Also write the reward head alone (``reward_head.safetensors``), so a checkpoint loads
    with :func:`load_critic_lm` whatever wrapper saved it."""
    from safetensors.torch import save_file

    head = getattr(unwrap(model), REWARD_HEAD)
    weight = head.modules_to_save[head.active_adapter].weight if hasattr(head, "modules_to_save") else head.weight
    path = Path(output_dir) / HEAD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"{REWARD_HEAD}.weight": weight.detach().float().cpu().contiguous()}, str(path))
    return path


def load_critic_lm(path: str, *, new_head: bool = True, **model_kwargs: Any) -> Any:
    """Load a causal LM with a reward head, whichever way the head was saved.

    Args:
        path: a Hub id or folder: a plain causal LM, a full Critic-RM checkpoint
            (``trainer.save_model`` or ``model.save_pretrained``: the head is ``score.weight`` in
            the model's safetensors and/or ``reward_head.safetensors``), or a PEFT adapter folder
            (the head in the adapter's ``modules_to_save``, or ``reward_head.safetensors``).
        new_head (`bool`, defaults to `True`): what to do with a plain causal LM, which has no
            reward head: add a freshly initialised one (to train it), or, with `False`, refuse
            (inference: a random head scores noise).
        model_kwargs: passed to ``from_pretrained`` (``dtype`` defaults to float32).

    Raises:
        InputError: a Critic-RM checkpoint or adapter whose head is in none of its files, a head
            of the wrong shape, or a plain causal LM with ``new_head=False``.
    """
    from hf_ext.models import load_model, resolve_model

    folder = Path(resolve_model(path))
    model_kwargs.setdefault("dtype", torch.float32)
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        from peft import PeftModel

        adapter_config = json.loads(adapter.read_text())
        base_id = adapter_config["base_model_name_or_path"]
        if base_id is None:
            raise InputError(f"The adapter in {str(folder)!r} does not name its base model (base_model_name_or_path is null). "
                             "Set it in adapter_config.json to the base model's Hub id or path.")
        in_adapter = REWARD_HEAD in (adapter_config.get("modules_to_save") or []) and _adapter_has_head(folder)
        head = None if in_adapter else _saved_head(folder)
        if not in_adapter and head is None:
            raise InputError(
                f"The adapter in {str(folder)!r} carries no reward head: `{REWARD_HEAD}` is not among the saved "
                f"modules_to_save and there is no {HEAD_FILE}, so its reward would come from a random head. Save it with "
                f"CriticRMTrainer.save_model (or train with `{REWARD_HEAD}` in the LoRA config's modules_to_save).")
        base = attach_reward_head(load_model(base_id, auto_class=AutoModelForCausalLM, **model_kwargs))
        if head is not None:
            _copy_head(base, head, folder)
        return PeftModel.from_pretrained(base, str(folder))
    model = load_model(str(folder), auto_class=AutoModelForCausalLM, **model_kwargs)
    # transformers' causal-LM class does not know `score` and drops it: read it from the files.
    marked = isinstance(getattr(model.config, "critic_rm", None), dict)
    head = _saved_head(folder) if folder.is_dir() else None
    if head is None and (marked or not new_head):
        what = "a Critic-RM checkpoint (its config.json has `critic_rm`)" if marked else "a plain causal LM"
        raise InputError(
            f"{str(path)!r} is {what}, but none of its files holds the reward head `{REWARD_HEAD}.weight` "
            f"({HEAD_FILE} or the model's safetensors). "
            + ("Save the trained model again with trainer.save_model or model.save_pretrained."
               if marked else "Train it with CriticRMTrainer first, or pass the folder the trainer saved."))
    model = attach_reward_head(model)
    if head is not None:
        _copy_head(model, head, folder)
    return model


def _saved_head(folder: Path) -> torch.Tensor | None:
    """``score.weight`` from ``reward_head.safetensors``, else from the model's safetensors (None: neither has it)."""
    from hf_ext.merge.weights import WeightSource

    key = f"{REWARD_HEAD}.weight"
    for prefix in (HEAD_FILE.removesuffix(".safetensors"), "model"):
        if (folder / f"{prefix}.safetensors").is_file() or (folder / f"{prefix}.safetensors.index.json").is_file():
            source = WeightSource(folder, prefix=prefix)
            if key in source:
                return source.get(key)
    return None


def _adapter_has_head(folder: Path) -> bool:
    from hf_ext.merge.weights import WeightSource

    if not (folder / "adapter_model.safetensors").is_file():
        return False
    return any(k.endswith(f".{REWARD_HEAD}.weight") for k in WeightSource(folder, prefix="adapter_model").keys())


def _copy_head(model: PreTrainedModel, weight: torch.Tensor, folder: Path) -> None:
    head = getattr(model, REWARD_HEAD)
    if tuple(weight.shape) != tuple(head.weight.shape):
        raise InputError(f"The reward head `{REWARD_HEAD}.weight` saved in {str(folder)!r} has shape {tuple(weight.shape)}, "
                         f"but the model needs {tuple(head.weight.shape)} (one reward from the final hidden state).")
    with torch.no_grad():
        head.weight.copy_(weight)


def compute_reward_accuracy(eval_pred: Any) -> dict[str, float]:
    """``compute_metrics`` for reward trainers whose predictions are (pairs, 2) = (chosen,
    rejected) rewards; uses the ``reward_accuracy`` evaluate module (loaded by local path)."""
    import numpy as np

    from hf_ext.metrics import load_metric

    predictions = eval_pred.predictions if hasattr(eval_pred, "predictions") else eval_pred[0]
    predictions = np.asarray(predictions[0] if isinstance(predictions, tuple) else predictions, dtype=np.float64)
    if predictions.ndim != 2 or predictions.shape[1] != 2:
        raise InputError(f"compute_reward_accuracy expects (pairs, 2) rewards (chosen, rejected), got shape {predictions.shape}.")
    metric = load_metric("reward_accuracy")
    return metric.compute(chosen_rewards=predictions[:, 0].tolist(), rejected_rewards=predictions[:, 1].tolist())


# --------------------------------------------------------------------------- inference


class CriticRewardModel:
    """Critique-then-score inference with a trained Critic-RM.

    >>> from hf_ext.testing import tiny_llama, tiny_tokenizer
    >>> rm = CriticRewardModel(attach_reward_head(tiny_llama()), tiny_tokenizer())
    >>> isinstance(rm.score("2+2?", "4", num_critiques=0), float)
    True
    """

    def __init__(self, model: Any, tokenizer: PreTrainedTokenizerBase, *, max_new_tokens: int = 128,
                 temperature: float = 0.7, top_p: float = 0.95) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._tap = _HiddenTap(model)

    @classmethod
    def from_pretrained(cls, path: str, **kwargs: Any) -> CriticRewardModel:
        """A trained Critic-RM from a folder or Hub id (full checkpoint or PEFT adapter, however it
        was saved); refuses one without a saved reward head (see :func:`load_critic_lm`)."""
        from hf_ext.models import load_tokenizer

        return cls(load_critic_lm(path, new_head=False).eval(), load_tokenizer(path), **kwargs)

    @torch.no_grad()
    def rewards(self, sequences: list[list[int]]) -> list[float]:
        """Reward read at the end of each token sequence (batched, right-padded)."""
        device = next(self.model.parameters()).device
        ids = pad([torch.tensor(s) for s in sequences], padding_value=self.tokenizer.pad_token_id, padding_side="right").to(device)
        mask = pad([torch.ones(len(s), dtype=torch.long) for s in sequences], padding_value=0, padding_side="right").to(device)
        handle = unwrap(self.model).get_decoder().register_forward_hook(self._tap)
        try:
            rewards, _ = forward_rewards(self.model, self._tap, ids, mask)
        finally:
            handle.remove()
        return rewards.tolist()

    @torch.no_grad()
    def critique(self, prompt: str, response: str, num_critiques: int = 1, seed: int | None = 0) -> list[str]:
        """Sample `num_critiques` critiques with the model's LM head."""
        context = critique_context(self.tokenizer, prompt, response)
        device = next(self.model.parameters()).device
        ids = torch.tensor([context] * num_critiques, device=device)
        if seed is not None:
            torch.manual_seed(seed)
        sample = num_critiques > 1 and self.temperature > 0
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
                                  do_sample=sample, temperature=self.temperature if sample else None,
                                  top_p=self.top_p if sample else None, pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(out[:, len(context):], skip_special_tokens=True)

    @torch.no_grad()
    def score_batch(self, prompts: list[str], responses: list[str], num_critiques: int = 1, *, batch_size: int = 8,
                    seed: int | None = 0) -> list[float]:
        """:meth:`score` for many (prompt, response) pairs, generating in left-padded batches."""
        contexts = [critique_context(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        if num_critiques == 0:
            return [x for i in range(0, len(contexts), batch_size) for x in self.rewards(contexts[i : i + batch_size])]
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        if seed is not None:
            torch.manual_seed(seed)
        sample = num_critiques > 1 and self.temperature > 0
        pad_id = self.tokenizer.pad_token_id
        scores: list[float] = []
        try:
            for start in range(0, len(contexts), batch_size):
                chunk = [c for c in contexts[start : start + batch_size] for _ in range(num_critiques)]
                width = max(len(c) for c in chunk)
                ids = torch.tensor([[pad_id] * (width - len(c)) + c for c in chunk], device=device)
                mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk], device=device)
                out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.max_new_tokens, do_sample=sample,
                                          temperature=self.temperature if sample else None, top_p=self.top_p if sample else None,
                                          pad_token_id=pad_id)
                critiques = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
                rewards = self.rewards([c + critique_tokens(self.tokenizer, t) for c, t in zip(chunk, critiques)])
                scores += [sum(rewards[i : i + num_critiques]) / num_critiques for i in range(0, len(rewards), num_critiques)]
        finally:
            self.model.train(was_training)
        return scores

    def reward_with_critiques(self, prompt: str, response: str, critiques: list[str]) -> list[float]:
        """Reward after each given critique of (prompt, response)."""
        context = critique_context(self.tokenizer, prompt, response)
        return self.rewards([context + critique_tokens(self.tokenizer, c) for c in critiques])

    def score(self, prompt: str, response: str, num_critiques: int = 1, seed: int | None = 0) -> float:
        """Mean reward over `num_critiques` generated critiques; 0 = fast path (no generation)."""
        if not isinstance(num_critiques, int) or num_critiques < 0:
            raise InputError(f"num_critiques must be a non-negative integer, got {num_critiques!r}.")
        was_training = self.model.training
        self.model.eval()
        try:
            if num_critiques == 0:
                return self.rewards([critique_context(self.tokenizer, prompt, response)])[0]
            critiques = self.critique(prompt, response, num_critiques, seed=seed)
            rewards = self.reward_with_critiques(prompt, response, critiques)
            return float(sum(rewards) / len(rewards))
        finally:
            self.model.train(was_training)
