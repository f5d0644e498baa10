"""Feature coverage as an `evaluate` metric (SAE diversity selection, arXiv 2502.14050): distinct
SAE features covered by a selection, its share of the pool's, mean features per example and,
with embeddings, the mean pairwise cosine distance of the selection."""

import datasets
import evaluate

from hf_ext.select.sae.metrics import feature_coverage

_DESCRIPTION = """Diversity of a data selection measured with sparse-autoencoder features: `coverage` is
|∪ F(x)| over the selected examples (F(x) = the SAE latents activated by x), `coverage_fraction`
divides it by the pool's coverage when `pool_feature_ids` is given, `mean_features` is the mean
|F(x)|, and `embedding_diversity` (with `embeddings`) is 1 − mean pairwise cosine similarity."""

_KWARGS_DESCRIPTION = """
Args:
    feature_ids (`list[list[int]]`): activated SAE feature ids of each selected example
        (the `sae_ids` column that `SAEFeaturizer` adds).
    pool_feature_ids (`list[list[int]]`, optional): the same for every pool example.
    embeddings (`list[list[float]]`, optional): an embedding per selected example (`sae_embedding`).
Returns:
    dict with `coverage`, `pool_coverage`, `coverage_fraction`, `mean_features` and, with
    embeddings, `embedding_diversity`.
Examples:
    >>> from hf_ext.metrics import metric_path
    >>> cov = evaluate.load(metric_path("feature_coverage"))
    >>> cov.compute(feature_ids=[[1, 2], [2, 3]], pool_feature_ids=[[1, 2], [2, 3], [7, 8]])["coverage_fraction"]
    0.6
"""

_CITATION = """@article{yang2025diversity, title={Diversity-driven Data Selection for Language Model Tuning through
Sparse Autoencoder}, author={Yang, Xianjun and Nie, Shaoliang and Liu, Lijuan and Gururangan, Suchin and Karn, Ujjwal
and others}, journal={arXiv preprint arXiv:2502.14050}, year={2025}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FeatureCoverage(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"feature_ids": datasets.Sequence(datasets.Value("int64"))}),
        )

    def _compute(self, feature_ids, pool_feature_ids=None, embeddings=None):
        out = feature_coverage(feature_ids, embeddings=embeddings)
        if pool_feature_ids is not None:
            pool = feature_coverage(pool_feature_ids)["coverage"]
            out["pool_coverage"] = pool
            out["coverage_fraction"] = round(out["coverage"] / pool, 4) if pool else 0.0
        return out
