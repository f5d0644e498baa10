"""LESS matching: checkpoint weights from the warmup's learning rates, cosine scores with
mean-within-subtask then max-over-subtasks aggregation, and top-p% / top-k selection.

>>> import numpy as np
>>> train = np.eye(3, 4)[:, None, :]                      # 3 train rows, 1 checkpoint, d = 4
>>> target = np.array([[[1, 0, 0, 0]], [[0, 1, 0, 0]], [[0, 1, 0, 0]]], float)
>>> less_scores(train, target, [1.0], subtasks=["a", "b", "b"]).tolist()
[1.0, 1.0, 0.0]
>>> select_top([0.1, 0.9, 0.5], k=2)
[1, 2]
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ...errors import InputError
from ..columns import check_budget
from ..selectors import register_selector

SCORE_COLUMN = "less_score"


def normalize_weights(weights: Sequence[float]) -> np.ndarray:
    """Checkpoint weights renormalised to sum to 1 (LESS: w_i = mean LR of epoch i / Σ).

    Args:
        weights (`Sequence[float]`):
            One weight per checkpoint: non-negative, finite and not all zero.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise InputError(f"Checkpoint weights must be non-negative, finite and not all zero, got {list(weights)}.")
    return w / w.sum()


def epoch_learning_rates(trainer_state: dict[str, Any], num_epochs: Optional[int] = None) -> list[float]:
    """Mean logged learning rate of each epoch, from a ``trainer_state.json`` dict's ``log_history``.

    Args:
        trainer_state (`dict[str, Any]`):
            A parsed ``trainer_state.json``; its ``log_history`` entries with ``epoch`` and ``learning_rate`` are read.
        num_epochs (`int` or `None`, *optional*, defaults to `None`):
            Number of epochs to average over; `None`: the last logged epoch, rounded up.
    """
    logs = [(float(e["epoch"]), float(e["learning_rate"])) for e in trainer_state.get("log_history", [])
            if "learning_rate" in e and "epoch" in e]
    if not logs:
        raise InputError(
            "trainer_state.json has no logged learning rates, so the checkpoints cannot be weighted by the "
            "mean LR of each epoch. Warm up with logging_steps=1 (the LESS warmup does) or pass checkpoint_weights."
        )
    num_epochs = num_epochs or math.ceil(max(e for e, _ in logs) - 1e-9)
    means = []
    for i in range(num_epochs):
        lrs = [lr for e, lr in logs if i < e <= i + 1 + 1e-9]
        if not lrs:
            raise InputError(f"No learning rate was logged during epoch {i + 1}; pass checkpoint_weights explicitly.")
        means.append(float(np.mean(lrs)))
    return means


def checkpoint_weights(checkpoints: Sequence[str | os.PathLike]) -> np.ndarray:
    """w_i for LESS checkpoints saved once per epoch: mean LR of the epoch each one ends, renormalised.

    Reads the last checkpoint's ``trainer_state.json`` (it holds the whole log history) and
    each checkpoint's epoch from its own.

    Args:
        checkpoints (`Sequence[str | os.PathLike]`):
            Warmup checkpoint folders in training order, each with a ``trainer_state.json``, saved at the end of an
            epoch.
    """
    states = []
    for c in checkpoints:
        path = Path(c) / "trainer_state.json"
        if not path.is_file():
            raise InputError(f"Checkpoint {str(c)!r} has no trainer_state.json to read its epoch and learning rates; "
                             "pass checkpoint_weights explicitly.")
        states.append(json.loads(path.read_text()))
    lrs = epoch_learning_rates(states[-1])
    weights = []
    for c, state in zip(checkpoints, states):
        epoch = int(round(float(state.get("epoch", 0))))
        if not 1 <= epoch <= len(lrs):
            raise InputError(f"Checkpoint {str(c)!r} is at epoch {state.get('epoch')}, not the end of an epoch 1..{len(lrs)}.")
        weights.append(lrs[epoch - 1])
    return normalize_weights(weights)


def _as_features(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, None, :]
    if arr.ndim != 3:
        raise InputError(f"{what} features must be [rows, checkpoints, dim], got shape {arr.shape}.")
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    return arr / np.where(norms > 0, norms, 1.0)  # renormalise (float16 storage); zero rows stay zero


