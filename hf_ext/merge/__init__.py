"""Weight arithmetic, model merging and expert ensembles.

- Merge methods (mergekit-style objects): :class:`LinearMerge` (model soup), :class:`TaskArithmetic`,
  :class:`TiesMerge`, :class:`DareMerge`, :class:`DellaMerge`, :class:`BreadcrumbsMerge`, :class:`SlerpMerge`,
  :class:`NuSlerpMerge`, :class:`ModelStockMerge`, :class:`PassthroughMerge`;
  :func:`from_mergekit_config` runs mergekit YAML configs (slices, gradients, filters) with mergekit's semantics; drivers :func:`merge_models` (streams to a folder, card with
  ``base_model_relation: merge``), :func:`average_models` (in-memory soup), :func:`average_checkpoints`
  (Llama 3 model averaging).
- X-ELM: :class:`ExpertEnsemble` (a causal LM whose output is the mixture of its experts),
  routers :class:`BayesianRouter`, :class:`ClusterRouter`, :class:`UniformRouter`, and
  :func:`balanced_tfidf_kmeans` / :func:`typology_clusters` to split a corpus.
"""

from .merge import as_sources, average_checkpoints, average_models, merge_models, merged_tensors
from .mergekit import MERGEKIT_METHODS, MergekitMerge, from_mergekit_config
from .methods import (
    MERGE_METHODS,
    BreadcrumbsMerge,
    DareMerge,
    DellaMerge,
    LinearMerge,
    MergeMethod,
    ModelStockMerge,
    NuSlerpMerge,
    PassthroughMerge,
    SlerpMerge,
    TaskArithmetic,
    TiesMerge,
    get_merge_method,
)
from ..weights import SafetensorsWriter, WeightSource, fingerprint

__all__ = [
    "MergeMethod", "LinearMerge", "TaskArithmetic", "TiesMerge", "DareMerge", "DellaMerge", "BreadcrumbsMerge",
    "SlerpMerge", "NuSlerpMerge", "ModelStockMerge", "PassthroughMerge", "MERGE_METHODS", "get_merge_method",
    "from_mergekit_config", "MergekitMerge", "MERGEKIT_METHODS",
    "merge_models", "average_models", "average_checkpoints", "merged_tensors", "as_sources",
    "WeightSource", "SafetensorsWriter", "fingerprint",
    "ExpertEnsemble", "ExpertEnsembleConfig", "BayesianRouter", "ClusterRouter", "UniformRouter",
    "TfidfClusters", "balanced_tfidf_kmeans", "typology_clusters",
]

# The ensemble (X-ELM) pulls in transformers' modelling code (~10 s of imports); a merge never needs it,
# so its names load on first use.
_LAZY = {name: ".ensemble" for name in ("BayesianRouter", "ClusterRouter", "ExpertEnsemble", "ExpertEnsembleConfig",
                                        "TfidfClusters", "UniformRouter", "balanced_tfidf_kmeans", "typology_clusters")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
