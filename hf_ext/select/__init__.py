"""Instruction-data selection: scorers/featurizers for ``datasets.map`` and selectors that
return indices for ``Dataset.select``."""

from .judge import JudgeScorer, parse_alpagasus_score
from .scores import ResponseLengthScorer
from .selectors import SELECTORS, Selector, get_selector, register_selector, select
from .stats import selection_stats

# The SAE diversity selectors (sae_greedy, sae_greedy_sorted, sae_simscale) and kcenter register
# when their module loads; importing any hf_ext.select module runs this file first.
from .sae import selection as _sae_selection  # noqa: F401

__all__ = [
    "JudgeScorer",
    "ResponseLengthScorer",
    "SELECTORS",
    "Selector",
    "get_selector",
    "parse_alpagasus_score",
    "register_selector",
    "select",
    "selection_stats",
]
