"""Selectors over SAE feature columns (arXiv 2502.14050) and the k-center baseline.

All work on sparse structures: feature ids become one CSR matrix (examples × latents, a
byte per non-zero beside the ids) read straight from Arrow, never a dense N × F matrix, so
1M-example pools with 131,072 latents fit in memory.

- ``sae_greedy``: greedy max-coverage of feature ids (|∪ F(x)| over the selection), the
  (1 − 1/e) approximation, with exactly naive greedy's picks (ties → lowest pool index) at a
  fraction of its cost: gains are updated incrementally through an inverted index (only the
  examples holding a newly covered feature change), or with Minoux's lazy evaluation (a heap
  of stale upper bounds; ``strategy="lazy"``).
- ``sae_greedy_sorted``: the paper-style variant: walk examples by richness |F(x)| (ties in
  pool order), keep one if it adds a new feature; when the walk ends short of the budget, the
  richest of the rest fill it (documented choice).
- ``sae_simscale``: walk by richness, keep an example when its similarity to every kept one is
  below τ (Jaccard on feature sets, or cosine on max-pooled values); τ is found by bisection so
  that exactly the budget is kept (the walk stops at the budget; every pair kept is below τ).
- ``kcenter``: farthest-first traversal on the mean-pooled hidden states (Euclidean, seeded start).

>>> from hf_ext.select import get_selector
>>> cols = {"sae_ids": [[1, 2, 3], [1, 2], [4], [3, 4, 5]]}
>>> get_selector("sae_greedy").select(cols, 2)
[0, 3]
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ...errors import InputError
from ..selectors import register_selector

IDS, VALUES, EMBEDDING, COUNT = "sae_ids", "sae_values", "sae_embedding", "sae_count"


# -- column -> sparse matrix ---------------------------------------------------------------------
def _arrow(column: Any):
    """A list column as one pyarrow ListArray, without Python lists when it lives in Arrow."""
    import pyarrow as pa

    source = getattr(column, "source", None)  # datasets.Column: read its (selected) Arrow data
    if source is not None and hasattr(source, "with_format"):
        column = source.with_format("arrow")[:][column.column_name]
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if isinstance(column, (pa.ListArray, pa.LargeListArray)):
        return column
    return None


def feature_matrix(ids: Any, values: Any = None, num_features: int | None = None):
    """Examples × latents ``scipy.sparse.csr_matrix`` from a list-of-ids column (and values).

    Data are the values when given (float32), else ones (uint8). Duplicate ids in a row are merged.

    Args:
        ids (`Sequence[Sequence[int]]`):
            One list of latent ids per example (the featurizer's ``sae_ids`` column).
        values (`Sequence[Sequence[float]]` or `None`, *optional*, defaults to `None`):
            The matching values (``sae_values``); ``None``: ones.
        num_features (`int` or `None`, *optional*, defaults to `None`):
            Columns of the matrix at least (it is never narrower than the largest id + 1).
    """
    import scipy.sparse as sp

    arr = _arrow(ids)
    if arr is not None:
        offsets = arr.offsets.to_numpy().astype(np.int64)
        flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        offsets = offsets - offsets[0]
    else:
        rows = [np.asarray(r, dtype=np.int64).ravel() for r in ids]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        flat = np.concatenate(rows).astype(np.int32) if rows and offsets[-1] else np.zeros(0, np.int32)
    if flat.size and flat.min() < 0:
        raise InputError("Feature ids must be non-negative integers (latent indices).")
    if values is None:
        data = np.ones(flat.size, dtype=np.uint8)
    else:
        varr = _arrow(values)
        data = (varr.flatten().to_numpy(zero_copy_only=False) if varr is not None
                else np.concatenate([np.asarray(v, np.float32).ravel() for v in values]) if len(flat) else np.zeros(0))
        data = data.astype(np.float32, copy=False)
        if data.size != flat.size:
            raise InputError(f"{VALUES} must hold one value per id in {IDS} ({data.size} values for {flat.size} ids).")
    width = max(int(flat.max()) + 1 if flat.size else 1, num_features or 0)
    m = sp.csr_matrix((data, flat, offsets), shape=(len(offsets) - 1, width))
    if values is None:
        m.sum_duplicates()  # cheap check when rows are already sorted and unique
        m.data[:] = 1
    else:
        m.sum_duplicates()
    return m


def coverage(matrix, picks: Sequence[int]) -> int:
    """|∪ F(x)| over `picks`: distinct latents activated by any picked example.

    Args:
        matrix (`scipy.sparse.csr_matrix`):
            Examples × latents, from :func:`feature_matrix`.
        picks (`Sequence[int]`):
            Row indices of the picked examples.
    """
    picks = np.asarray(picks, dtype=np.int64)
    if picks.size == 0:
        return 0
    sub = matrix[picks]
    return int(np.unique(sub.indices).size)


# -- greedy max-coverage -------------------------------------------------------------------------
def greedy_max_coverage(matrix, budget: int, strategy: Literal["incremental", "lazy"] = "incremental") -> list[int]:
    """Greedy max-coverage with the same picks as :func:`greedy_max_coverage_naive` (ties → lowest index).

    ``incremental`` (default) keeps every gain exact through an inverted index: when a feature
    becomes covered, only the examples holding it lose one, so each (example, feature) pair is
    touched once over the whole run — O(nnz log nnz) in all, however heavy-tailed the features.
    ``lazy`` is Minoux's lazy evaluation (a heap of stale upper bounds, re-evaluating the top);
    it does well when gains fall off steeply, and badly when many stay close.

    Args:
        matrix (`scipy.sparse.csr_matrix`):
            Examples × latents, from :func:`feature_matrix`.
        budget (`int`):
            How many examples to pick.
        strategy (`str`, *optional*, defaults to `"incremental"`):
            ``"incremental"`` (exact gains through an inverted index) or ``"lazy"`` (Minoux's lazy evaluation).
    """
    if strategy == "lazy":
        return _lazy_greedy(matrix, budget)
    if strategy != "incremental":
        raise InputError(f"strategy must be 'incremental' or 'lazy', got {strategy!r}.")
    indptr, indices = matrix.indptr, matrix.indices
    csc = matrix.tocsc()
    gains = np.diff(indptr).astype(np.int64)
    covered = np.zeros(matrix.shape[1], dtype=bool)
    picks: list[int] = []
    for _ in range(budget):
        i = int(np.argmax(gains))  # first maximum: lowest index on ties, as naive greedy
        picks.append(i)
        ids = indices[indptr[i]:indptr[i + 1]]
        new = ids[~covered[ids]]
        covered[new] = True
        if new.size:
            holders = np.concatenate([csc.indices[csc.indptr[f]:csc.indptr[f + 1]] for f in new])
            rows, counts = np.unique(holders, return_counts=True)
            gains[rows] -= counts
        gains[i] = -1  # taken; its features are all covered now, so no later update touches it
    return picks


def _lazy_greedy(matrix, budget: int) -> list[int]:
    indptr, indices = matrix.indptr, matrix.indices
    covered = np.zeros(matrix.shape[1], dtype=bool)
    heap = [(-int(g), i) for i, g in enumerate(np.diff(indptr))]
    heapq.heapify(heap)
    picks: list[int] = []
    while len(picks) < budget:
        neg, i = heapq.heappop(heap)
        if neg == 0:  # every remaining gain is 0: naive greedy takes them by index
            rest = sorted([i] + [j for _, j in heap])
            picks.extend(rest[: budget - len(picks)])
            break
        ids = indices[indptr[i]:indptr[i + 1]]
        gain = int(ids.size - np.count_nonzero(covered[ids]))
        if gain == -neg or not heap or (-gain, i) <= heap[0]:
            picks.append(i)
            covered[ids] = True
        else:
            heapq.heappush(heap, (-gain, i))
    return picks


def greedy_max_coverage_naive(matrix, budget: int) -> list[int]:
    """Textbook greedy: every step recomputes every example's gain (reference for tests/benchmarks).

    Args:
        matrix (`scipy.sparse.csr_matrix`):
            Examples × latents, from :func:`feature_matrix`.
        budget (`int`):
            How many examples to pick.
    """
    m = matrix.astype(np.float32)
    uncovered = np.ones(m.shape[1], dtype=np.float32)
    taken = np.zeros(m.shape[0], dtype=bool)
    picks: list[int] = []
    for _ in range(budget):
        gains = m @ uncovered
        gains[taken] = -1
        i = int(np.argmax(gains))  # first maximum: lowest index on ties
        picks.append(i)
        taken[i] = True
        uncovered[m.indices[m.indptr[i]:m.indptr[i + 1]]] = 0
    return picks


def sorted_new_features(matrix, budget: int) -> list[int]:
    """Paper-style SAE-GreedSelect: by richness, keep if it adds ≥ 1 new feature; fill with the richest rest.

    Args:
        matrix (`scipy.sparse.csr_matrix`):
            Examples × latents, from :func:`feature_matrix`.
        budget (`int`):
            How many examples to pick.
    """
    indptr, indices = matrix.indptr, matrix.indices
    order = np.argsort(-np.diff(indptr), kind="stable")
    covered = np.zeros(matrix.shape[1], dtype=bool)
    picks, skipped = [], []
    for i in order:
        if len(picks) == budget:
            break
        ids = indices[indptr[i]:indptr[i + 1]]
        if ids.size and not covered[ids].all():
            covered[ids] = True
            picks.append(int(i))
        else:
            skipped.append(int(i))
    if len(picks) < budget:
        picks.extend(skipped[: budget - len(picks)])
    return picks


# -- SAE-SimScale --------------------------------------------------------------------------------
def _similarity_rows(block, kept, similarity: str):
    """Dense [len(block), len(kept)] similarities between two sparse row sets."""
    inter = (block @ kept.T).toarray().astype(np.float64)
    if similarity == "cosine":
        return inter
    a = np.asarray(block.getnnz(axis=1), dtype=np.float64)[:, None]
    b = np.asarray(kept.getnnz(axis=1), dtype=np.float64)[None, :]
    union = a + b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def threshold_walk(matrix, order: np.ndarray, tau: float, budget: int, similarity: str, block: int = 256) -> list[int]:
    """Keep examples in `order` whose similarity to all kept ones is < tau, stopping at `budget`.

    Args:
        matrix (`scipy.sparse.csr_matrix`):
            Examples × latents: ones for ``"jaccard"``, unit-norm rows of values for ``"cosine"``.
        order (`np.ndarray`):
            Row indices in the order they are walked (by richness in :func:`simscale`).
        tau (`float`):
            An example is kept only when its similarity to every kept one is below this.
        budget (`int`):
            The walk stops once this many are kept (it may keep fewer).
        similarity (`str`):
            ``"jaccard"`` (on feature sets) or ``"cosine"`` (dot products of the rows).
        block (`int`, *optional*, defaults to `256`):
            Rows compared per step against the kept ones (the size of the dense similarity blocks).
    """
    import scipy.sparse as sp

    kept: list[int] = []
    kept_rows = matrix[:0]
    for start in range(0, len(order), block):
        idx = order[start:start + block]
        rows = matrix[idx]
        to_kept = _similarity_rows(rows, kept_rows, similarity) if kept else np.zeros((len(idx), 0))
        within = _similarity_rows(rows, rows, similarity)
        accepted: list[int] = []
        for j in range(len(idx)):
            if to_kept.shape[1] and to_kept[j].max() >= tau:
                continue
            if accepted and within[j, accepted].max() >= tau:
                continue
            accepted.append(j)
            if len(kept) + len(accepted) == budget:
                break
        kept.extend(int(idx[j]) for j in accepted)
        if len(kept) >= budget:
            break
        if accepted:
            kept_rows = sp.vstack([kept_rows, rows[accepted]], format="csr")
    return kept


def simscale(matrix, budget: int, *, similarity: Literal["jaccard", "cosine"] = "jaccard", tol: float = 1e-3) -> tuple[list[int], float]:
    """SAE-SimScale: (picks, τ). Bisection on τ for the smallest τ (to `tol`) whose walk keeps the budget.

    Args:
        matrix (`scipy.sparse.csr_matrix`):
            Examples × latents from :func:`feature_matrix`; with values for ``"cosine"`` (rows are normalised here).
        budget (`int`):
            How many examples to keep.
        similarity (`str`, *optional*, defaults to `"jaccard"`):
            ``"jaccard"`` on feature sets or ``"cosine"`` on max-pooled values.
        tol (`float`, *optional*, defaults to `1e-3`):
            Precision of the bisection on τ.
    """
    if similarity not in ("jaccard", "cosine"):
        raise InputError(f"similarity must be 'jaccard' or 'cosine', got {similarity!r}.")
    m = matrix.astype(np.float64)
    if similarity == "cosine":
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        m = m.multiply(1 / np.where(norms > 0, norms, 1)[:, None]).tocsr()
    order = np.argsort(-np.diff(matrix.indptr), kind="stable")
    lo, hi = 0.0, 1.0 + 1e-9  # every similarity is ≤ 1, so τ just above 1 keeps everything
    best = threshold_walk(m, order, hi, budget, similarity)
    while hi - lo > tol:
        mid = (lo + hi) / 2
        kept = threshold_walk(m, order, mid, budget, similarity)
        if len(kept) >= budget:
            hi, best = mid, kept
        else:
            lo = mid
    return best, hi


# -- k-center ------------------------------------------------------------------------------------
def _dense(column: Any) -> np.ndarray:
    arr = _arrow(column)
    if arr is not None:
        flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        return flat.reshape(len(arr), -1)
    return np.asarray([np.asarray(r, dtype=np.float32) for r in column], dtype=np.float32)


def kcenter(embeddings: np.ndarray, budget: int, seed: int = 0) -> list[int]:
    """Greedy k-center (farthest-first): a seeded random start, then the point farthest from all centres.

    Args:
        embeddings (`np.ndarray`):
            One vector per example (the featurizer's ``sae_embedding``).
        budget (`int`):
            How many centres to pick.
        seed (`int`, *optional*, defaults to `0`):
            Seeds the random first centre.
    """
    from threadpoolctl import threadpool_limits

    x = np.asarray(embeddings, dtype=np.float32)
    sq = np.einsum("ij,ij->i", x, x)
    first = int(np.random.default_rng(seed).integers(len(x)))
    picks = [first]
    # Many small mat-vecs: one BLAS thread avoids per-call thread wake-ups (10x faster on 2 busy cores).
    with threadpool_limits(1, user_api="blas"):
        dist = np.maximum(sq - 2 * x @ x[first] + sq[first], 0)
        dist[first] = -1
        for _ in range(budget - 1):
            i = int(np.argmax(dist))
            picks.append(i)
            np.minimum(dist, np.maximum(sq - 2 * x @ x[i] + sq[i], 0), out=dist)
            dist[i] = -1
    return picks


# -- registry ------------------------------------------------------------------------------------
@register_selector("sae_greedy", requires=(IDS,), prefix="sae")
def select_sae_greedy(columns: Mapping[str, Any], budget: int, *, seed: int = 0, pool_size: int) -> list[int]:
    """SAE-GreedSelect: greedy max-coverage of SAE features (incremental gains, (1 − 1/e) guarantee).

    Args:
        columns (`Mapping[str, Any]`):
            Holds `sae_ids`, the activated latent ids of each row.
        budget (`int`):
            How many rows to pick.
        seed (`int`, *optional*, defaults to `0`):
            Unused (the picks are deterministic); taken like every selector.
        pool_size (`int`):
            Number of rows in the pool.
    """
    return greedy_max_coverage(feature_matrix(columns[IDS]), budget)


@register_selector("sae_greedy_sorted", requires=(IDS,), prefix="sae")
def select_sae_greedy_sorted(columns: Mapping[str, Any], budget: int, *, seed: int = 0, pool_size: int) -> list[int]:
    """SAE-GreedSelect, paper-style: by feature richness, keep an example if it adds new features.

    Args:
        columns (`Mapping[str, Any]`):
            Holds `sae_ids`, the activated latent ids of each row.
        budget (`int`):
            How many rows to pick.
        seed (`int`, *optional*, defaults to `0`):
            Unused (the picks are deterministic); taken like every selector.
        pool_size (`int`):
            Number of rows in the pool.
    """
    return sorted_new_features(feature_matrix(columns[IDS]), budget)


@register_selector("sae_simscale", requires=(IDS, VALUES), prefix="sae")
def select_sae_simscale(columns: Mapping[str, Any], budget: int, *, seed: int = 0, pool_size: int,
                        similarity: Literal["jaccard", "cosine"] = "jaccard") -> list[int]:
    """SAE-SimScale: by richness, keep examples less similar than τ to all kept; τ searched to keep the budget.

    Args:
        columns (`Mapping[str, Any]`):
            Holds `sae_ids` and `sae_values` (the max-pooled values, read for ``"cosine"``).
        budget (`int`):
            How many rows to pick.
        seed (`int`, *optional*, defaults to `0`):
            Unused (the picks are deterministic); taken like every selector.
        pool_size (`int`):
            Number of rows in the pool.
        similarity (`str`, *optional*, defaults to `"jaccard"`):
            ``"jaccard"`` on feature sets or ``"cosine"`` on max-pooled values.
    """
    values = columns[VALUES] if similarity == "cosine" else None
    picks, _ = simscale(feature_matrix(columns[IDS], values), budget, similarity=similarity)
    return picks


@register_selector("kcenter", requires=(EMBEDDING,), prefix="sae")
def select_kcenter(columns: Mapping[str, Any], budget: int, *, seed: int = 0, pool_size: int) -> list[int]:
    """k-center greedy (farthest-first) on mean-pooled hidden states.

    Args:
        columns (`Mapping[str, Any]`):
            Holds `sae_embedding`, the mean-pooled hidden state of each row.
        budget (`int`):
            How many rows to pick.
        seed (`int`, *optional*, defaults to `0`):
            Seeds the random first centre.
        pool_size (`int`):
            Number of rows in the pool.
    """
    return kcenter(_dense(columns[EMBEDDING]), budget, seed=seed)


__all__ = ["coverage", "feature_matrix", "greedy_max_coverage", "greedy_max_coverage_naive", "kcenter", "simscale",
           "sorted_new_features", "threshold_walk"]
