"""The selection job: load a pool, add score columns with ``datasets.map``, select a budget
with one method (and compare others), write the dataset, a card and ``metrics.json``, and
optionally push it all to the Hub in one commit.

This is what ``hf-ext run recipes/quickstart.yaml`` runs. The job's pieces, one concept each:
:mod:`~hf_ext.select.selection_config` (the settings), :mod:`~hf_ext.select.featurize` (the
columns), :mod:`~hf_ext.select.selectors` (the methods), :mod:`~hf_ext.select.report` (plot and
card) and, for the SAE methods, :mod:`hf_ext.select.sae.job`. From Python:

>>> from hf_ext.select.pipeline import SelectionConfig, run_selection
>>> metrics = run_selection(SelectionConfig(budget=100, output_dir="outputs/demo"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any

from ..data import load_pool
from ..jobs import job_output
from .columns import check_budget, require_columns, require_rows
from .featurize import featurize
from .report import plot_selection, selection_card
from .selection_config import SelectionConfig
from .selectors import get_selector
from .stats import category_counts, selection_stats

logger = logging.getLogger(__name__)


def _validate_pool(ds, c: SelectionConfig) -> None:
    require_rows(len(ds), what="The selection job")
    require_columns(
        ds.column_names, [c.instruction_column, c.input_column, c.response_column, c.category_column], what="The selection job"
    )
    check_budget(c.budget, len(ds))


def run_selection(config: SelectionConfig) -> dict[str, Any]:
    """Run the selection job and return its metrics (also written to ``metrics.json``).

    Args:
        config (`SelectionConfig`):
            The job's settings.
    """
    start = time.perf_counter()
    c = config
    ds, source = load_pool(c.dataset, split=c.split, license=c.dataset_license)
    _validate_pool(ds, c)

    needed = ["response_tokens"] + [col for m in c.methods for col in get_selector(m).requires]
    ds = featurize(ds, c, list(dict.fromkeys(needed)))
    sae_info = None
    if "sae_ids" in ds.column_names:  # SAE features were computed: threshold them once, report the coverage
        from .sae.job import apply_threshold, sae_summary

        ds, threshold = apply_threshold(ds, c)
        sae_info = sae_summary(c, ds, threshold)

    tokens = ds["response_tokens"]
    categories = ds[c.category_column] if c.category_column else None
    picks: dict[str, list[int]] = {}
    reports: dict[str, dict] = {}
    for name in c.methods:
        idx = get_selector(name).select(ds, c.budget, seed=c.seed, **c.selector_options(name))
        picks[name] = idx
        reports[name] = selection_stats(
            [tokens[i] for i in idx],
            tokens,
            [categories[i] for i in idx] if categories is not None else None,
            categories,
        )

    for name, idx in picks.items():
        if len(idx) < c.budget:  # alpagasus keeps only examples at or above the threshold
            logger.warning("%s selected %d of the budget of %d.", name, len(idx), c.budget)
    main = reports[c.method]
    license_id = source.license or c.dataset_license
    metrics: dict[str, Any] = {
        "method": c.method,
        "budget": c.budget,
        "seed": c.seed,
        "pool_size": len(ds),
        "selected_size": main["selected_size"],
        "mean_response_tokens": main["mean_response_tokens"],
        "category_counts": main.get("category_counts", {}),
        "pool_category_counts": category_counts(categories) if categories is not None else {},
        "response_tokens": main["response_tokens"],
        "methods": reports,
        "dataset": c.dataset,
        "source_datasets": list(source.source_datasets),
        "license": license_id,
        "tokenizer": c.tokenizer,
    }

    if "judge_score" in ds.column_names:  # what the paid-for judge calls found, even when nothing passed
        from .judge import judge_summary

        metrics["judge"] = judge_summary(ds["judge_score"], c.selector_options("alpagasus")["threshold"])
    if sae_info is not None:
        metrics["sae"] = {k: v for k, v in sae_info.items() if not k.startswith("_")}

    selected = ds.select(picks[c.method])
    selected = selected.add_column("pool_index", picks[c.method])
    with job_output(c, repo_type="dataset", writer="select",
                    commit_message=f"hf_ext: {c.method} selection of {c.budget} from {source.name}") as out:
        tmp = out.dir
        (tmp / "data").mkdir()
        selected.to_parquet(str(tmp / "data" / "train-00000-of-00001.parquet"))
        plot_selection(tmp / "selection.png", tokens, picks, categories)
        if sae_info is not None:
            from .sae.job import coverage_report

            report = coverage_report(ds, picks, c, c.seed, tmp / "coverage.png")
            metrics["feature_coverage"] = {name: r["coverage"] for name, r in report["at_budget"].items()}
            metrics["diversity"] = report["at_budget"]
            metrics["coverage_curves"] = {"budgets": report["budgets"], **report["curves"]}
            metrics["pool_feature_coverage"] = report["pool_coverage"]
            metrics["length_feature_corr"] = report["length_feature_corr"]
            if sae_info["_trained"]:
                shutil.copytree(sae_info["_folder"], tmp / "sae")
        metrics["elapsed_seconds"] = round(time.perf_counter() - start, 2)
        out.metrics = metrics
        trained = bool(sae_info and sae_info["_trained"])
        out.card = lambda m: selection_card(c, source, m, license_id, sae_trained=trained)
    return metrics


__all__ = ["SelectionConfig", "run_selection"]
