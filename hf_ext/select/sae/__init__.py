"""SAE diversity selection (arXiv 2502.14050): `SAEFeaturizer` (sparse SAE feature ids per
example for ``datasets.map``), `TopKSAE` (sparsify / sae-lens weights, save/load/push),
`train_sae` (a small TopK trainer), selectors ``sae_greedy``, ``sae_greedy_sorted``,
``sae_simscale``, ``kcenter``, and coverage / diversity metrics.

The selectors register on import of `hf_ext.select`; the torch-backed parts load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .metrics import budget_grid, coverage_curves, embedding_diversity, feature_coverage, length_feature_corr, plot_coverage
from .selection import (
    coverage,
    feature_matrix,
    greedy_max_coverage,
    greedy_max_coverage_naive,
    kcenter,
    simscale,
    sorted_new_features,
)

_LAZY = {
    "SAEFeaturizer": ".featurizer",
    "TopKSAE": ".model",
    "SAETrainingConfig": ".train", "collect_activations": ".train", "train_sae": ".train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_LAZY, "budget_grid", "coverage", "coverage_curves", "embedding_diversity", "feature_coverage", "feature_matrix",
           "greedy_max_coverage", "greedy_max_coverage_naive", "kcenter", "length_feature_corr", "plot_coverage", "simscale",
           "sorted_new_features"]
