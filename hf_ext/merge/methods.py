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
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from ..errors import InputError


class _PeftMergeUtils:
    """``peft.utils.merge_utils``, imported on first use (PEFT imports transformers: seconds a mergekit config never needs)."""

    def __getattr__(self, name: str):
        from peft.utils import merge_utils as module

        return getattr(module, name)


merge_utils = _PeftMergeUtils()

__all__ = ["MergeMethod", "LinearMerge", "TaskArithmetic", "TiesMerge", "DareMerge", "DellaMerge", "BreadcrumbsMerge",
           "SlerpMerge", "NuSlerpMerge", "ModelStockMerge", "PassthroughMerge", "MERGE_METHODS", "get_merge_method"]


@dataclass
class MergeMethod:
    """Base class. ``merge(tensors, weights, base, key=...)`` returns the merged fp32 tensor.

    `tensors` (a list) is the method's to consume: it may empty the list once it holds what it needs, so the
    streaming drivers' inputs are freed before the merge's temporaries grow; pass a list you won't reuse."""

    name: ClassVar[str] = "base"
    needs_base: ClassVar[bool] = False

    def merge(self, tensors: list[torch.Tensor], weights: torch.Tensor, base: torch.Tensor | None, *, key: str) -> torch.Tensor:
        """The merged fp32 tensor of one name.

        Args:
            tensors (`list[torch.Tensor]`):
                The models' fp32 tensors of this name, one per model, in order; the method may empty the list.
            weights (`torch.Tensor`):
                One weight per model.
            base (`torch.Tensor` or `None`):
                The base model's fp32 tensor (task-vector methods need it; others may ignore it).
            key (`str`):
                The tensor's name: for error messages and to seed random drop masks.
        """
        raise NotImplementedError

    def check_weights(self, weights: torch.Tensor) -> None:
        """Refuse weights this method cannot use (before any tensor is read).

        Args:
            weights (`torch.Tensor`):
                One weight per model, as :meth:`merge` will get them.
        """

    def _check_sum(self, weights: torch.Tensor) -> None:
        if abs(float(weights.sum())) < 1e-8:
            raise InputError(f"The {self.name!r} merge divides by the sum of the weights, and {weights.tolist()} sums to 0: "
                             "the result would be NaN/inf. Give weights with a non-zero sum, or normalize=False.")

    def params(self) -> dict[str, Any]:
        """The settings, for cards and metrics."""
        return {"method": self.name, **dataclasses.asdict(self)}

    def _deltas(self, tensors: list[torch.Tensor], base: torch.Tensor | None, key: str) -> list[torch.Tensor]:
        if base is None:
            raise InputError(f"The {self.name!r} merge works on task vectors and needs a base model; pass base=... "
                             f"(recipe field `base_model`). Missing while merging {key!r}.")
        deltas = []
        for i in range(len(tensors)):  # each input goes as soon as its task vector exists (see MergeMethod.merge)
            deltas.append(tensors[i] - base)
            tensors[i] = None
        tensors.clear()
        return deltas


@dataclass
class LinearMerge(MergeMethod):
    """Weighted average of the weights: a model soup (Wortsman et al. 2022), Llama-3-style averaging.

    Args:
        normalize (`bool`, *optional*, defaults to `True`):
            Divide by the sum of the weights.
    """

    name: ClassVar[str] = "linear"
    normalize: bool = field(default=True, metadata={"help": "Divide by the sum of the weights."})

    def check_weights(self, weights):
        if self.normalize:
            self._check_sum(weights)

    def merge(self, tensors, weights, base, *, key):
        # Σ w_i θ_i accumulated in place (one output buffer, no stacked copies: the streaming
        # merge's peak memory is set by its largest tensor); equal to PEFT's task_arithmetic.
        out = tensors[0] * weights[0]
        for tensor, w in zip(tensors[1:], weights[1:]):
            out.add_(tensor, alpha=float(w))
        return out.div_(weights.sum()) if self.normalize else out


@dataclass
class TaskArithmetic(MergeMethod):
    """θ_base + scale · Σ w_i (θ_i − θ_base) (Ilharco et al. 2023).

    Args:
        scale (`float`, *optional*, defaults to `1.0`):
            λ multiplying the summed task vectors.
        normalize (`bool`, *optional*, defaults to `False`):
            Divide the summed task vectors by Σ w_i (mergekit's `normalize`).
    """

    name: ClassVar[str] = "task_arithmetic"
    needs_base: ClassVar[bool] = True
    scale: float = field(default=1.0, metadata={"help": "λ multiplying the summed task vectors."})
    normalize: bool = field(default=False, metadata={"help": "Divide the summed task vectors by Σ w_i (mergekit's `normalize`)."})

    def check_weights(self, weights):
        if self.normalize:
            self._check_sum(weights)

    def merge(self, tensors, weights, base, *, key):
        if self.normalize:
            return _task_vector_merge(self._deltas(tensors, base, key), weights, base, consensus=None, normalize=True, scale=self.scale)
        return base + self.scale * merge_utils.task_arithmetic(self._deltas(tensors, base, key), weights)


Convention = Literal["peft", "mergekit"]
_CONVENTION_HELP = ("Arithmetic of the sign election and normalisation. 'peft' (hf_ext recipes): PEFT's merge_utils: signs "
                    "elected on the unweighted trimmed task vectors, the agreeing sum divided by the **count** of agreeing "
                    "models. 'mergekit' (mergekit configs): signs elected on the weighted task vectors, divided by the **sum "
                    "of the agreeing weights** when `normalize`; per-model densities allowed.")


