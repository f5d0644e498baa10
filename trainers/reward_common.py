"""What hf_ext's reward trainers (:mod:`trainers.critic_rm`, :mod:`trainers.ranking_rm`) share:
their config base (TRL's RewardConfig under transformers' and TRL's current names, plus
``padding_free``) and padding-free (packed) batches.

Padding-free: the sequences of a batch are concatenated into one row, ``position_ids``
restart at 0 for every sequence and there is no ``attention_mask``. transformers then keeps
the sequences apart: sdpa and eager get a block-diagonal causal mask built from the position
ids (only with ``use_cache=False``, which the trainers pass), flash_attention_2 runs varlen
attention on the boundaries. A reward is read at each sequence's last token. The linear
layers then run on real tokens only, not on (sequences × longest). sdpa's masked attention
would still span the whole row (total² scores, more than the padded batch's when lengths
differ a lot), so with ``padding_free`` the trainers switch an sdpa model to
``"sdpa_packed"``: sdpa run causally on each packed sequence (varlen attention, Σ length²),
exactly sdpa for any other batch.

    >>> import torch
    >>> batch = pack_sequences([torch.tensor([5, 6, 7]), torch.tensor([8, 9])])
    >>> batch["input_ids"].tolist(), batch["position_ids"].tolist()
    ([[5, 6, 7, 8, 9]], [[0, 1, 2, 0, 1]])
    >>> sequence_ends(batch["position_ids"]).tolist()
    [2, 4]
    >>> packed_lengths(torch.tensor([[4, 5, 0, 1, 2]]))  # a row may start mid-sequence
    [2, 3]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import is_peft_model
from transformers import PreTrainedModel
from trl import RewardConfig

from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from hf_ext.errors import InputError

PACKED_SDPA = "sdpa_packed"


@dataclass
class RewardModelConfig(RewardConfig):
    """TRL's RewardConfig under the current names of transformers 5.24 and TRL 1.16.

    TRL's deprecated ``pad_token`` is refused here: set ``tokenizer.pad_token`` and pass the tokenizer as
    ``processing_class`` (no pad token: EOS pads, TRL's rule).

    Args:
        lr_scheduler_kwargs (`dict` or `str` or `None`, *optional*, defaults to `None`):
            Additional parameters for the lr_scheduler, such as {'num_cycles': 1} for cosine with hard restarts. See
            the documentation of each scheduler for possible values.
        bf16 (`bool` or `None`, *optional*, defaults to `None`):
            Whether to use bf16 (mixed) precision instead of 32-bit. Requires Ampere or higher NVIDIA architecture or
            Intel XPU or using CPU (use_cpu) or Ascend NPU. If not set, it defaults to `True` if `fp16` is not set.
        activation_checkpointing (`bool` or `None`, *optional*, defaults to `None`):
            Recompute activations in the backward pass to trade compute for memory (about 20% slower). Unset: on, as
            in TRL's reward trainer.
        gradient_checkpointing (`bool` or `None`, *optional*, defaults to `None`):
            Deprecated alias of activation_checkpointing (transformers 5.24).
        use_liger_kernel (`bool`, *optional*, defaults to `False`):
            Enable Liger Kernel optimizations: transformers patches the model's layers with Liger's Triton kernels.
            Deprecated in `SFTTrainer`, `DPOTrainer`, `KTOTrainer`, `GRPOTrainer` and `RLOOTrainer`, and will be
            removed in v2.0.0: use `model_init_kwargs={"use_kernels": True}` instead.
        torch_empty_cache_steps (`int` or `None`, *optional*, defaults to `None`):
            Number of steps to wait before calling `torch.<device>.empty_cache()`. Helps avoid CUDA OOM at a cost of
            ~10%% slower performance. If None, cache will not be emptied.
        logging_steps (`float`, *optional*, defaults to `10`):
            Log every X updates steps. Should be an integer or a float in range `[0,1)`. If smaller than 1, will be
            interpreted as ratio of total training steps.
        padding_free (`bool`, *optional*, defaults to `False`):
            Concatenate the sequences of a batch into one row, position_ids restarting per sequence, instead of
            padding each to the longest: no compute on padding. Rewards are read at each sequence's last token. Needs
            attention that keeps packed sequences apart (sdpa or eager with use_cache=False, flash_attention_2
            varlen); the trainer checks this once at start.
    """

    activation_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Recompute activations in the backward pass to trade compute for memory (about 20% slower). "
                          "Unset: on, as in TRL's reward trainer.", "nargs": "?", "const": True},
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing (transformers 5.24)."}
    )
    padding_free: bool = field(
        default=False,
        metadata={"help": "Concatenate the sequences of a batch into one row, position_ids restarting per sequence, "
                          "instead of padding each to the longest: no compute on padding. Rewards are read at each "
                          "sequence's last token. Needs attention that keeps packed sequences apart (sdpa or eager with "
                          "use_cache=False, flash_attention_2 varlen); the trainer checks this once at start."},
    )

    def __post_init__(self) -> None:
        if self.pad_token is not None:
            raise InputError(
                f"pad_token={self.pad_token!r}: TRL deprecated this setting (removed in TRL 2.0). Set tokenizer.pad_token "
                "and pass the tokenizer as processing_class instead (without a pad token, EOS pads)."
            )
        if self.padding_free and self.pad_to_multiple_of not in (None, "auto"):
            raise InputError(f"padding_free packs a batch into one row without padding, so pad_to_multiple_of="
                             f"{self.pad_to_multiple_of} does not apply; unset one of them.")
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = True  # TRL's default, under transformers' current name
        super().__post_init__()


def packed_lengths(position_ids: torch.Tensor) -> list[int]:
    """Lengths of the sequences of one packed row: a new one starts wherever the position does
    not go up by one (transformers' ``find_packed_sequence_indices`` rule).

    Args:
        position_ids (`torch.Tensor`):
            Position ids of one packed row, of shape `(1, total)` or `(total,)`.
    """
    flat = position_ids.reshape(-1)
    starts = (torch.nonzero(flat[1:] - flat[:-1] != 1).squeeze(-1) + 1).tolist()
    return [b - a for a, b in zip([0] + starts, starts + [flat.numel()])]


def sdpa_packed_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None = None, **kwargs: Any):
    """transformers' sdpa attention, run causally on each sequence of a packed row (one row, no
    cache, ``position_ids`` restarting); any other call is plain sdpa.

    The row is cut with ``split``, not slicing: the backward of a slice writes its gradient into
    a zero tensor of the whole row, so slicing cost (sequences × row) memory traffic per q/k/v in
    every layer (profiled: ``fill_`` + ``add_`` were a third of a packed step); ``split``'s
    backward is one ``cat``.

    Args:
        module (`torch.nn.Module`):
            The attention layer calling it (passed on to sdpa).
        query (`torch.Tensor`):
            Queries of shape `(batch, heads, length, head_dim)`.
        key (`torch.Tensor`):
            Keys of shape `(batch, kv_heads, kv_length, head_dim)`.
        value (`torch.Tensor`):
            Values, shaped like `key`.
        attention_mask (`torch.Tensor` or `None`):
            The mask transformers built; ignored for a packed row (each sequence runs causally), used otherwise.
        position_ids (`torch.Tensor` or `None`, *optional*, defaults to `None`):
            Position ids of the row; the sequences are cut where they do not go up by one. `None` runs plain sdpa.
    """
    if position_ids is None or query.shape[0] != 1 or query.shape[2] != key.shape[2] or position_ids.shape[-1] != query.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    lengths = packed_lengths(position_ids)
    if len(lengths) == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs["is_causal"] = True
    parts = [sdpa_attention_forward(module, q, k, v, None, **kwargs)[0]
             for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2))]
    return torch.cat(parts, dim=1), None  # (1, total, heads, head_dim), as sdpa returns


def sdpa_packed_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                     attention_mask: torch.Tensor | None = None, local_size: int | None = None, **kwargs: Any) -> torch.Tensor | None:
    """transformers' sdpa mask, except for one causal row without padding or cache: no mask
    (sdpa_packed_forward runs each packed sequence causally, a single sequence is plain causal
    sdpa), instead of a (total × total) block-diagonal mask that nothing reads.

    Args:
        batch_size (`int`):
            Rows in the batch.
        q_length (`int`):
            Query length.
        kv_length (`int`):
            Key/value length.
        q_offset (`int`, *optional*, defaults to `0`):
            Position of the first query (non-zero with a cache).
        kv_offset (`int`, *optional*, defaults to `0`):
            Position of the first key/value.
        attention_mask (`torch.Tensor` or `None`, *optional*, defaults to `None`):
            The 2-D padding mask, if any.
        local_size (`int` or `None`, *optional*, defaults to `None`):
            Sliding-window size of local attention, if any.
    """
    if batch_size == 1 and attention_mask is None and q_offset == kv_offset == 0 and q_length == kv_length and local_size is None:
        return None
    return sdpa_mask(batch_size, q_length, kv_length, q_offset, kv_offset, attention_mask=attention_mask, local_size=local_size, **kwargs)


AttentionInterface.register(PACKED_SDPA, sdpa_packed_forward)
AttentionMaskInterface.register(PACKED_SDPA, sdpa_packed_mask)


def use_packed_sdpa(model: Any) -> None:
    """Switch an sdpa model to ``"sdpa_packed"`` (identical outside packed batches).

    Args:
        model (`Any`):
            A transformers model, possibly under PEFT / DDP wrappers; left alone unless it uses `"sdpa"`.
    """
    model = unwrap(model)
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(PACKED_SDPA)


def unwrap(model: Any) -> PreTrainedModel:
    """The transformers model under PEFT / DDP wrappers.

    Args:
        model (`Any`):
            A `PreTrainedModel`, or a wrapper with `.module` (DDP, accelerate) and/or a `PeftModel`.
    """
    while hasattr(model, "module") and not isinstance(model, PreTrainedModel):
        model = model.module
    return model.get_base_model() if is_peft_model(model) else model


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-pad token of each right-padded row.

    Args:
        attention_mask (`torch.Tensor`):
            Mask of shape `(rows, length)`, 1 on real tokens.
    """
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)


