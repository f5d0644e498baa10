"""DCLM evaluation aggregation: centered accuracy, CORE (22 low-variance tasks) and
EXTENDED (all 53 tasks), with the original ("v1") and the 2025 corrected ("v2") random
baselines.

Centered accuracy is ``(acc - b) / (1 - b)`` with ``b`` the task's random baseline, so 0 is
chance and 1 is perfect. Sources (mlfoundations/dclm):

- task list, categories and v1 baselines: ``eval/eval_meta_data_v1.csv``;
- the CORE task list: ``eval/additional_aggregation.json`` (``low_variance_datasets``);
- the aggregation code: ``eval/aggregated_metrics.py`` (mean of centered results);
- v2 baselines: the v2 table (``eval/eval_meta_data.csv``) was not in the public material we
  could read, so the 12 changed baselines below were solved from the published v2 aggregates
  of DCLM-7B (``exp_data/evals/evaluation_open_lm_dclm_7b_8k.json``: Core_v2, Extended_v2, the six
  category means, rw_small / 95%_CI_above centred). With them every one of those published numbers
  is reproduced to 1e-15 (see tests/test_curate_eval.py).

>>> scores = aggregate({t: 1.0 for t in DCLM_TASKS}, version="v2")
>>> scores["core"], scores["extended"]
(1.0, 1.0)
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Literal, Mapping

from ..errors import InputError

# task: (category, v1 random baseline %, v2 random baseline %)
DCLM_TASKS: dict[str, tuple[str, float, float]] = {
    "mmlu_zeroshot": ("world knowledge", 25, 25),
    "hellaswag_zeroshot": ("language understanding", 25, 25),
    "jeopardy": ("world knowledge", 0, 0),
    "triviaqa_sm_sub": ("world knowledge", 0, 0),
    "gsm8k_cot": ("symbolic problem solving", 0, 0),
    "agi_eval_sat_math_cot": ("symbolic problem solving", 0, 0),
    "aqua_cot": ("symbolic problem solving", 0, 0),
    "svamp_cot": ("symbolic problem solving", 0, 0),
    "bigbench_qa_wikidata": ("world knowledge", 0, 0),
    "arc_easy": ("world knowledge", 25, 25),
    "arc_challenge": ("world knowledge", 25, 25),
    "mmlu_fewshot": ("world knowledge", 25, 25),
    "bigbench_misconceptions": ("world knowledge", 50, 50),
    "copa": ("commonsense reasoning", 50, 50),
    "siqa": ("commonsense reasoning", 33.3, 50),
    "commonsense_qa": ("commonsense reasoning", 20, 40.3),
    "piqa": ("commonsense reasoning", 50, 50),
    "openbook_qa": ("commonsense reasoning", 25, 25),
    "bigbench_novel_concepts": ("commonsense reasoning", 20, 25),
    "bigbench_strange_stories": ("commonsense reasoning", 50, 50),
    "bigbench_strategy_qa": ("commonsense reasoning", 50, 50),
    "lambada_openai": ("language understanding", 0, 0),
    "hellaswag": ("language understanding", 25, 25),
    "winograd": ("language understanding", 50, 50),
    "winogrande": ("language understanding", 50, 50),
    "bigbench_conlang_translation": ("language understanding", 0, 0),
    "bigbench_language_identification": ("language understanding", 9.1, 25),
    "bigbench_conceptual_combinations": ("language understanding", 25, 33),
    "bigbench_elementary_math_qa": ("symbolic problem solving", 20, 25),
    "bigbench_dyck_languages": ("symbolic problem solving", 0, 0),
    "agi_eval_lsat_ar": ("symbolic problem solving", 20, 25),
    "bigbench_cs_algorithms": ("symbolic problem solving", 0, 0),
    "bigbench_logical_deduction": ("symbolic problem solving", 20, 25),
    "bigbench_operators": ("symbolic problem solving", 0, 0),
    "bigbench_repeat_copy_logic": ("symbolic problem solving", 0, 0),
    "simple_arithmetic_nospaces": ("symbolic problem solving", 0, 0),
    "simple_arithmetic_withspaces": ("symbolic problem solving", 0, 0),
    "math_qa": ("symbolic problem solving", 20, 20),
    "logi_qa": ("symbolic problem solving", 27, 25),
    "pubmed_qa_labeled": ("reading comprehension", 0, 0),
    "squad": ("reading comprehension", 0, 0),
    "agi_eval_lsat_rc": ("reading comprehension", 20, 25),
    "agi_eval_lsat_lr": ("reading comprehension", 20, 25),
    "coqa": ("reading comprehension", 0, 0),
    "bigbench_understanding_fables": ("reading comprehension", 20, 25),
    "boolq": ("reading comprehension", 62, 62),
    "agi_eval_sat_en": ("reading comprehension", 25, 25),
    "winogender_mc_female": ("safety", 50, 50),
    "winogender_mc_male": ("safety", 50, 50),
    "enterprise_pii_classification": ("safety", 50, 50),
    "bbq": ("safety", 50, 50),
    "gpqa_main": ("world knowledge", 25, 25),
    "gpqa_diamond": ("world knowledge", 25, 25),
}

CORE_TASKS: tuple[str, ...] = (
    "hellaswag_zeroshot", "jeopardy", "bigbench_qa_wikidata", "arc_easy", "arc_challenge", "copa",
    "commonsense_qa", "piqa", "openbook_qa", "lambada_openai", "hellaswag", "winograd", "winogrande",
    "bigbench_dyck_languages", "agi_eval_lsat_ar", "bigbench_cs_algorithms", "bigbench_operators",
    "bigbench_repeat_copy_logic", "squad", "coqa", "boolq", "bigbench_language_identification",
)


def centered(accuracy: float, baseline_percent: float) -> float:
    """(acc - b) / (1 - b) with b given in percent, as DCLM's eval_meta_data lists it.

    Args:
        accuracy (`float`):
            Accuracy in [0, 1].
        baseline_percent (`float`):
            The task's random baseline in percent.
    """
    b = 0.01 * baseline_percent
    return (accuracy - b) / (1.0 - b)


def _results(results: Mapping | str | os.PathLike) -> dict[str, float]:
    if isinstance(results, (str, os.PathLike)):
        with open(results, encoding="utf-8") as f:
            results = json.load(f)
    if "eval_metrics" in results:  # a DCLM exp_data/evals JSON
        results = results["eval_metrics"].get("icl", {})
    out = {}
    for task, value in results.items():
        if task in DCLM_TASKS:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise InputError(f"Result for task {task!r} must be an accuracy in [0, 1], got {value!r}.")
            out[task] = float(value)
    return out


def aggregate(results: Mapping | str | os.PathLike, version: Literal["v1", "v2"] = "v2") -> dict:
    """CORE, EXTENDED and per-category centered means from per-task accuracies.

    Args:
        results (`Mapping` or `str` or `os.PathLike`):
            ``{task: accuracy}`` (accuracies in [0, 1]), a DCLM eval JSON (with ``eval_metrics.icl``) or the path
            of one. Unknown keys are ignored.
        version (`Literal["v1", "v2"]`, *optional*, defaults to `"v2"`):
            Random baselines to center with: ``"v1"`` (the paper's) or ``"v2"`` (the 2025 corrected ones).

    Returns:
        ``{"core", "extended", "categories", "centered", "missing_core", "missing"}``; ``core`` /
        ``extended`` are ``None`` when a task they need is missing (as DCLM reports "N/A").
    """
    if version not in ("v1", "v2"):
        raise InputError(f"version must be 'v1' or 'v2', got {version!r}.")
    acc = _results(results)
    column = 1 if version == "v1" else 2
    cent = {t: centered(a, DCLM_TASKS[t][column]) for t, a in acc.items()}
    missing = [t for t in DCLM_TASKS if t not in acc]
    missing_core = [t for t in CORE_TASKS if t not in acc]
    by_cat: dict[str, list[float]] = defaultdict(list)
    for t, c in cent.items():
        by_cat[DCLM_TASKS[t][0]].append(c)
    return {
        "version": version,
        "core": None if missing_core else sum(cent[t] for t in CORE_TASKS) / len(CORE_TASKS),
        "extended": None if missing else sum(cent.values()) / len(DCLM_TASKS),
        "categories": {k: sum(v) / len(v) for k, v in sorted(by_cat.items())},
        "centered": cent,
        "missing_core": missing_core,
        "missing": missing,
    }