@dataclass
class TiesMerge(MergeMethod):
    """TIES (Yadav et al. 2023): trim to the top-`density` magnitudes, elect signs, disjoint mean.

    Args:
        density (`float` or `list[float]`, *optional*, defaults to `0.2`):
            Fraction of each task vector's entries kept (by magnitude); one per model with convention='mergekit'.
        majority_sign_method (`Literal['total', 'frequency']`, *optional*, defaults to `"total"`):
            Sign election: by summed value or by count.
        scale (`float`, *optional*, defaults to `1.0`):
            λ multiplying the merged task vector.
        convention (`Literal['peft', 'mergekit']`, *optional*, defaults to `"peft"`):
            Arithmetic of the sign election and normalisation. 'peft' (hf_ext recipes): PEFT's merge_utils: signs
            elected on the unweighted trimmed task vectors, the agreeing sum divided by the **count** of agreeing
            models. 'mergekit' (mergekit configs): signs elected on the weighted task vectors, divided by the **sum of
            the agreeing weights** when `normalize`; per-model densities allowed.
        normalize (`bool`, *optional*, defaults to `True`):
            convention='mergekit': divide by the summed weights of the agreeing models.
        rescale (`bool`, *optional*, defaults to `False`):
            convention='mergekit': rescale each trimmed task vector to its L1 norm.
    """

    name: ClassVar[str] = "ties"
    needs_base: ClassVar[bool] = True
    density: float | list[float] = field(default=0.2, metadata={"help": "Fraction of each task vector's entries kept (by magnitude); one per model with convention='mergekit'."})
    majority_sign_method: Literal["total", "frequency"] = field(default="total", metadata={"help": "Sign election: by summed value or by count."})
    scale: float = field(default=1.0, metadata={"help": "λ multiplying the merged task vector."})
    convention: Convention = field(default="peft", metadata={"help": _CONVENTION_HELP})
    normalize: bool = field(default=True, metadata={"help": "convention='mergekit': divide by the summed weights of the agreeing models."})
    rescale: bool = field(default=False, metadata={"help": "convention='mergekit': rescale each trimmed task vector to its L1 norm."})

    def merge(self, tensors, weights, base, *, key):
        deltas = self._deltas(tensors, base, key)
        if self.convention == "mergekit":
            density = _per_model(self.density, len(deltas), "density")
            for i in range(len(deltas)):  # one task vector's trim temporaries at a time
                deltas[i] = magnitude_prune(deltas[i], density[i], self.rescale, consume=True)  # the task vectors are ours
            return _task_vector_merge(deltas, weights, base, consensus=_consensus(self.majority_sign_method),
                                      normalize=self.normalize, scale=self.scale)  # fmt: skip
        if isinstance(self.density, list):
            raise InputError("TIES with convention='peft' takes one density; per-model densities need convention='mergekit'.")
        # merge_utils.ties with its trim swapped for the same selection by threshold (peft_magnitude_prune)
        for i in range(len(deltas)):
            deltas[i] = peft_magnitude_prune(deltas[i], self.density)
        flat = torch.stack(deltas).reshape(len(deltas), -1)
        deltas.clear()
        w, mixed = merge_utils.reshape_weight_task_tensors(flat, weights), torch.empty(flat.shape[1], dtype=flat.dtype)
        for start in range(0, flat.shape[1], _SIGN_CHUNK):  # entry by entry: a slice at a time, the same numbers
            part = flat[:, start:start + _SIGN_CHUNK]
            sign_mask = merge_utils.calculate_majority_sign_mask(part, method=self.majority_sign_method)
            mixed[start:start + _SIGN_CHUNK] = merge_utils.disjoint_merge(part * w, sign_mask)
        del flat, part  # the last slice is a view that would keep the stacked task vectors alive
        return base + self.scale * mixed.reshape(base.shape)


