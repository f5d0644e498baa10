"""PNG plots of fitted laws (matplotlib's object API: no global pyplot state, no display).

* `plot_loss_vs_compute`: runs and the fitted loss curve for each token multiplier M.
* `plot_predicted_vs_actual`: predicted against observed loss (or error), with y = x.
* `plot_error_vs_loss`: downstream error against loss with the fitted Err(L).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .laws import DownstreamErrorLaw, ScalingLaw
from .planning import loss_at_compute
from .runs import Runs


def _figure(figsize=(5.5, 4.0)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=120)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _is_fit(runs: Runs, fit_runs: Runs | None) -> np.ndarray:
    if fit_runs is None:
        return np.ones(len(runs), bool)
    keys = {(r["N"], r["M"]) for r in fit_runs}
    return np.array([(r["N"], r["M"]) in keys for r in runs])


def plot_loss_vs_compute(law: ScalingLaw, runs: Runs, path: str | os.PathLike, *, fit_runs: Runs | None = None, title: str = "") -> Path:
    """Loss against compute 6ND: every run as a point coloured by M (filled = fit point),
    the fitted law as a line per M, extended to the largest run.

    Args:
        law (`ScalingLaw`):
            A fitted loss law: `OvertrainingLaw` or `ChinchillaLaw`.
        runs (`Runs`):
            Runs to draw, with `N`, `D`, `M` and `loss` columns; M is grouped to 2 significant digits.
        path (`str` or `os.PathLike`):
            PNG file to write; its folder is created if missing.
        fit_runs (`Runs` or `None`, *optional*, defaults to `None`):
            The runs the law was fitted on, drawn filled (matched by N and M); the others are drawn hollow.
            `None` draws every run as a fit point.
        title (`str`, *optional*, defaults to `""`):
            Plot title; empty means "Loss vs compute (filled: fit points)".
    """
    from matplotlib import colormaps

    fig, ax = _figure()
    flops = 6 * runs["N"] * runs["D"]
    # Runs aim at round multipliers; D rounded to whole batches gives M = 5.0005 and the like.
    m_group = np.array([float(f"{m:.2g}") for m in runs["M"]])
    mults = sorted(set(m_group.tolist()))
    cmap = colormaps["viridis"]
    colours = {m: cmap(i / max(1, len(mults) - 1)) for i, m in enumerate(mults)}
    fit_mask = _is_fit(runs, fit_runs)
    grid = np.logspace(np.log10(flops.min()) - 0.2, np.log10(flops.max()) + 0.2, 200)
    for m in mults:
        sel = m_group == m
        ax.plot(grid, loss_at_compute(law, grid, m), color=colours[m], lw=1, alpha=0.8, label=f"M = {m:g}")
        for mask, face in ((sel & fit_mask, colours[m]), (sel & ~fit_mask, "none")):
            if mask.any():
                ax.scatter(flops[mask], runs["loss"][mask], s=22, facecolors=face, edgecolors=[colours[m]], zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("compute 6ND (FLOPs)")
    ax.set_ylabel("loss")
    ax.set_title(title or "Loss vs compute (filled: fit points)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_predicted_vs_actual(predicted: Sequence[float], actual: Sequence[float], path: str | os.PathLike, *,
                             labels: Sequence[str] | None = None, quantity: str = "loss", title: str = "") -> Path:
    """Predicted against observed values with the y = x line; points annotated by `labels`.

    Args:
        predicted (`Sequence[float]`):
            Predicted values, one per point.
        actual (`Sequence[float]`):
            Observed values, in the same order.
        path (`str` or `os.PathLike`):
            PNG file to write; its folder is created if missing.
        labels (`Sequence[str]` or `None`, *optional*, defaults to `None`):
            Point labels, each annotated with the point's relative error; `None` annotates nothing.
        quantity (`str`, *optional*, defaults to `"loss"`):
            Name of the quantity, used in the axis labels and the default title.
        title (`str`, *optional*, defaults to `""`):
            Plot title; empty means "Predicted vs actual {quantity}".
    """
    fig, ax = _figure((4.5, 4.2))
    predicted, actual = np.asarray(predicted, float), np.asarray(actual, float)
    lo, hi = min(predicted.min(), actual.min()), max(predicted.max(), actual.max())
    pad = 0.05 * (hi - lo or 1)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=1, ls="--")
    ax.scatter(actual, predicted, s=28, zorder=3)
    for x, y, text in zip(actual, predicted, labels or [], strict=False):
        ax.annotate(f"{text} ({100 * abs(y - x) / x:.2f}%)", (x, y), fontsize=7, xytext=(4, -8), textcoords="offset points")
    ax.set_xlabel(f"actual {quantity}")
    ax.set_ylabel(f"predicted {quantity}")
    ax.set_title(title or f"Predicted vs actual {quantity}")
    return _save(fig, path)


def plot_error_vs_loss(law: DownstreamErrorLaw, runs: Runs, path: str | os.PathLike, *, fit_runs: Runs | None = None, title: str = "") -> Path:
    """Downstream error against loss for every run (filled = fit point) with the fitted Err(L).

    Args:
        law (`DownstreamErrorLaw`):
            A fitted error law; its `target` names the error column of `runs`.
        runs (`Runs`):
            Runs to draw, with a `loss` column and the law's target column.
        path (`str` or `os.PathLike`):
            PNG file to write; its folder is created if missing.
        fit_runs (`Runs` or `None`, *optional*, defaults to `None`):
            Fit points of the law (matched to `runs` by N and M), drawn filled and labelled "fit points"; other
            runs are hollow ("other runs"). `None` treats every run as a fit point.
        title (`str`, *optional*, defaults to `""`):
            Plot title; empty means "Downstream error vs loss".
    """
    fig, ax = _figure()
    loss, err = runs["loss"], runs[law.target]
    fit_mask = _is_fit(runs, fit_runs)
    grid = np.linspace(loss.min() - 0.1, loss.max() + 0.1, 200)
    ax.plot(grid, law.predict(loss=grid), color="C1", lw=1.2, label="Err(L) fit")
    ax.scatter(loss[fit_mask], err[fit_mask], s=22, color="C0", label="fit points", zorder=3)
    if (~fit_mask).any():
        ax.scatter(loss[~fit_mask], err[~fit_mask], s=22, facecolors="none", edgecolors="C0", label="other runs", zorder=3)
    ax.set_xlabel("loss")
    ax.set_ylabel(f"top-1 error ({law.target})")
    ax.set_title(title or "Downstream error vs loss")
    ax.legend(fontsize=7)
    return _save(fig, path)
