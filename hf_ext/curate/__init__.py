"""Pretraining-data curation: DCLM-Baseline / RefinedWeb / Gopher heuristics with DCLM's
semantics, Llama 3's web heuristics, dedup (exact, URL, MinHash, BFF), quality classifiers
(fastText, transformers), filter audits (AboutMe) and DCLM's CORE/EXTENDED aggregation.

Every filter returns ``(keep, reason)``; pipelines run as ``datasets.map`` functions, from
Python, or as datatrove steps (`hf_ext.curate.datatrove_steps`).
"""

from .audit import card_section, plot_retention, retention_by_group, url_site_type, url_tld, weighted_log_odds
from .base import Doc, Filter, Modifier
from .dclm_eval import CORE_TASKS, DCLM_TASKS, aggregate, centered
from .dedup import BFFDeduplicator, BloomFilter, MinHashDeduplicator, exact_dedup, url_dedup
from .heuristics import (
    AlphabeticWordsFilter,
    BulletLinesFilter,
    EllipsisLinesFilter,
    GopherRepetitionFilter,
    PageLengthFilter,
    StopWordsFilter,
    SymbolRatioFilter,
    WordLengthFilter,
)
from .langid import LanguageIDFilter
from .llama3 import DirtyWordsFilter, DuplicatedNgramCoverageFilter, TokenKLFilter, dedup_lines_in_bucket
from .modifiers import NewlineCollapse, RefinedWebLineEdits, URLRemoval, WordRemovalRatioFilter
from .pipeline import PIPELINES, STEPS, CurationPipeline, curation_stats
from .quality import FastTextQualityScorer, HFQualityScorer, select_by_score, train_fasttext_classifier

__all__ = [
    "AlphabeticWordsFilter", "BFFDeduplicator", "BloomFilter", "BulletLinesFilter", "CORE_TASKS", "CurationPipeline",
    "DCLM_TASKS", "DirtyWordsFilter", "Doc", "DuplicatedNgramCoverageFilter", "EllipsisLinesFilter", "FastTextQualityScorer",
    "Filter", "GopherRepetitionFilter", "HFQualityScorer", "LanguageIDFilter", "MinHashDeduplicator", "Modifier",
    "NewlineCollapse", "PIPELINES", "PageLengthFilter", "RefinedWebLineEdits", "STEPS", "StopWordsFilter",
    "SymbolRatioFilter", "TokenKLFilter", "URLRemoval", "WordLengthFilter", "WordRemovalRatioFilter", "aggregate",
    "card_section", "centered", "curation_stats", "dedup_lines_in_bucket", "exact_dedup", "plot_retention", "retention_by_group",
    "select_by_score", "train_fasttext_classifier", "url_dedup", "url_site_type", "url_tld", "weighted_log_odds",
]