@dataclass
class DareMerge(MergeMethod):
    """DARE (Yu et al. 2024): drop task-vector entries at random, rescale by 1/density, then sum or TIES.

    Args:
        density (`float` or `list[float]`, *optional*, defaults to `0.5`):
            Fraction of entries kept; one per model with convention='mergekit'.
        ties (`bool`, *optional*, defaults to `False`):
            Use TIES sign election and disjoint mean after dropping.
        majority_sign_method (`Literal['total', 'frequency']`, *optional*, defaults to `"total"`):
            Sign election (ties=True).
        scale (`float`, *optional*, defaults to `1.0`):
            λ multiplying the merged task vector.
        seed (`int` or `None`, *optional*, defaults to `0`):
            Seed of the drop masks (combined with each tensor's name); None: draw from torch's global generator in
            merge order, as mergekit does after --random-seed.
        convention (`Literal['peft', 'mergekit']`, *optional*, defaults to `"peft"`):
            Arithmetic of the sign election and normalisation. 'peft' (hf_ext recipes): PEFT's merge_utils: signs
            elected on the unweighted trimmed task vectors, the agreeing sum divided by the **count** of agreeing
            models. 'mergekit' (mergekit configs): signs elected on the weighted task vectors, divided by the **sum of
            the agreeing weights** when `normalize`; per-model densities allowed. With 'mergekit', kept entries are
            rescaled to the task vector's L1 norm (`rescale`) instead of by 1/density.
        normalize (`bool`, *optional*, defaults to `False`):
            convention='mergekit': divide by the summed (agreeing) weights.
        rescale (`bool`, *optional*, defaults to `True`):
            convention='mergekit': rescale the kept entries to the task vector's L1 norm.
    """

    name: ClassVar[str] = "dare"
    needs_base: ClassVar[bool] = True
    density: float | list[float] = field(default=0.5, metadata={"help": "Fraction of entries kept; one per model with convention='mergekit'."})
    ties: bool = field(default=False, metadata={"help": "Use TIES sign election and disjoint mean after dropping."})
    majority_sign_method: Literal["total", "frequency"] = field(default="total", metadata={"help": "Sign election (ties=True)."})
    scale: float = field(default=1.0, metadata={"help": "λ multiplying the merged task vector."})
    seed: int | None = field(default=0, metadata={"help": "Seed of the drop masks (combined with each tensor's name); None: draw from torch's global generator in merge order, as mergekit does after --random-seed."})
    convention: Convention = field(default="peft", metadata={"help": _CONVENTION_HELP + " With 'mergekit', kept entries are rescaled to the task vector's L1 norm (`rescale`) instead of by 1/density."})
    normalize: bool = field(default=False, metadata={"help": "convention='mergekit': divide by the summed (agreeing) weights."})
    rescale: bool = field(default=True, metadata={"help": "convention='mergekit': rescale the kept entries to the task vector's L1 norm."})

    def merge(self, tensors, weights, base, *, key):
        deltas = self._deltas(tensors, base, key)
        with _rng(self.seed, key):
            if self.convention == "mergekit":
                density = _per_model(self.density, len(deltas), "density")
                deltas = [random_prune(d, density[i], self.rescale) for i, d in enumerate(deltas)]
                consensus = _consensus(self.majority_sign_method) if self.ties else None
                return _task_vector_merge(deltas, weights, base, consensus=consensus, normalize=self.normalize, scale=self.scale)
            if isinstance(self.density, list):
                raise InputError("DARE with convention='peft' takes one density; per-model densities need convention='mergekit'.")
            if self.ties:
                merged = merge_utils.dare_ties(deltas, weights, self.density, self.majority_sign_method)
            else:
                merged = merge_utils.dare_linear(deltas, weights, self.density)
        return base + self.scale * merged


@dataclass
class DellaMerge(MergeMethod):
    """DELLA (Deep et al. 2024, arXiv 2406.11617): MagPrune — drop each task-vector entry with a probability
    that falls linearly with its magnitude rank (keep probability in density ± epsilon, per row), rescale the
    survivors to the task vector's L1 norm, then TIES' sign election (``ties=True``, "della") or a plain
    weighted sum (``ties=False``, "della_linear"). mergekit's arithmetic.

    Args:
        density (`float` or `list[float]`, *optional*, defaults to `0.5`):
            Mean fraction of entries kept (one value or one per model).
        epsilon (`float` or `list[float]`, *optional*, defaults to `0.15`):
            Half-width of the keep probabilities around density; density ± epsilon must lie in (0, 1).
        ties (`bool`, *optional*, defaults to `True`):
            TIES sign election after pruning (della); False: weighted sum (della_linear).
        normalize (`bool`, *optional*, defaults to `True`):
            Divide by the summed (agreeing) weights.
        rescale (`bool`, *optional*, defaults to `True`):
            Rescale the kept entries to the task vector's L1 norm.
        scale (`float`, *optional*, defaults to `1.0`):
            λ multiplying the merged task vector.
        seed (`int` or `None`, *optional*, defaults to `0`):
            Seed of the drop masks (with each tensor's name); None: torch's global generator (mergekit's).
    """

    name: ClassVar[str] = "della"
    needs_base: ClassVar[bool] = True
    density: float | list[float] = field(default=0.5, metadata={"help": "Mean fraction of entries kept (one value or one per model)."})
    epsilon: float | list[float] = field(default=0.15, metadata={"help": "Half-width of the keep probabilities around density; density ± epsilon must lie in (0, 1)."})
    ties: bool = field(default=True, metadata={"help": "TIES sign election after pruning (della); False: weighted sum (della_linear)."})
    normalize: bool = field(default=True, metadata={"help": "Divide by the summed (agreeing) weights."})
    rescale: bool = field(default=True, metadata={"help": "Rescale the kept entries to the task vector's L1 norm."})
    scale: float = field(default=1.0, metadata={"help": "λ multiplying the merged task vector."})
    seed: int | None = field(default=0, metadata={"help": "Seed of the drop masks (with each tensor's name); None: torch's global generator (mergekit's)."})

    def __post_init__(self) -> None:
        for d, e in zip(_as_list(self.density), _as_list(self.epsilon) * len(_as_list(self.density))):
            if 0 < d < 1 and not (0 < d - e and d + e < 1):
                raise InputError(f"DELLA needs density ± epsilon inside (0, 1); got density={d}, epsilon={e}. Lower epsilon.")

    def merge(self, tensors, weights, base, *, key):
        deltas = self._deltas(tensors, base, key)
        density, epsilon = _per_model(self.density, len(deltas), "density"), _per_model(self.epsilon, len(deltas), "epsilon")
        with _rng(self.seed, key):
            deltas = [magprune(d, density[i], epsilon[i], self.rescale) for i, d in enumerate(deltas)]
        return _task_vector_merge(deltas, weights, base, consensus="sum" if self.ties else None,
                                  normalize=self.normalize, scale=self.scale)  # fmt: skip