def pack_sequences(sequences: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """One row (``input_ids`` of shape (1, total)) and ``position_ids`` restarting at 0 per sequence.

    Args:
        sequences (`list[torch.Tensor]`):
            1-D token-id tensors, concatenated in this order.
    """
    return {"input_ids": torch.cat(sequences)[None],
            "position_ids": torch.cat([torch.arange(len(s)) for s in sequences])[None]}


def sequence_ends(position_ids: torch.Tensor) -> torch.Tensor:
    """Flat index (into ``position_ids.reshape(-1)``) of the last token of every packed sequence.

    Args:
        position_ids (`torch.Tensor`):
            Position ids of a packed batch, 0 where each sequence starts.
    """
    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0).squeeze(-1)
    return torch.cat([starts[1:], starts.new_tensor([flat.numel()])]) - 1


def packed_sums(values: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Per-sequence sums of ``values`` (shaped like ``position_ids``) over a packed row.

    Args:
        values (`torch.Tensor`):
            One value per token, shaped like `position_ids` (e.g. a critique mask).
        position_ids (`torch.Tensor`):
            Position ids of the packed row, 0 where each sequence starts.
    """
    sequence = (position_ids.reshape(-1) == 0).long().cumsum(0) - 1
    out = torch.zeros(int(sequence[-1]) + 1, dtype=values.dtype, device=values.device)
    return out.index_add_(0, sequence, values.reshape(-1))


def reward_index(inputs: dict[str, Any]) -> torch.Tensor:
    """Flat index (into the (rows × length) positions) of each sequence's last token, for a
    packed batch (``position_ids``, no mask) or a right-padded one (``attention_mask``).

    Args:
        inputs (`dict[str, Any]`):
            A collated batch with `attention_mask` (right-padded) or `position_ids` (packed).
    """
    if "attention_mask" not in inputs:
        return sequence_ends(inputs["position_ids"])
    mask = inputs["attention_mask"]
    rows = torch.arange(mask.shape[0], device=mask.device)
    return rows * mask.shape[1] + last_token_index(mask)


def real_tokens(inputs: dict[str, Any]) -> torch.Tensor:
    """Number of real (non-pad) tokens in a packed or padded batch, as a tensor for gathering.

    Args:
        inputs (`dict[str, Any]`):
            A collated batch with `input_ids` and, when padded, `attention_mask`.
    """
    if "attention_mask" in inputs:
        return inputs["attention_mask"].sum()
    return inputs["input_ids"].new_tensor(inputs["input_ids"].numel())


def log_num_tokens(trainer: Any, inputs: dict[str, Any], mode: str) -> None:
    """TRL's ``num_tokens`` metric (real tokens seen in training, over all processes).

    Args:
        trainer (`Any`):
            A TRL `RewardTrainer` (its `accelerator`, `_total_train_tokens`, `_tp_size` and `_metrics` are used).
        inputs (`dict[str, Any]`):
            The batch, packed or padded.
        mode (`str`):
            `"train"` (adds the batch's tokens to the running total) or `"eval"` (only logs the total).
    """
    if mode == "train":
        tokens = trainer.accelerator.gather_for_metrics(real_tokens(inputs)).sum().item()
        trainer._total_train_tokens += tokens // trainer._tp_size
    trainer._metrics[mode]["num_tokens"] = [trainer._total_train_tokens]


def model_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """The forward arguments of a packed or a padded batch (never the cache: see the module docstring).

    Args:
        inputs (`dict[str, Any]`):
            A collated batch; `input_ids` with `attention_mask` if present, else with `position_ids`.
    """
    keys = ("input_ids", "position_ids") if "attention_mask" not in inputs else ("input_ids", "attention_mask")
    return {**{k: inputs[k] for k in keys}, "use_cache": False}


@torch.no_grad()
def check_packed_attention(model: Any) -> None:
    """Refuse ``padding_free`` for a model whose attention lets packed sequences see each other:
    the same 4 tokens packed twice must give the same last hidden state twice.

    Args:
        model (`Any`):
            The model to check, possibly wrapped (PEFT / DDP); it is run once in eval mode and its mode restored.
    """
    model = unwrap(model)
    param = next(model.parameters())
    ids = torch.tensor([[11, 12, 13, 14] * 2], device=param.device) % model.config.get_text_config().vocab_size
    positions = torch.arange(4, device=param.device).repeat(2)[None]
    was_training = model.training
    model.eval()
    try:
        hidden = model(input_ids=ids, position_ids=positions, use_cache=False, output_hidden_states=True).hidden_states[-1][0].float()
    finally:
        model.train(was_training)
    tol = 1e-3 if param.dtype == torch.float32 else 3e-2
    if not torch.allclose(hidden[:4], hidden[4:], rtol=tol, atol=tol * float(hidden.abs().max())):
        implementation = getattr(model.config, "_attn_implementation", None)
        raise InputError(
            f"padding_free=True, but {type(model).__name__} with attn_implementation={implementation!r} lets packed sequences "
            "attend to each other (the same tokens packed twice give different states). Load the model with "
            "attn_implementation='sdpa' (or 'flash_attention_2' on GPU), or set padding_free=False."
        )
