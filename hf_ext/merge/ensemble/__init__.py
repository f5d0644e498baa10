"""X-ELM expert ensembles (Blevins et al. 2024, arXiv 2401.10440).

Experts branched from one seed, each continued on one cluster of a multilingual corpus, are mixed at
inference by weights computed from the context. One concept per module:

- :mod:`.clusters`: splitting the corpus — :func:`balanced_tfidf_kmeans` (TF-IDF + scikit-learn k-means,
  then equal-size assignment) or :func:`typology_clusters` (language families);
- :mod:`.routers`: the mixture weights — :class:`BayesianRouter`, :class:`ClusterRouter`,
  :class:`UniformRouter`;
- :mod:`.modeling`: :class:`ExpertEnsemble`, a causal LM whose output is the mixture of its experts.
"""

from .clusters import LANGUAGE_FAMILIES, TfidfClusters, balanced_tfidf_kmeans, typology_clusters
from .modeling import EnsembleOutput, ExpertEnsemble, ExpertEnsembleConfig
from .routers import BayesianRouter, ClusterRouter, Router, UniformRouter, router_from_dict

__all__ = ["ExpertEnsemble", "ExpertEnsembleConfig", "BayesianRouter", "ClusterRouter", "UniformRouter",
           "TfidfClusters", "balanced_tfidf_kmeans", "typology_clusters", "LANGUAGE_FAMILIES", "EnsembleOutput",
           "Router", "router_from_dict"]  # fmt: skip