@dataclass
class BreadcrumbsMerge(MergeMethod):
    """Model Breadcrumbs (Davari & Belilovsky 2023, arXiv 2312.06795): drop the largest `gamma` and the smallest
    entries of each task vector so `density` remain, then a weighted sum, optionally with TIES' sign election
    (mergekit's ``breadcrumbs`` / ``breadcrumbs_ties``).

    Args:
        density (`float` or `list[float]`, *optional*, defaults to `0.9`):
            Fraction of entries kept (one value or one per model).
        gamma (`float` or `list[float]`, *optional*, defaults to `0.01`):
            Fraction of the largest-magnitude entries removed as outliers.
        ties (`bool`, *optional*, defaults to `False`):
            TIES sign election after pruning (breadcrumbs_ties).
        normalize (`bool`, *optional*, defaults to `False`):
            Divide by the summed (agreeing) weights.
        rescale (`bool`, *optional*, defaults to `False`):
            Rescale the kept entries to the task vector's L1 norm.
        scale (`float`, *optional*, defaults to `1.0`):
            λ multiplying the merged task vector.
    """

    name: ClassVar[str] = "breadcrumbs"
    needs_base: ClassVar[bool] = True
    density: float | list[float] = field(default=0.9, metadata={"help": "Fraction of entries kept (one value or one per model)."})
    gamma: float | list[float] = field(default=0.01, metadata={"help": "Fraction of the largest-magnitude entries removed as outliers."})
    ties: bool = field(default=False, metadata={"help": "TIES sign election after pruning (breadcrumbs_ties)."})
    normalize: bool = field(default=False, metadata={"help": "Divide by the summed (agreeing) weights."})
    rescale: bool = field(default=False, metadata={"help": "Rescale the kept entries to the task vector's L1 norm."})
    scale: float = field(default=1.0, metadata={"help": "λ multiplying the merged task vector."})

    def merge(self, tensors, weights, base, *, key):
        deltas = self._deltas(tensors, base, key)
        density, gamma = _per_model(self.density, len(deltas), "density"), _per_model(self.gamma, len(deltas), "gamma")
        for i in range(len(deltas)):
            deltas[i] = outlier_prune(deltas[i], density[i], gamma[i], self.rescale)
        return _task_vector_merge(deltas, weights, base, consensus="sum" if self.ties else None,
                                  normalize=self.normalize, scale=self.scale)  # fmt: skip


@dataclass
class SlerpMerge(MergeMethod):
    """Spherical interpolation of two models' weights, per tensor (mergekit's SLERP, the Hub's most common merge):
    both tensors are flattened and normalised, ``θ = acos(v0·v1)``, the result is ``sin((1−t)θ)/sin θ · v0 +
    sin(tθ)/sin θ · v1`` on the unnormalised tensors; nearly colinear pairs (|cos θ| > `dot_threshold`) fall back
    to linear interpolation. ``t=0`` gives the first model (mergekit: the base), ``t=1`` the second.

    Args:
        t (`float`, *optional*, defaults to `0.5`):
            Interpolation factor from the first model (0) to the second (1).
        dot_threshold (`float`, *optional*, defaults to `0.9995`):
            Above this |cos θ| interpolate linearly.
    """

    name: ClassVar[str] = "slerp"
    t: float = field(default=0.5, metadata={"help": "Interpolation factor from the first model (0) to the second (1)."})
    dot_threshold: float = field(default=0.9995, metadata={"help": "Above this |cos θ| interpolate linearly."})

    def merge(self, tensors, weights, base, *, key):
        if len(tensors) != 2:
            raise InputError(f"SLERP interpolates exactly two models; got {len(tensors)} for {key!r}.")
        return slerp(self.t, tensors[0], tensors[1], self.dot_threshold)


@dataclass
class NuSlerpMerge(MergeMethod):
    """mergekit's NuSLERP: SLERP of two models (or of their task vectors when a base is given) with
    ``t = w_2 / (w_1 + w_2)`` from the two weights, over the flattened tensor or row/column-wise.

    Args:
        row_wise (`bool`, *optional*, defaults to `False`):
            Interpolate rows (dim 0) instead of columns (flatten=False).
        flatten (`bool`, *optional*, defaults to `True`):
            Treat each tensor as one vector.
    """

    name: ClassVar[str] = "nuslerp"
    row_wise: bool = field(default=False, metadata={"help": "Interpolate rows (dim 0) instead of columns (flatten=False)."})
    flatten: bool = field(default=True, metadata={"help": "Treat each tensor as one vector."})

    def merge(self, tensors, weights, base, *, key):
        if len(tensors) != 2:
            raise InputError(f"NuSLERP interpolates exactly two models; got {len(tensors)} for {key!r}.")
        total = float(weights.sum())
        t = 0.5 if abs(total) < 1e-6 else float(weights[1]) / total
        dim = 0 if self.row_wise else -1
        if base is not None:
            return base + nuslerp(t, tensors[0] - base, tensors[1] - base, dim=dim, flatten=self.flatten)
        return nuslerp(t, tensors[0], tensors[1], dim=dim, flatten=self.flatten)


