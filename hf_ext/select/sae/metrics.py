"""Diversity metrics of a selection and the coverage-vs-budget plot.

- feature coverage: |∪ F(x)| over the selection (the paper's diversity measure), also as a
  fraction of the pool's;
- mean features per example: mean |F(x)|;
- embedding diversity: mean pairwise cosine distance of the selection's mean-pooled hidden
  states, 1 − mean_{i≠j} cos(e_i, e_j), in O(n·d) from the norm of the sum of unit vectors.

>>> feature_coverage([[1, 2], [2, 3], [7]], picks=[0, 1])["coverage"]
3
>>> round(embedding_diversity([[1.0, 0.0], [0.0, 1.0]]), 3)
1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .selection import coverage, feature_matrix


def embedding_diversity(embeddings: Any) -> float:
    """1 − mean pairwise cosine similarity (i ≠ j); 0.0 for fewer than two rows.

    Args:
        embeddings (`array-like`):
            ``[n, d]`` vectors, one per example (e.g. ``sae_embedding``); normalised here.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        return 0.0
    u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    s = u.sum(0)
    n = len(u)
    mean_cos = (float(s @ s) - float(np.einsum("ij,ij->", u, u))) / (n * (n - 1))
    return 1.0 - mean_cos


def feature_coverage(ids: Any, picks: Sequence[int] | None = None, *, embeddings: Any = None, matrix=None) -> dict[str, float]:
    """Coverage statistics of `picks` (all rows when None) over the feature-id column `ids`.

    Args:
        ids (`Sequence[Sequence[int]]`):
            One list of activated latent ids per example (``sae_ids``).
        picks (`Sequence[int]` or `None`, *optional*, defaults to `None`):
            Row indices of the selection; ``None``: all rows.
        embeddings (`Any`, *optional*, defaults to `None`):
            Per-example vectors; when given, ``embedding_diversity`` of the picks is added.
        matrix (`scipy.sparse.csr_matrix`, *optional*, defaults to `None`):
            The :func:`feature_matrix` of `ids`, when already built.
    """
    m = matrix if matrix is not None else feature_matrix(ids)
    picks = np.arange(m.shape[0]) if picks is None else np.asarray(picks, dtype=np.int64)
    pool_cov = int(np.unique(m.indices).size)
    cov = coverage(m, picks)
    counts = np.diff(m.indptr)[picks] if len(picks) else np.zeros(0)
    out = {"coverage": cov, "pool_coverage": pool_cov, "coverage_fraction": round(cov / pool_cov, 4) if pool_cov else 0.0,
           "mean_features": float(counts.mean()) if len(counts) else 0.0}
    if embeddings is not None:
        emb = np.asarray(embeddings, dtype=np.float32)
        out["embedding_diversity"] = round(embedding_diversity(emb[picks]), 4)
    return out


def length_feature_corr(lengths: Sequence[float], counts: Sequence[float]) -> float:
    """Pearson r between text length and number of activated features (paper: 0.92).

    Args:
        lengths (`Sequence[float]`):
            Text length per example.
        counts (`Sequence[float]`):
            Activated features per example (``sae_count``).
    """
    a, b = np.asarray(lengths, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def budget_grid(budget: int, pool_size: int, points: int = 8) -> list[int]:
    """Budgets from budget/8 to 2×budget (capped at the pool), for coverage-vs-budget curves.

    Args:
        budget (`int`):
            The job's budget; always one of the grid's points (capped at the pool).
        pool_size (`int`):
            Number of rows in the pool, the largest budget.
        points (`int`, *optional*, defaults to `8`):
            Evenly spaced budgets between the ends (duplicates after rounding are dropped).
    """
    top = min(2 * budget, pool_size)
    grid = np.unique(np.linspace(max(1, budget // 8), top, points).round().astype(int).tolist() + [min(budget, pool_size)])
    return [int(b) for b in grid if b >= 1]


def coverage_curves(matrix, select_fns: dict[str, Callable[[int], Sequence[int]]], budgets: Sequence[int]) -> dict[str, list[int]]:
    """Coverage at each budget for each method (`select_fns[name](budget)` returns picks).

    Args:
        matrix (`scipy.sparse.csr_matrix`):
            The pool's :func:`feature_matrix` (rows: examples, columns: latents).
        select_fns (`dict[str, Callable[[int], Sequence[int]]]`):
            For each method name, a function from a budget to the row indices it picks.
        budgets (`Sequence[int]`):
            The budgets to evaluate (e.g. :func:`budget_grid`).
    """
    return {name: [coverage(matrix, fn(b)) for b in budgets] for name, fn in select_fns.items()}


def plot_coverage(path: str | Path, budgets: Sequence[int], curves: dict[str, Sequence[int]], *, budget: int | None = None,
                  pool_coverage: int | None = None, title: str = "SAE feature coverage") -> Path:
    """PNG of features covered vs budget, one line per method.

    Args:
        path (`str` or `Path`):
            Where the PNG is written.
        budgets (`Sequence[int]`):
            The x values, shared by every curve.
        curves (`dict[str, Sequence[int]]`):
            Features covered at each budget, per method (:func:`coverage_curves`).
        budget (`int` or `None`, *optional*, defaults to `None`):
            The job's budget, marked with a dashed vertical line.
        pool_coverage (`int` or `None`, *optional*, defaults to `None`):
            Features covered by the whole pool, drawn as a dotted horizontal line.
        title (`str`, *optional*, defaults to `"SAE feature coverage"`):
            The plot's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        ax.plot(budgets, values, marker="o", markersize=3, label=name)
    if pool_coverage:
        ax.axhline(pool_coverage, color="grey", linestyle=":", label="whole pool")
    if budget:
        ax.axvline(budget, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel("budget (examples)")
    ax.set_ylabel("distinct SAE features covered")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


__all__ = ["budget_grid", "coverage_curves", "embedding_diversity", "feature_coverage", "length_feature_corr", "plot_coverage"]
