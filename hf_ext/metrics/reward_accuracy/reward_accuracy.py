"""Reward-model accuracy as an `evaluate` metric: how often the chosen response gets the
higher reward (ties count as wrong, as in TRL's RewardTrainer), plus the mean margin."""

import datasets
import evaluate

_DESCRIPTION = """Pairwise accuracy of a reward model: the fraction of preference pairs whose chosen response
gets a strictly higher reward than the rejected one (TRL RewardTrainer's `accuracy`), the fraction of
ties, and the mean reward margin (chosen − rejected)."""

_KWARGS_DESCRIPTION = """
Args:
    chosen_rewards (`list[float]`): reward of the chosen response of each pair.
    rejected_rewards (`list[float]`): reward of the rejected response of each pair.
Returns:
    dict with `accuracy`, `ties` (fractions of pairs) and `margin` (mean chosen − rejected).
Examples:
    >>> from hf_ext.metrics import metric_path
    >>> acc = evaluate.load(metric_path("reward_accuracy"))
    >>> acc.compute(chosen_rewards=[1.0, 0.2, 0.5], rejected_rewards=[0.0, 0.4, 0.5])
    {'accuracy': 0.3333333333333333, 'ties': 0.3333333333333333, 'margin': 0.26666666666666666}
"""

_CITATION = """@article{yu2024critic, title={Self-Generated Critiques Boost Reward Modeling for Language Models},
author={Yu, Yue and Chen, Zhengxing and Zhang, Aston and others}, journal={arXiv preprint arXiv:2411.16646}, year={2024}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RewardAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"chosen_rewards": datasets.Value("float64"), "rejected_rewards": datasets.Value("float64")}),
        )

    def _compute(self, chosen_rewards, rejected_rewards):
        n = len(chosen_rewards)
        if n == 0:
            return {"accuracy": float("nan"), "ties": float("nan"), "margin": float("nan")}
        wins = sum(c > r for c, r in zip(chosen_rewards, rejected_rewards))
        ties = sum(c == r for c, r in zip(chosen_rewards, rejected_rewards))
        margin = sum(c - r for c, r in zip(chosen_rewards, rejected_rewards)) / n
        return {"accuracy": wins / n, "ties": ties / n, "margin": margin}
