"""Configuration of :class:`~trainers.critic_rm.CriticRMTrainer` and its λ schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from hf_ext.errors import InputError

from ..reward_common import RewardModelConfig


@dataclass
class CriticRMConfig(RewardModelConfig):
    """Configuration of :class:`CriticRMTrainer`: TRL's RewardConfig plus the critique loss.

    The λ schedule weighs the critique loss against the Bradley–Terry loss; see the module
    docstring. Everything else (margin column, ``center_rewards_coefficient``, ``max_length``,
    PEFT, gradient checkpointing) behaves as in TRL's RewardTrainer.

    Args:
        critique_weight_schedule (`Literal['constant', 'linear', 'cosine']`, *optional*, defaults to `"cosine"`):
            Shape of λ(t), the weight of the critique loss over training: constant (λ = start), linear or cosine decay
            from critique_weight_start to critique_weight_end.
        critique_weight_start (`float`, *optional*, defaults to `0.9`):
            λ at the first step (critique-heavy). Use 0 for a pure Bradley–Terry reward model.
        critique_weight_end (`float`, *optional*, defaults to `0.1`):
            λ at the last step (reward-heavy).
        prompt_column (`str`, *optional*, defaults to `"prompt"`):
            Column with the prompt text.
        chosen_critique_column (`str`, *optional*, defaults to `"chosen_critique"`):
            Column with the critique of the chosen response.
        rejected_critique_column (`str`, *optional*, defaults to `"rejected_critique"`):
            Column with the critique of the rejected response.
        fast_path_weight (`float`, *optional*, defaults to `0.0`):
            Weight w of a second Bradley–Terry term on the reward read right after the critique prompt (before the
            critique), which trains the no-generation fast path: L_BT = (1 − w)·BT(after critique) + w·BT(before
            critique). 0 is the paper's loss; rows without critiques are unaffected.
        max_critique_length (`int` or `None`, *optional*, defaults to `256`):
            Critiques are cut to this many tokens before EOS (None: no cut).
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
    """λ at training progress in [0, 1]: constant = start; linear and cosine go start → end.

    Args:
        schedule (`str`):
            ``"constant"``, ``"linear"`` or ``"cosine"``.
        start (`float`):
            λ at the start of training.
        end (`float`):
            λ at the end (unused by ``"constant"``).
        progress (`float`):
            Share of training done, in [0, 1].
    """
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return start
    if schedule == "linear":
        return start + (end - start) * progress
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