@dataclass
class ModelStockMerge(MergeMethod):
    """Model Stock (Jang et al. 2024, arXiv 2403.19522): average the finetunes, then pull the average towards the
    base by ``t = k·cos θ / (1 + (k−1)·cos θ)``, θ the mean angle between their task vectors (k models).

    Args:
        filter_wise (`bool`, *optional*, defaults to `False`):
            One angle per row (filter) instead of per tensor.
    """

    name: ClassVar[str] = "model_stock"
    needs_base: ClassVar[bool] = True
    filter_wise: bool = field(default=False, metadata={"help": "One angle per row (filter) instead of per tensor."})

    def merge(self, tensors, weights, base, *, key):
        if base is None or len(tensors) < 2:
            raise InputError(f"model_stock needs a base and at least two finetuned models; got {len(tensors)} for {key!r}.")
        shape = base.shape
        if self.filter_wise:
            w0, ws = (base.unsqueeze(0), [w.unsqueeze(0) for w in tensors]) if base.dim() == 1 else (base, tensors)
        else:
            w0, ws = base.reshape(-1), [w.reshape(-1) for w in tensors]
        offsets = [w - w0 for w in ws]
        cos = []
        for i, a in enumerate(offsets):
            for b in offsets[i + 1:]:
                norms = torch.norm(a, dim=-1) * torch.norm(b, dim=-1)
                cos.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
        cos_theta = torch.stack(cos).mean(dim=0).unsqueeze(-1)
        k = len(ws)
        denominator = 1 + (k - 1) * cos_theta
        singular = denominator.abs() < 1e-6  # opposing updates: keep the base for that filter
        t = torch.where(singular, torch.zeros_like(cos_theta), k * cos_theta / torch.where(singular, 1, denominator))
        return (t * (sum(ws) / k) + (1 - t) * w0).reshape(shape)


@dataclass
class PassthroughMerge(MergeMethod):
    """Copy one model's tensor (optionally scaled): with layer slices it stacks layers of several models into a
    deeper one (a "frankenmerge").

    Args:
        scale (`float` or `None`, *optional*, defaults to `None`):
            Multiply the tensor by this (None: copy).
    """

    name: ClassVar[str] = "passthrough"
    scale: float | None = field(default=None, metadata={"help": "Multiply the tensor by this (None: copy)."})

    def merge(self, tensors, weights, base, *, key):
        if len(tensors) != 1:
            raise InputError(f"passthrough copies one model's tensor; {len(tensors)} models were given for {key!r}. "
                             "Give one source per slice.")
        return tensors[0] if self.scale is None else tensors[0] * self.scale


# --- shared arithmetic (mergekit's generalized task arithmetic and sparsifiers) ---------------------------------


def _as_list(value: float | list[float]) -> list[float]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _per_model(value: float | list[float], n: int, name: str) -> list[float]:
    values = _as_list(value)
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise InputError(f"{name} has {len(values)} values for {n} models; give one value or one per model.")
    return values


def _consensus(majority_sign_method: str) -> str:
    return {"total": "sum", "frequency": "count"}[majority_sign_method]


@contextmanager
def _rng(seed: int | None, key: str):
    if seed is None:  # mergekit: one global stream, seeded once, drawn in merge order
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
        yield


_SIGN_CHUNK = 1 << 20  # entries per slice of the sign election (a few MB of temporaries per model)


def _task_vector_merge(deltas: list[torch.Tensor], weights: torch.Tensor, base: torch.Tensor, *, consensus: str | None,
                       normalize: bool, scale: float) -> torch.Tensor:
    """base + λ · (Σ w_i δ_i [· sign mask]) / (Σ w_i [· sign mask]) — mergekit's generalized task arithmetic."""
    stacked = torch.stack(deltas)
    deltas.clear()  # the list is this function's: the stacked copy is the only one kept
    w = weights.to(stacked.dtype).reshape(-1, *([1] * base.dim()))
    stacked.mul_(w)
    if consensus is not None:  # entry by entry, so a slice of the entries at a time gives the same numbers
        flat, w_col = stacked.reshape(len(stacked), -1), w.reshape(-1, 1)
        mixed, divisor = torch.empty(flat.shape[1], dtype=flat.dtype), torch.empty(flat.shape[1], dtype=flat.dtype)
        for start in range(0, flat.shape[1], _SIGN_CHUNK):  # temporaries of one slice, not of the whole stack
            part, end = flat[:, start:start + _SIGN_CHUNK], start + _SIGN_CHUNK
            sign = part.sign()
            vote = part.sum(dim=0) if consensus == "sum" else sign.sum(dim=0)
            mask = sign == (vote >= 0).to(flat.dtype) * 2 - 1
            torch.sum(part * mask, dim=0, out=mixed[start:end])
            torch.sum(w_col * mask, dim=0, out=divisor[start:end])
        del stacked, flat, part  # the last slice is a view that would keep the stacked task vectors alive
        mixed, divisor = mixed.reshape(base.shape), divisor.reshape(base.shape)
        divisor[divisor == 0] = 1
    else:
        mixed = stacked.sum(dim=0)
        divisor = w.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed /= divisor
    if scale != 1:
        mixed *= scale
    return base + mixed


def _rescaled(tensor: torch.Tensor, mask: torch.Tensor, rescale: bool, eps: float = 1e-7) -> torch.Tensor:
    masked = tensor * mask
    if not rescale:
        return masked
    before, after = tensor.abs().sum(), masked.abs().sum()
    return masked if before < eps or after < eps else masked * (before / after)


