"""What hf_ext's reward trainers (:mod:`trainers.critic_rm`, :mod:`trainers.ranking_rm`) share:
their config base, on TRL's RewardConfig with transformers' and TRL's current names."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import RewardConfig

from hf_ext.errors import InputError


@dataclass
class RewardModelConfig(RewardConfig):
    """TRL's RewardConfig under the current names of transformers 5.24 and TRL 1.16.

    Args:
        activation_checkpointing (`bool` or `None`, defaults to `None`): transformers' name for
            gradient checkpointing. Unset means on, TRL's default for reward models.
        gradient_checkpointing (`bool` or `None`, defaults to `None`): the deprecated alias
            (transformers warns when it is set); read only when ``activation_checkpointing`` is unset.
        pad_token: deprecated in TRL; refused here. Set ``tokenizer.pad_token`` and pass the
            tokenizer as ``processing_class`` (no pad token: EOS pads, TRL's rule).
    """

    activation_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Recompute activations in the backward pass to trade compute for memory (about 20% slower). "
                          "Unset: on, as in TRL's reward trainer.", "nargs": "?", "const": True},
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing (transformers 5.24)."}
    )

    def __post_init__(self) -> None:
        if self.pad_token is not None:
            raise InputError(
                f"pad_token={self.pad_token!r}: TRL deprecated this setting (removed in TRL 2.0). Set tokenizer.pad_token "
                "and pass the tokenizer as processing_class instead (without a pad token, EOS pads)."
            )
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = True  # TRL's default, under transformers' current name
        super().__post_init__()

