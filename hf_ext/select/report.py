"""What the selection job shows: the response-length / category plot, the settings table and
the dataset card."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from ..data import DatasetSource
from ..jobs import HUB_FIELDS
from .selectors import get_selector
from .stats import category_counts

# Fields of SelectionConfig that only matter when SAE features were computed.
SAE_FIELDS = ("featurizer", "sae_training", "threshold_quantile")


def card_settings(c, *, sae: bool, trained: bool) -> dict[str, Any]:
    """The settings table of the card: the job's fields (not the Hub ones) and, when SAE features were
    computed, the featurizer's and (for an SAE trained here) the trainer's settings in effect.

    Args:
        c (`SelectionConfig`):
            The selection job's config.
        sae (`bool`):
            Whether SAE features were computed: adds the `featurizer.*` settings and `threshold_quantile`.
        trained (`bool`):
            Whether the SAE was trained by this job: adds the `sae_training.*` settings (only with `sae`).
    """
    settings = {k: v for k, v in asdict(c).items() if k not in HUB_FIELDS and k not in SAE_FIELDS}
    if not sae:
        return settings
    from .selection_config import JOB_FEATURIZER_FIELDS

    featurizer = c.featurizer_settings()
    settings.update({f"featurizer.{f.name}": getattr(featurizer, f.name) for f in fields(featurizer)
                     if f.name not in JOB_FEATURIZER_FIELDS})
    if trained:
        settings.update({f"sae_training.{k}": v for k, v in asdict(c.training_config()).items()})
    settings.update(threshold_quantile=c.threshold_quantile)
    return settings


def plot_selection(path: Path, tokens: list[int], picks: dict[str, list[int]], categories: list | None) -> None:
    """Response-length histograms of the pool and each method's picks, and category shares, as a PNG.

    Args:
        path (`Path`):
            Where the PNG is written.
        tokens (`list[int]`):
            Response length in tokens of each pool row.
        picks (`dict[str, list[int]]`):
            Pool row indices selected by each method, keyed by method name; empty picks draw no histogram.
        categories (`list` or `None`):
            Category of each pool row; when given, a second panel compares category shares of the pool and picks.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ncols = 2 if categories is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    ax = axes[0][0]
    top = max(float(np.percentile(tokens, 99)), 1.0)
    bins = np.linspace(0, top, 40)
    clip = lambda values: np.minimum(np.asarray(values, dtype=float), top)  # the last bin holds the tail
    ax.hist(clip(tokens), bins=bins, alpha=0.4, density=True, label="pool")
    for name, idx in picks.items():
        if not idx:  # nothing selected (alpagasus with no example at the threshold)
            continue
        ax.hist(clip([tokens[i] for i in idx]), bins=bins, histtype="step", linewidth=2, density=True, label=name)
    ax.set_xlabel(f"response tokens (last bin: ≥ {top:.0f})")
    ax.set_ylabel("density")
    ax.set_title("Response length")
    ax.legend()
    if categories is not None:
        ax = axes[0][1]
        names = list(category_counts(categories))
        width = 0.8 / (len(picks) + 1)
        x = np.arange(len(names))
        pool_counts = category_counts(categories)
        n = len(categories)
        ax.bar(x, [pool_counts[c] / n for c in names], width, label="pool")
        for k, (name, idx) in enumerate(picks.items(), start=1):
            counts = category_counts([categories[i] for i in idx])
            ax.bar(x + k * width, [counts.get(c, 0) / max(len(idx), 1) for c in names], width, label=name)
        ax.set_xticks(x + 0.4 - width / 2, names, rotation=40, ha="right")
        ax.set_ylabel("share of examples")
        ax.set_title("Categories")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def selection_card(c, source: DatasetSource, metrics: dict[str, Any], license_id: str | None, *, sae_trained: bool = False):
    """The dataset card (`huggingface_hub.DatasetCard`) of a selection from its `metrics`.

    Args:
        c (`SelectionConfig`):
            The selection job's config (method, budget, seed, tokenizer, Hub repo id, settings table).
        source (`DatasetSource`):
            The pool's source: its name and the `source_datasets` of the card.
        metrics (`dict[str, Any]`):
            The job's metrics (sizes, token stats, per-method results, category counts and, with SAE features,
            coverage and diversity).
        license_id (`str` or `None`):
            Licence of the pool for the card's metadata; `None` gives `"other"`.
        sae_trained (`bool`, *optional*, defaults to `False`):
            Whether the SAE was trained by this job, so its training settings go into the settings table.
    """
    from ..hub.cards import render_dataset_card, size_category

    card_data = {
        "license": license_id or "other",
        "language": ["en"],
        "task_categories": ["text-generation"],
        "tags": ["hf-ext", "data-selection", f"selection-{c.method}"],
        "size_categories": [size_category(metrics["selected_size"])],
        "pretty_name": f"{source.name} — {c.method} selection ({metrics['selected_size']})",
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    }
    if source.source_datasets:
        card_data["source_datasets"] = list(source.source_datasets)
    settings = card_settings(c, sae="sae" in metrics, trained=sae_trained)
    return render_dataset_card(
        "dataset_selection.md.j2",
        card_data,
        source=source,
        method=c.method,
        method_description=get_selector(c.method).description,
        budget=c.budget,
        seed=c.seed,
        selected_size=metrics["selected_size"],
        pool_size=metrics["pool_size"],
        settings=settings,
        tokenizer=c.tokenizer,
        pool_tokens=metrics["response_tokens"]["pool"],
        methods=metrics["methods"],
        categories=list(metrics["pool_category_counts"]),
        pool_category_counts=metrics["pool_category_counts"],
        plot="selection.png",
        repo_id=c.hub_model_id,
        sae=metrics.get("sae"),
        diversity=metrics.get("diversity"),
        pool_feature_coverage=metrics.get("pool_feature_coverage"),
        length_feature_corr=metrics.get("length_feature_corr"),
        coverage_plot="coverage.png" if "diversity" in metrics else None,
    )


__all__ = ["card_settings", "plot_selection", "selection_card"]
