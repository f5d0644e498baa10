"""Statistics of a selection: token lengths and category counts, for metrics.json and cards.

The same computation backs the `selection_stats` evaluate module (hf_ext/metrics/).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def token_stats(lengths: Sequence[int]) -> dict[str, float]:
    """Mean, median, p10/p90, min, max and total of token counts.

    Args:
        lengths (`Sequence[int]`):
            Token count of each example; an empty sequence gives all zeros.
    """
    arr = np.asarray(lengths, dtype=np.float64)
    if arr.size == 0:
        return {"mean": 0.0, "median": 0.0, "p10": 0.0, "p90": 0.0, "min": 0.0, "max": 0.0, "total": 0.0}
    return {
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "p10": float(np.percentile(arr, 10)),
        "p90": float(np.percentile(arr, 90)),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "total": float(arr.sum()),
    }


def category_counts(categories: Sequence[str | None]) -> dict[str, int]:
    """Counts per category, most frequent first (ties by name, for stable output).

    Args:
        categories (`Sequence[str | None]`):
            Category of each example; `None` is counted as `"<none>"`.
    """
    counts = Counter("<none>" if c is None else str(c) for c in categories)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def selection_stats(
    selected_tokens: Sequence[int],
    pool_tokens: Sequence[int] | None = None,
    selected_categories: Sequence[str | None] | None = None,
    pool_categories: Sequence[str | None] | None = None,
) -> dict:
    """Everything the quickstart reports about one selection.

    Args:
        selected_tokens (`Sequence[int]`):
            Response token count of each selected example.
        pool_tokens (`Sequence[int]` or `None`, *optional*, defaults to `None`):
            Response token count of each pool example; when given, the pool's stats and size are reported too.
        selected_categories (`Sequence[str | None]` or `None`, *optional*, defaults to `None`):
            Category of each selected example; when given, `category_counts` is reported.
        pool_categories (`Sequence[str | None]` or `None`, *optional*, defaults to `None`):
            Category of each pool example; with `selected_categories`, gives `category_share_vs_pool`.

    Returns a dict with ``selected_size``, ``mean_response_tokens`` ({selected, pool}),
    ``response_tokens`` ({selected: stats, pool: stats}) and, when categories are given,
    ``category_counts`` and ``category_share_vs_pool`` (selected share / pool share).
    """
    out: dict = {"selected_size": len(selected_tokens)}
    sel = token_stats(selected_tokens)
    out["response_tokens"] = {"selected": sel}
    out["mean_response_tokens"] = {"selected": sel["mean"]}
    if pool_tokens is not None:
        pool = token_stats(pool_tokens)
        out["response_tokens"]["pool"] = pool
        out["mean_response_tokens"]["pool"] = pool["mean"]
        out["pool_size"] = len(pool_tokens)
    if selected_categories is not None:
        counts = category_counts(selected_categories)
        out["category_counts"] = counts
        if pool_categories is not None:
            pool_counts = category_counts(pool_categories)
            n_sel, n_pool = max(len(selected_categories), 1), max(len(pool_categories), 1)
            out["category_share_vs_pool"] = {
                c: round((counts.get(c, 0) / n_sel) / (pool_counts[c] / n_pool), 4) for c in pool_counts
            }
    return out
