"""Merge methods as small objects (mergekit's shape): each turns the aligned tensors of several
models (and optionally a shared base) into one tensor. The drivers in :mod:`hf_ext.merge.merge`
stream tensors through them one name at a time.

The arithmetic of task arithmetic, TIES and DARE is PEFT's (``peft.utils.merge_utils``) applied to
task vectors ``θ_i − θ_base``; we add the base back and scale. Normalisation choices, pinned in
``tests/test_merge.py``:

- ``LinearMerge(normalize=True)``: ``Σ w_i θ_i / Σ w_i`` (a model soup; uniform weights by default).
- ``TiesMerge``: PEFT's disjoint merge divides the sum of the sign-agreeing weighted deltas by the
  **number** of agreeing models per entry (not by the sum of their weights, which is what
  mergekit's ``normalize: true`` does).
- ``DareMerge``: random drop with rescaling by ``1/density`` (DARE), then a weighted sum
  (``ties=False``) or TIES' sign election and disjoint mean (``ties=True``); the drop masks are
  seeded per tensor name, so a merge is reproducible.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from peft.utils import merge_utils

from ..errors import InputError

__all__ = ["MergeMethod", "LinearMerge", "TaskArithmetic", "TiesMerge", "DareMerge", "MERGE_METHODS", "get_merge_method"]


@dataclass
class MergeMethod:
    """Base class. ``merge(tensors, weights, base, key=...)`` returns the merged fp32 tensor."""

    name: ClassVar[str] = "base"
    needs_base: ClassVar[bool] = False

    def merge(self, tensors: list[torch.Tensor], weights: torch.Tensor, base: torch.Tensor | None, *, key: str) -> torch.Tensor:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The settings, for cards and metrics."""
        return {"method": self.name, **dataclasses.asdict(self)}

    def _deltas(self, tensors: list[torch.Tensor], base: torch.Tensor | None, key: str) -> list[torch.Tensor]:
        if base is None:
            raise InputError(f"The {self.name!r} merge works on task vectors and needs a base model; pass base=... "
                             f"(recipe field `base_model`). Missing while merging {key!r}.")
        return [t - base for t in tensors]


@dataclass
class LinearMerge(MergeMethod):
    """Weighted average of the weights: a model soup (Wortsman et al. 2022), Llama-3-style averaging."""

    name: ClassVar[str] = "linear"
    normalize: bool = field(default=True, metadata={"help": "Divide by the sum of the weights."})

    def merge(self, tensors, weights, base, *, key):
        # Σ w_i θ_i accumulated in place (one output buffer, no stacked copies: the streaming
        # merge's peak memory is set by its largest tensor); equal to PEFT's task_arithmetic.
        out = tensors[0] * weights[0]
        for tensor, w in zip(tensors[1:], weights[1:]):
            out.add_(tensor, alpha=float(w))
        return out.div_(weights.sum()) if self.normalize else out


@dataclass
class TaskArithmetic(MergeMethod):
    """θ_base + scale · Σ w_i (θ_i − θ_base) (Ilharco et al. 2023)."""

    name: ClassVar[str] = "task_arithmetic"
    needs_base: ClassVar[bool] = True
    scale: float = field(default=1.0, metadata={"help": "λ multiplying the summed task vectors."})

    def merge(self, tensors, weights, base, *, key):
        return base + self.scale * merge_utils.task_arithmetic(self._deltas(tensors, base, key), weights)


@dataclass
class TiesMerge(MergeMethod):
    """TIES (Yadav et al. 2023): trim to the top-`density` magnitudes, elect signs, disjoint mean."""

    name: ClassVar[str] = "ties"
    needs_base: ClassVar[bool] = True
    density: float = field(default=0.2, metadata={"help": "Fraction of each task vector's entries kept (by magnitude)."})
    majority_sign_method: Literal["total", "frequency"] = field(default="total", metadata={"help": "Sign election: by summed value or by count."})
    scale: float = field(default=1.0, metadata={"help": "λ multiplying the merged task vector."})

    def merge(self, tensors, weights, base, *, key):
        deltas = self._deltas(tensors, base, key)
        return base + self.scale * merge_utils.ties(deltas, weights, self.density, self.majority_sign_method)


@dataclass
class DareMerge(MergeMethod):
    """DARE (Yu et al. 2024): drop task-vector entries at random, rescale by 1/density, then sum or TIES."""

    name: ClassVar[str] = "dare"
    needs_base: ClassVar[bool] = True
    density: float = field(default=0.5, metadata={"help": "Fraction of entries kept; kept entries are rescaled by 1/density."})
    ties: bool = field(default=False, metadata={"help": "Use TIES sign election and disjoint mean after dropping."})
    majority_sign_method: Literal["total", "frequency"] = field(default="total", metadata={"help": "Sign election (ties=True)."})
    scale: float = field(default=1.0, metadata={"help": "λ multiplying the merged task vector."})
    seed: int = field(default=0, metadata={"help": "Seed of the drop masks (combined with each tensor's name)."})

    def merge(self, tensors, weights, base, *, key):
        deltas = self._deltas(tensors, base, key)
        with torch.random.fork_rng(devices=[]):  # PEFT draws from the global RNG: seed it per tensor
            torch.manual_seed(self.seed * 1_000_003 + zlib.crc32(key.encode()))
            if self.ties:
                merged = merge_utils.dare_ties(deltas, weights, self.density, self.majority_sign_method)
            else:
                merged = merge_utils.dare_linear(deltas, weights, self.density)
        return base + self.scale * merged


MERGE_METHODS: dict[str, type[MergeMethod]] = {
    cls.name: cls for cls in (LinearMerge, TaskArithmetic, TiesMerge, DareMerge)
}


def get_merge_method(method: str | MergeMethod, **params: Any) -> MergeMethod:
    """A merge-method object from its name and settings (or the object itself)."""
    if isinstance(method, MergeMethod):
        if params:
            raise InputError(f"Settings {sorted(params)} were given with a {type(method).__name__} object; set them on the object.")
        return method
    if method not in MERGE_METHODS:
        raise InputError(f"Unknown merge method {method!r}. Valid methods: {', '.join(MERGE_METHODS)}.")
    cls = MERGE_METHODS[method]
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - valid)
    if unknown:
        raise InputError(f"Merge method {method!r} has no setting {unknown[0]!r}. Its settings: {sorted(valid) or 'none'}.")
    return cls(**params)
