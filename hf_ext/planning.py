"""What a run costs before it starts: parameters, FLOPs and memory of paper-scale models.

Models are built on the ``meta`` device from a transformers config (no weights, no memory), so
an 8B plan costs milliseconds. FLOPs are counted from the model's own ``nn.Linear`` shapes
(2 multiply-adds per weight per token) plus attention's score and value products; time is
FLOPs over a FLOP rate measured on this machine by a short matmul, so the estimate is an
ideal-efficiency lower bound for the device it was measured on. Used by the benchmarks'
``--plan`` flags::

    from hf_ext.planning import meta_model, measured_flop_rate, ModelCost
    cost = ModelCost.of(meta_model(LLAMA_3_1_8B))
    print(cost.params, cost.flops_per_token(context=512))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

GIB = 1024**3

# Published configs (config.json of the Hub repos), written out so a plan needs no network.
LLAMA_3_1_8B = dict(model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072, tie_word_embeddings=False)
LLAMA_3_2_3B = dict(model_type="llama", vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                    num_attention_heads=24, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
                    tie_word_embeddings=True)
LLAMA_3_2_1B = dict(model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                    tie_word_embeddings=True)
LLAMA_2_7B = dict(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, tie_word_embeddings=False)


def meta_model(config: dict[str, Any] | Any, auto_class: Any = None, num_layers: int | None = None):
    """A transformers model with every tensor on ``meta`` (shapes only) from a config or config dict.

    ``num_layers`` keeps only the first decoder layers, as a featurizer cut after its SAE layer.

    Args:
        config (`dict[str, Any]` or `PretrainedConfig`):
            A transformers config, or a dict of its fields with ``model_type`` (e.g. `LLAMA_3_1_8B`). A config
            object is changed in place when `num_layers` is given.
        auto_class (`Any`, *optional*):
            The ``Auto*`` class whose ``from_config`` builds the model; ``None`` means ``AutoModelForCausalLM``.
        num_layers (`int`, *optional*):
            Keep only this many decoder layers (sets ``num_hidden_layers``); ``None`` keeps the config's.

    Returns:
        `PreTrainedModel`: the model on the ``meta`` device.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if isinstance(config, dict):
        values = dict(config)
        config = AutoConfig.for_model(values.pop("model_type"), **values)
    if num_layers is not None:
        config.num_hidden_layers = num_layers
    with torch.device("meta"):
        return (auto_class or AutoModelForCausalLM).from_config(config)


@dataclass
class ModelCost:
    """Parameter and per-token FLOP counts of one model (from its module shapes).

    Args:
        params (`int`):
            Unique parameters (tied weights once).
        linear_params (`int`):
            Weights of the ``nn.Linear`` layers other than the vocabulary head, each of which costs 2 FLOPs per
            token in a forward pass.
        head_params (`int`):
            Weights of the vocabulary head (``lm_head``; 0 for tied heads' embedding side).
        layers (`int`):
            Decoder layers, for attention's ``4 × context × width`` FLOPs per token per layer (scores and values).
        attention_width (`int`):
            Query width (heads × head dim) of those attention FLOPs.
        hidden_size (`int`):
            The model's width (``config.hidden_size``), for activation memory and SAE sizes.
        linear_shapes (`dict[str, tuple[int, int]]`, *optional*, defaults to `{}`):
            Module name -> ``(out_features, in_features)`` of each ``nn.Linear`` counted in `linear_params`, for
            :meth:`lora_params`.
    """

    params: int
    linear_params: int
    head_params: int
    layers: int
    attention_width: int
    hidden_size: int
    linear_shapes: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, model) -> ModelCost:
        cfg = model.config
        seen, params = set(), 0
        for p in model.parameters():  # tied weights are one tensor: count once
            if id(p) not in seen:
                seen.add(id(p))
                params += p.numel()
        head = model.get_output_embeddings()
        linear, shapes = 0, {}
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and module is not head:
                linear += module.weight.numel()
                shapes[name] = tuple(module.weight.shape)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cls(params=params, linear_params=linear, head_params=0 if head is None else head.weight.numel(),
                   layers=cfg.num_hidden_layers, attention_width=cfg.num_attention_heads * head_dim,
                   hidden_size=cfg.hidden_size, linear_shapes=shapes)

    def flops_per_token(self, context: int, with_head: bool = False) -> float:
        """Forward FLOPs per token at mean causal context ``context`` (keys attended ≈ context / 2)."""
        attention = 4.0 * self.layers * self.attention_width * context / 2
        return 2.0 * self.linear_params + attention + (2.0 * self.head_params if with_head else 0.0)

    def lora_params(self, rank: int, targets: tuple[str, ...]) -> int:
        """Parameters of a LoRA adapter of ``rank`` on the linear layers whose names end in ``targets``."""
        return sum(rank * (i + o) for name, (o, i) in self.linear_shapes.items() if name.split(".")[-1] in targets)


def measured_flop_rate(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of a ``size``² matmul on ``device`` (best of ``repeats``, after one warm-up).

    Args:
        device (`str`, *optional*, defaults to `"cpu"`):
            Torch device to measure (``"cuda"`` devices are synchronised around each product).
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`):
            Precision of the matrices.
        size (`int`, *optional*, defaults to `2048`):
            Side of the two square random matrices multiplied.
        repeats (`int`, *optional*, defaults to `3`):
            Timed products; the fastest counts.

    Returns:
        `float`: ``2 × size³`` FLOPs over the best time, in FLOP/s.
    """
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


@dataclass
class Plan:
    """A recipe's estimate: total FLOPs, the rate they are divided by, and the memory it needs.

    Args:
        recipe (`str`):
            What is planned, in words (the first line of :meth:`format`).
        flops (`float`):
            Total FLOPs of the run.
        flop_rate (`float`):
            FLOP/s the total is divided by (e.g. :func:`measured_flop_rate`), giving ``seconds``.
        memory_bytes (`dict[str, float]`):
            Bytes of each part of the memory it needs (e.g. ``{"weights_bf16": ...}``); the total is their sum.
        assumptions (`dict[str, Any]`):
            The sizes the estimate assumes (tokens, context, batch, ...), listed by :meth:`format`.
    """

    recipe: str
    flops: float
    flop_rate: float
    memory_bytes: dict[str, float]
    assumptions: dict[str, Any]

    @property
    def seconds(self) -> float:
        return self.flops / self.flop_rate

    def as_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "total_flops": self.flops, "flop_rate": self.flop_rate,
                "estimated_seconds": round(self.seconds, 1), "estimated_hours": round(self.seconds / 3600, 2),
                "memory_gib": {k: round(v / GIB, 2) for k, v in self.memory_bytes.items()}
                | {"total": round(sum(self.memory_bytes.values()) / GIB, 2)},
                "assumptions": self.assumptions}

    def format(self) -> str:
        d = self.as_dict()
        lines = [f"{self.recipe}: {self.flops:.3g} FLOPs at {self.flop_rate / 1e9:.1f} GFLOP/s (measured) "
                 f"≈ {d['estimated_hours']} h at full matmul speed; memory {d['memory_gib']['total']} GiB"]
        lines += [f"  memory {k}: {v} GiB" for k, v in d["memory_gib"].items() if k != "total"]
        lines += [f"  assumes {k} = {v}" for k, v in self.assumptions.items()]
        return "\n".join(lines)
