"""Selection statistics as an `evaluate` metric: token-length statistics of a selection
(and of its pool), category counts and per-category share relative to the pool."""

import datasets
import evaluate

from hf_ext.select.stats import selection_stats

_DESCRIPTION = """Statistics of a data selection: mean/median/p10/p90/min/max/total response tokens of
the selected examples (and of the pool when `pool_response_tokens` is given), counts per
category, and each category's share in the selection divided by its share in the pool."""

_KWARGS_DESCRIPTION = """
Args:
    response_tokens (`list[int]`): response length in tokens of each selected example.
    categories (`list[str]`, optional): category of each selected example.
    pool_response_tokens (`list[int]`, optional): the same for every pool example.
    pool_categories (`list[str]`, optional): category of every pool example.
Returns:
    dict with `selected_size`, `mean_response_tokens` ({"selected", "pool"}), `response_tokens`
    ({"selected": stats, "pool": stats}), and with categories `category_counts` and
    `category_share_vs_pool`.
Examples:
    >>> from hf_ext.metrics import metric_path
    >>> stats = evaluate.load(metric_path("selection_stats"))
    >>> stats.compute(response_tokens=[10, 30], pool_response_tokens=[10, 30, 2, 6])["mean_response_tokens"]
    {'selected': 20.0, 'pool': 12.0}
"""

_CITATION = """@article{zhao2024long, title={Long Is More for Alignment: A Simple but Tough-to-Beat Baseline for
Instruction Fine-Tuning}, author={Zhao, Hao and Andriushchenko, Maksym and Croce, Francesco and Flammarion,
Nicolas}, journal={arXiv preprint arXiv:2402.04833}, year={2024}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SelectionStats(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # Categories are optional, so they travel as a compute kwarg, not a feature.
            features=datasets.Features({"response_tokens": datasets.Value("int64")}),
        )

    def _compute(self, response_tokens, categories=None, pool_response_tokens=None, pool_categories=None):
        return selection_stats(response_tokens, pool_response_tokens, categories, pool_categories)
