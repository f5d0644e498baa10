"""The Critic-RM model: a causal LM plus a scalar reward head ``score``, its forward pass,
the token layout of a training sequence, and saving / loading the head."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from hf_ext.critique.prompts import CRITIQUE_SYSTEM, CRITIQUE_USER, critique_messages
from hf_ext.errors import InputError

from ..reward_common import model_inputs, reward_index, unwrap

REWARD_HEAD = "score"  # same name as transformers' sequence-classification heads
HEAD_FILE = "reward_head.safetensors"


def attach_reward_head(model: PreTrainedModel) -> PreTrainedModel:
    """Give a causal LM a scalar reward head ``score`` (kept if it already has a 1-output one).

    Args:
        model (`PreTrainedModel`):
            A causal LM with an LM head. A new head (`Linear(hidden_size, 1)` without bias, initialised with the
            config's `initializer_range`) is added in place and marks the config (`num_labels=1`, `critic_rm`); an
            existing `score` head with more than one output is refused.
    """
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
    tensor of positions), so reward-only batches skip the vocabulary head.

    Args:
        model (`Any`):
            The Critic-RM model (possibly PEFT- or DDP-wrapped) whose decoder carries `tap` as a forward hook.
        tap (`_HiddenTap`):
            The hook that applies the reward head; its rewards are read and moved to `tap.last`.
        input_ids (`torch.Tensor`):
            Token ids, `(rows, length)` right-padded or `(1, total)` packed.
        attention_mask (`torch.Tensor` or `None`, *optional*, defaults to `None`):
            Mask of a right-padded batch; `None` for a packed batch (then `position_ids` is used).
        logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to `1`):
            Positions to compute LM logits at: the last n, or a tensor of positions.
        position_ids (`torch.Tensor` or `None`, *optional*, defaults to `None`):
            Position ids of a packed batch, restarting at 0 per sequence; used only without `attention_mask`.
    """
    batch = {"input_ids": input_ids, **({"attention_mask": attention_mask} if attention_mask is not None else {"position_ids": position_ids})}
    outputs = model(**model_inputs(batch), logits_to_keep=logits_to_keep)
    all_rewards = tap.rewards
    tap.rewards, tap.last = None, all_rewards
    return all_rewards.reshape(-1)[reward_index(batch)], outputs


def critique_context(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str) -> list[int]:
    """Token ids of the critique prompt for (prompt, response), ready for the critique.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer; with a chat template the prompt is its chat messages with the generation prompt,
            else the plain-text critique instructions.
        prompt (`str`):
            The user prompt that was answered.
        response (`str`):
            The response to critique.
    """
    if getattr(tokenizer, "chat_template", None):
        # No worked examples: the trained model has learnt the format, and they would cost tokens on every row.
        messages = critique_messages(prompt, response, examples=False)
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    text = CRITIQUE_SYSTEM + "\n\n" + CRITIQUE_USER.format(prompt=prompt, response=response) + "\n\n"
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def critique_tokens(tokenizer: PreTrainedTokenizerBase, critique: str, max_tokens: int | None = None) -> list[int]:
    """Token ids of a critique (no special tokens), cut to `max_tokens` and closed with EOS.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer.
        critique (`str`):
            The critique text.
        max_tokens (`int` or `None`, *optional*, defaults to `None`):
            Keep at most this many critique tokens (before the EOS); `None` keeps all.
    """
    ids = tokenizer(critique, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    return ids + [tokenizer.eos_token_id]


def save_reward_head(model: Any, output_dir: str | os.PathLike) -> Path:
    """Also write the reward head alone (``reward_head.safetensors``), so a checkpoint loads
    with :func:`load_critic_lm` whatever wrapper saved it.

    Args:
        model (`Any`):
            The Critic-RM model, possibly PEFT- or DDP-wrapped (a PEFT head's active `modules_to_save` copy is
            saved).
        output_dir (`str` or `os.PathLike`):
            Folder to write `reward_head.safetensors` into; created if missing.
    """
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
        path (`str`):
            A Hub id or folder: a plain causal LM, a full Critic-RM checkpoint (``trainer.save_model`` or
            ``model.save_pretrained``: the head is ``score.weight`` in the model's safetensors and/or
            ``reward_head.safetensors``), or a PEFT adapter folder (the head in the adapter's ``modules_to_save``,
            or ``reward_head.safetensors``).
        new_head (`bool`, *optional*, defaults to `True`):
            What to do with a plain causal LM, which has no reward head: add a freshly initialised one (to train
            it), or, with `False`, refuse (inference: a random head scores noise).
        model_kwargs:
            Passed to ``from_pretrained`` (``dtype`` defaults to float32).

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
    from hf_ext.weights import WeightSource

    key = f"{REWARD_HEAD}.weight"
    for prefix in (HEAD_FILE.removesuffix(".safetensors"), "model"):
        if (folder / f"{prefix}.safetensors").is_file() or (folder / f"{prefix}.safetensors.index.json").is_file():
            source = WeightSource(folder, prefix=prefix)
            if key in source:
                return source.get(key)
    return None


def _adapter_has_head(folder: Path) -> bool:
    from hf_ext.weights import WeightSource

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