def magnitude_prune(tensor: torch.Tensor, density: float, rescale: bool = False, *, consume: bool = False) -> torch.Tensor:
    """Keep the ``max(1, ⌊density·n⌋)`` largest-magnitude entries (TIES' trim).

    ``consume=True``: the caller drops `tensor` (a streamed merge's task vector), so where values tie at the
    threshold its memory is the sort's buffer (:func:`_prune_by_sort_consuming`); the result is the same.

    Args:
        tensor (`torch.Tensor`):
            The tensor (a task vector) to trim; the others are zeroed.
        density (`float`):
            Fraction of the entries kept; 1 or more returns `tensor` itself, 0 or less an all-zero tensor.
        rescale (`bool`, *optional*, defaults to `False`):
            Rescale the kept entries so the result has the L1 norm of `tensor`.
        consume (`bool`, *optional*, defaults to `False`):
            The caller will not use `tensor` again: a contiguous float32 `tensor` may be overwritten (it ends up
            holding its sorted magnitudes) instead of sorting a copy.
    """
    if density >= 1:
        return tensor
    if density <= 0 or tensor.numel() == 0:
        return torch.zeros_like(tensor)
    k = max(1, int(density * tensor.numel()))
    magnitude = tensor.abs().reshape(-1).float()
    mask = top_magnitude_mask(magnitude, k)
    if mask is None and consume and tensor.dtype == torch.float32 and tensor.is_contiguous():
        del magnitude
        return _prune_by_sort_consuming(tensor, k, rescale)
    if mask is None:  # values tie at the threshold: the reference's own choice among them (its argsort)
        order = argsort_inplace(magnitude, descending=True)
        del magnitude  # sorted in place: its memory held the sort's values
        mask = torch.zeros(tensor.numel(), dtype=torch.bool)
        mask[order[:k]] = True
        del order
    else:
        del magnitude
    return _rescaled(tensor, mask.reshape_as(tensor), rescale)


def _prune_by_sort_consuming(tensor: torch.Tensor, k: int, rescale: bool) -> torch.Tensor:
    """``tensor * mask`` for the mask of argsort's first `k` magnitudes, with `tensor` itself as the sort's buffer.

    The sign bits are kept aside (a bool per entry), the magnitudes sorted in place (:func:`argsort_inplace`: the
    reference's kernel, so its choice among tied values), and the result rebuilt from the sorted values: |x| at
    the kept entries, +0 elsewhere, then each negative entry's sign restored — bit for bit ``x * mask`` (±0 where
    dropped). A float32 tensor less than sorting a copy of the magnitudes, at a streamed TIES merge's peak.
    `tensor` is left holding the sorted magnitudes."""
    shape, flat = tensor.shape, tensor.reshape(-1)
    negative = flat.signbit()
    flat.abs_()
    before = flat.view(shape).sum() if rescale else None  # tensor.abs().sum(): the same values in the same order
    order = argsort_inplace(flat, descending=True)  # flat now holds the magnitudes, sorted
    out = torch.zeros_like(flat)
    out[order[:k]] = flat[:k]
    del order
    for start in range(0, out.numel(), _SIGN_CHUNK):
        part, neg = out[start:start + _SIGN_CHUNK], negative[start:start + _SIGN_CHUNK]
        out[start:start + _SIGN_CHUNK] = torch.where(neg, part.neg(), part)
    del negative
    out = out.view(shape)
    if rescale:  # as _rescaled
        after = out.abs().sum()
        if not (before < 1e-7 or after < 1e-7):
            out = out * (before / after)
    return out


def peft_magnitude_prune(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """``peft.utils.merge_utils.prune(tensor, density, "magnitude")``, selecting by threshold (``top_magnitude_mask``).

    Args:
        tensor (`torch.Tensor`):
            The tensor (a task vector) to trim.
        density (`float`):
            Fraction of the entries kept (``⌊density·n⌋`` of them); outside ``[0, 1)`` PEFT's ``prune`` decides.
    """
    if not 0 <= density < 1:
        return merge_utils.prune(tensor, density, method="magnitude")
    k = int(density * tensor.numel())
    magnitude = tensor.abs().reshape(-1)
    mask = top_magnitude_mask(magnitude, k)
    if mask is None:  # values tie at the threshold: PEFT's own topk picks among them
        del magnitude
        return merge_utils.magnitude_based_pruning(tensor, density)
    del magnitude
    return tensor * mask.reshape(tensor.shape)


def top_magnitude_mask(magnitude: torch.Tensor, k: int) -> torch.Tensor | None:
    """The entries of the flat `magnitude` that a full sort (or topk) puts in its first `k`, or None when the
    choice depends on the sort's tie-breaking.

    The k-th largest value ``v`` comes from a selection (:func:`kth_smallest`, O(n), no sort and no int64 index
    of the whole tensor). ``magnitude >= v`` is exactly the sorted top-k when it holds k entries. When more values equal
    ``v`` the choice among them is the sort's; it does not matter when ``v`` is 0 (``x * 0`` and ``x * 1`` are
    the same ±0 for a zero ``x``), otherwise the caller falls back to the reference sort.

    Args:
        magnitude (`torch.Tensor`):
            Flat tensor of the entries' magnitudes (``tensor.abs().reshape(-1)``).
        k (`int`):
            How many entries to keep: 0 or less gives an all-False mask, ``numel()`` or more an all-True one.
    """
    n = magnitude.numel()
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool)
    if k >= n:
        return torch.ones(n, dtype=torch.bool)
    (threshold,) = kth_smallest(magnitude, [n - k + 1])
    mask = magnitude >= threshold
    if threshold == 0 or int(mask.sum()) == k:
        return mask
    return None