def less_scores(
    train: Any,
    target: Any,
    weights: Sequence[float],
    subtasks: Optional[Sequence[Any]] = None,
    *,
    block_rows: int = 4096,
) -> np.ndarray:
    """LESS score of every train row: Σ_i w_i·cos(train_i, target_i), mean over each subtask's
    target rows, then max over subtasks.

    Args:
        train (`array-like`):
            ``[N, C, d]`` train features (C checkpoints), e.g. the ``less_grads`` column; ``[N, d]`` is one checkpoint.
            Rows are renormalised here (zero rows stay zero).
        target (`array-like`):
            ``[M, C, d]`` target features from the same checkpoints and projector.
        weights (`Sequence[float]`):
            C checkpoint weights (renormalised here).
        subtasks (`Sequence` or `None`, *optional*, defaults to `None`):
            M labels (any hashable); subtasks may have any sizes and order. ``None``: one task.
        block_rows (`int`, *optional*, defaults to `4096`):
            Train rows scored per block, bounding the memory of the ``[rows, M]`` similarity matrix.
    """
    tr, tg = _as_features(train, "Train"), _as_features(target, "Target")
    if tr.shape[1:] != tg.shape[1:]:
        raise InputError(
            f"Train features are [checkpoints, dim] = {list(tr.shape[1:])} but target features are {list(tg.shape[1:])}. "
            "Both must come from the same warmup checkpoints and the same projector (proj_dim and seed)."
        )
    w = normalize_weights(weights)
    if len(w) != tr.shape[1]:
        raise InputError(f"Got {len(w)} checkpoint weights for features of {tr.shape[1]} checkpoints.")
    labels = np.zeros(tg.shape[0], dtype=np.int64) if subtasks is None else None
    if labels is None:
        if len(subtasks) != tg.shape[0]:
            raise InputError(f"Got {len(subtasks)} subtask labels for {tg.shape[0]} target rows.")
        _, labels = np.unique(np.asarray([str(s) for s in subtasks]), return_inverse=True)
    n_tasks = int(labels.max()) + 1
    # Averaging matrix: column s holds 1/|s| on the rows of subtask s (unequal sizes are fine).
    avg = np.zeros((tg.shape[0], n_tasks), dtype=np.float64)
    avg[np.arange(tg.shape[0]), labels] = 1.0
    avg /= avg.sum(axis=0, keepdims=True)
    scores = np.empty(tr.shape[0], dtype=np.float64)
    for lo in range(0, tr.shape[0], block_rows):
        block = tr[lo : lo + block_rows]
        sim = sum(w[c] * (block[:, c].astype(np.float64) @ tg[:, c].astype(np.float64).T) for c in range(len(w)))
        scores[lo : lo + block_rows] = (sim @ avg).max(axis=1)
    return scores


def select_top(scores: Sequence[float], *, k: Optional[int] = None, percent: Optional[float] = None,
               valid: Optional[Sequence[bool]] = None) -> list[int]:
    """Indices of the k highest scores (or the top `percent` %), best first, ties in pool order.

    Rows with ``valid`` False (no response tokens) or a non-finite score are never selected.

    Args:
        scores (`Sequence[float]`):
            One score per pool row.
        k (`int` or `None`, *optional*, defaults to `None`):
            How many rows to keep (at most the pool's size); exactly one of `k` and `percent` is given.
        percent (`float` or `None`, *optional*, defaults to `None`):
            Share of the pool to keep, in (0, 100]; rounded to a count, at least 1.
        valid (`Sequence[bool]` or `None`, *optional*, defaults to `None`):
            Which rows may be selected; `None`: every row with a finite score.
    """
    s = np.asarray(scores, dtype=np.float64)
    if (k is None) == (percent is None):
        raise InputError("Pass exactly one of k (a count) or percent (e.g. 5.0 for the top 5%).")
    if percent is not None:
        if not 0 < percent <= 100:
            raise InputError(f"percent must be in (0, 100], got {percent}.")
        k = max(1, int(round(len(s) * percent / 100)))
    check_budget(k, len(s))
    ok = np.isfinite(s) & (np.asarray(valid, dtype=bool) if valid is not None else True)
    order = np.argsort(-np.where(ok, s, -np.inf), kind="stable")
    return [int(i) for i in order[:k] if ok[i]]


@register_selector("less", requires=(SCORE_COLUMN,))
def select_less(columns, budget: int, *, seed: int = 0, pool_size: int) -> list[int]:
    """Top-k by LESS score (gradient similarity to a target set); rows without a score are skipped.

    Args:
        columns (`Mapping[str, Sequence[float]]`):
            Holds `less_score`, each row's LESS score (non-finite where the row has none).
        budget (`int`):
            The most rows to pick.
        seed (`int`, *optional*, defaults to `0`):
            Unused (the order is deterministic); taken like every selector.
        pool_size (`int`):
            Number of rows in the pool.
    """
    return select_top(columns[SCORE_COLUMN], k=budget)