def kth_smallest(values: torch.Tensor, ks: list[int]) -> list[torch.Tensor]:
    """The `ks`-th smallest entries (1-based, as ``torch.kthvalue(values, k).values``) of the flat `values`.

    One copy of `values` is partitioned in place by numpy's introselect; ``torch.kthvalue`` on CPU keeps a copy
    and an int64 index of the whole tensor (3× its size, the peak of a streamed TIES merge). The k-th value
    is the same number either way (ties change which entry holds it, never its value).

    Args:
        values (`torch.Tensor`):
            The values (flattened); left unchanged.
        ks (`list[int]`):
            The 1-based ranks wanted; one 0-d tensor is returned per rank, in the same order.
    """
    if values.dtype not in (torch.float32, torch.float64, torch.float16):  # no numpy dtype (bfloat16): torch's
        return [torch.kthvalue(values.reshape(-1), k).values for k in ks]
    work = values.detach().reshape(-1).clone().numpy()
    positions = [k - 1 for k in ks]
    work.partition(positions)
    return [torch.tensor(work[i]) for i in positions]


def argsort_inplace(values: torch.Tensor, *, descending: bool) -> torch.Tensor:
    """``torch.argsort(values, descending=descending)`` of a flat tensor the caller owns, sorting `values` in place.

    The same sort kernel on the same data, so the same order, ties included (the reference's choice among tied
    values); writing the sorted values over the input saves the copy ``argsort`` makes (a float32 tensor's
    size, at the peak of a merge). Falls back to ``argsort`` where torch refuses the aliasing.

    Args:
        values (`torch.Tensor`):
            Flat tensor the caller owns; overwritten with its sorted values.
        descending (`bool`):
            Sort from the largest value to the smallest.
    """
    indices = torch.empty(values.shape, dtype=torch.long)
    try:
        torch.sort(values, descending=descending, out=(values, indices))
    except RuntimeError:
        return torch.argsort(values, descending=descending)
    return indices


def random_prune(tensor: torch.Tensor, density: float, rescale: bool = True) -> torch.Tensor:
    """Keep each entry with probability `density` (DARE's drop), from torch's current generator.

    Args:
        tensor (`torch.Tensor`):
            The tensor (a task vector) to drop entries from.
        density (`float`):
            Probability of keeping each entry; 1 or more returns `tensor` itself.
        rescale (`bool`, *optional*, defaults to `True`):
            Rescale the kept entries so the result has the L1 norm of `tensor`.
    """
    if density >= 1:
        return tensor
    mask = torch.bernoulli(torch.full_like(tensor, density, dtype=torch.float32))
    return _rescaled(tensor.float(), mask, rescale).to(tensor.dtype)


def outlier_prune(tensor: torch.Tensor, density: float, gamma: float, rescale: bool = False) -> torch.Tensor:
    """Breadcrumbs: drop the top `gamma` fraction by magnitude and enough of the smallest to keep `density`.

    Args:
        tensor (`torch.Tensor`):
            The tensor (a task vector) to prune.
        density (`float`):
            Fraction of the entries kept; 1 or more returns `tensor` itself.
        gamma (`float`):
            Fraction of the largest-magnitude entries dropped as outliers.
        rescale (`bool`, *optional*, defaults to `False`):
            Rescale the kept entries so the result has the L1 norm of `tensor`.
    """
    if density >= 1:
        return tensor
    n = tensor.numel()
    keep, top = int(density * n), int(gamma * n)
    bottom = max(0, n - keep - top)
    magnitude = tensor.abs().reshape(-1).float()
    mask = torch.zeros(n, dtype=torch.bool)
    if keep > 0:  # ranks bottom .. bottom+keep-1 of the ascending sort, by two thresholds when no value ties across them
        lo, hi = kth_smallest(magnitude, [bottom + 1, bottom + keep])
        mask = (magnitude >= lo).logical_and_(magnitude <= hi)
        if int(mask.sum()) != keep:
            del mask
            order = argsort_inplace(magnitude, descending=False)
            mask = torch.zeros(n, dtype=torch.bool)
            mask[order[bottom:bottom + keep]] = True
            del order
    del magnitude
    return _rescaled(tensor, mask.reshape_as(tensor), rescale)


def magprune(tensor: torch.Tensor, density: float, epsilon: float, rescale: bool = True) -> torch.Tensor:
    """DELLA's MagPrune: keep probabilities rise linearly with magnitude rank, from density − ε to density + ε.

    Args:
        tensor (`torch.Tensor`):
            The tensor (a task vector) to prune; ranks are taken per row (a 1-D tensor is one row).
        density (`float`):
            Mean keep probability; 1 or more returns `tensor` itself, 0 or less an all-zero tensor.
        epsilon (`float`):
            Half-width of the keep probabilities around `density`; ``density ± epsilon`` must lie in (0, 1).
        rescale (`bool`, *optional*, defaults to `True`):
            Rescale the kept entries so the result has the L1 norm of `tensor`.
    """
    if density >= 1:
        return tensor
    if density <= 0:
        return torch.zeros_like(tensor)
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise InputError(f"DELLA needs density ± epsilon inside (0, 1); got density={density}, epsilon={epsilon}.")
    shape = tensor.shape
    rows = tensor.unsqueeze(0) if tensor.dim() < 2 else tensor
    ranks = torch.argsort(rows.abs(), dim=1, descending=False).argsort(dim=1).to(torch.float32) + 1
    lo, hi = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
    probs = (density - epsilon) + ((ranks - lo) / (hi - lo)).clamp(0, 1) * 2 * epsilon
    mask = torch.bernoulli(probs).to(torch.float32)
    return _rescaled(rows.float(), mask, rescale).to(tensor.dtype).reshape(shape)


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, dot_threshold: float = 0.9995, eps: float = 1e-8,
          chunk: int = 1024 * 1024) -> torch.Tensor:
    """mergekit's SLERP of two tensors (flattened; norms accumulated in chunks of `chunk` entries).

    Args:
        t (`float`):
            Interpolation factor: 0 gives `v0`, 1 gives `v1`.
        v0 (`torch.Tensor`):
            The first tensor.
        v1 (`torch.Tensor`):
            The second tensor, of the same shape; the result has that shape.
        dot_threshold (`float`, *optional*, defaults to `0.9995`):
            Above this |cos θ| of the normalised tensors, interpolate linearly.
        eps (`float`, *optional*, defaults to `1e-8`):
            A norm at or below this is taken as 1 (the tensor is not normalised).
        chunk (`int`, *optional*, defaults to `1048576`):
            Entries per slice when computing the norms, the dot product and the result.
    """
    a, b = v0.reshape(1, -1), v1.reshape(1, -1)
    if not a.shape[1]:
        return ((1 - t) * a + t * b).reshape(v0.shape)
    spans = range(0, a.shape[1], chunk)
    norm_a = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(a[:, s:s + chunk], dim=1, keepdim=True) for s in spans]), dim=0)
    norm_b = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(b[:, s:s + chunk], dim=1, keepdim=True) for s in spans]), dim=0)
    norm_a, norm_b = torch.where(norm_a > eps, norm_a, 1), torch.where(norm_b > eps, norm_b, 1)
    dot = torch.stack([((a[:, s:s + chunk] / norm_a) * (b[:, s:s + chunk] / norm_b)).sum(dim=1, keepdim=True)
                       for s in spans]).sum(dim=0).clamp(-1, 1)  # fmt: skip
    tt = torch.tensor([[t]], dtype=a.dtype)
    linear = dot.abs() > dot_threshold
    theta = torch.acos(torch.where(linear, 0, dot))
    sin_theta = torch.sin(theta)
    coef_a = torch.where(linear, 1 - tt, torch.sin((1 - tt) * theta) / sin_theta)
    coef_b = torch.where(linear, tt, torch.sin(tt * theta) / sin_theta)
    out = torch.empty_like(a)
    for s in spans:
        out[:, s:s + chunk] = coef_a * a[:, s:s + chunk] + coef_b * b[:, s:s + chunk]
    return out.reshape(v0.shape)


def nuslerp(t: float, v0: torch.Tensor, v1: torch.Tensor, *, dim: int = -1, flatten: bool = False, eps: float = 1e-8) -> torch.Tensor:
    """mergekit's NuSLERP kernel: SLERP along `dim` (or of the flattened tensors), linear where colinear.

    Args:
        t (`float`):
            Interpolation factor, the same for every vector: 0 gives `v0`, 1 gives `v1`.
        v0 (`torch.Tensor`):
            The first tensor; each of its vectors along `dim` is interpolated separately.
        v1 (`torch.Tensor`):
            The second tensor, of the shape of `v0` (and of the result).
        dim (`int`, *optional*, defaults to `-1`):
            The dimension the vectors run along (:class:`NuSlerpMerge` passes 0 for ``row_wise=True``, else -1).
        flatten (`bool`, *optional*, defaults to `False`):
            Interpolate the whole flattened tensors as one vector (`dim` is then ignored).
        eps (`float`, *optional*, defaults to `1e-8`):
            Vectors with ``1 − cos² ≤ eps²`` count as colinear and are interpolated linearly.
    """
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)
    u0 = v0 / torch.norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / torch.norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = torch.sum(u0 * u1, dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    out = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    out = torch.where(colinear, (1 - t) * v0 + t * v1, out)
    if dim != -1 and not flatten:
        out = out.transpose(dim, -1)
    return out.reshape(shape)


MERGE_METHODS: dict[str, type[MergeMethod]] = {
    cls.name: cls for cls in (LinearMerge, TaskArithmetic, TiesMerge, DareMerge, DellaMerge, BreadcrumbsMerge,
                              SlerpMerge, NuSlerpMerge, ModelStockMerge, PassthroughMerge)
}


def get_merge_method(method: str | MergeMethod, **params: Any) -> MergeMethod:
    """A merge-method object from its name and settings (or the object itself).

    Args:
        method (`str` or `MergeMethod`):
            A key of `MERGE_METHODS` (linear, task_arithmetic, ties, dare, della, breadcrumbs, slerp, nuslerp,
            model_stock, passthrough), or a method object (returned as is).
        **params:
            The method's settings (fields of its dataclass); unknown ones raise an `InputError` listing the valid ones.
    """
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
