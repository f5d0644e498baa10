"""The two fitting procedures, both deterministic (a fixed grid of starts, first best wins).

* `curve_fit_grid`: the over-training paper's procedure (Gadre et al. 2024): least squares
  on the raw target with `scipy.optimize.curve_fit` from every start of a grid, keeping the
  fit with the smallest residual.
* `huber_lbfgs_grid`: Chinchilla's approach 3 (Hoffmann et al. 2022, as replicated by
  Besiroglu et al. 2024): the Huber loss (δ = 1e-3) between predicted and observed *log*
  loss, minimised with L-BFGS-B from every start of a grid, keeping the smallest objective.

Neither is silent about failure: a start that raises is counted, and a fit where no start
converges raises `FitError` with the best residual seen.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import HfExtError


class FitError(HfExtError, RuntimeError):
    """A scaling-law fit that did not converge from any start."""


class FitWarning(UserWarning):
    """A fit that finished but whose best start did not report convergence."""


@dataclass
class FitResult:
    """The best start of a grid fit.

    Args:
        params (`np.ndarray`):
            The fitted parameters, in the order the fitted function or objective takes them.
        residual (`float`):
            RMSE on the raw target (`curve_fit_grid`) or the summed Huber objective (`huber_lbfgs_grid`).
        converged (`bool`):
            Whether the optimiser reported success for the winning start.
        n_starts (`int`):
            Number of starts tried.
        n_failed (`int`):
            Number of starts that raised or gave a non-finite residual.
        start (`tuple[float, ...]`):
            The start the winning fit began from.
        message (`str`, *optional*, defaults to `""`):
            The optimiser's message for the winning start (empty for `curve_fit_grid`).
        info (`dict`, *optional*, defaults to `{}`):
            Extra details merged into `as_dict()` (e.g. `grid_objective`, `polished`).
    """

    params: np.ndarray
    residual: float  # RMSE on the raw target (curve_fit) or the summed Huber objective (L-BFGS)
    converged: bool
    n_starts: int
    n_failed: int
    start: tuple[float, ...]
    message: str = ""
    info: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "residual": float(self.residual), "converged": bool(self.converged), "n_starts": self.n_starts,
            "n_failed": self.n_failed, "best_start": [float(s) for s in self.start], "message": self.message, **self.info,
        }


def grid(*axes: Iterable[float]) -> list[tuple[float, ...]]:
    """Cartesian product of per-parameter start values, in a fixed order."""
    return [tuple(float(v) for v in p) for p in itertools.product(*axes)]


def curve_fit_grid(
    fn: Callable[..., np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    starts: Sequence[Sequence[float]],
    *,
    maxfev: int = 10_000,
    bounds: tuple | None = None,
) -> FitResult:
    """`curve_fit(fn, x, y, p0=start)` for every start; the fit with the smallest RMSE wins.

    Raises `FitError` when no start converges, quoting the smallest residual among the
    starting points themselves so the caller knows how far off the data is.

    Args:
        fn (`Callable[..., np.ndarray]`):
            Model `fn(x, *params)` returning the predicted target for every point.
        x (`np.ndarray`):
            Inputs passed to `fn` as is (one array, or the stacked rows of several variables).
        y (`np.ndarray`):
            Observed target, one value per point.
        starts (`Sequence[Sequence[float]]`):
            Initial parameter vectors, tried in order; of equal residuals the first wins.
        maxfev (`int`, *optional*, defaults to `10000`):
            Most function evaluations per start (`maxfev`, or `max_nfev` when `bounds` is given).
        bounds (`tuple` or `None`, *optional*, defaults to `None`):
            `(lower, upper)` parameter bounds for `curve_fit` (which then uses the trust-region method); `None`
            for an unbounded Levenberg-Marquardt fit.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    best: FitResult | None = None
    failed, last_error = 0, ""
    kwargs = {"maxfev": maxfev} if bounds is None else {"bounds": bounds, "max_nfev": maxfev}
    for start in starts:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", OptimizeWarning)
            try:
                popt, _ = curve_fit(fn, x, y, p0=list(start), **kwargs)
            except (RuntimeError, ValueError) as exc:
                failed, last_error = failed + 1, str(exc)
                continue
            residual = _rmse(fn, x, y, popt)
        if not np.isfinite(residual):
            failed += 1
            continue
        # Strict < keeps the first of equal fits: the grid order decides, never chance.
        if best is None or residual < best.residual:
            best = FitResult(np.asarray(popt, float), residual, True, len(starts), 0, tuple(start))
    if best is None:
        with np.errstate(all="ignore"):
            at_starts = [_rmse(fn, x, y, np.asarray(s, float)) for s in starts]
        finite = [r for r in at_starts if np.isfinite(r)]
        seen = f"{min(finite):.6g}" if finite else "not finite"
        raise FitError(
            f"curve_fit did not converge from any of {len(starts)} starts (last error: {last_error}). "
            f"Best residual seen (RMSE at a start): {seen}. Check the fit points (are there enough, spanning "
            "several sizes?) or pass starts= closer to the expected parameters."
        )
    best.n_failed = failed
    return best


def _rmse(fn, x, y, params) -> float:
    pred = fn(x, *params)
    return float(np.sqrt(np.mean((np.asarray(y) - pred) ** 2)))


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss of residuals `r`: r²/2 inside ±δ, δ(|r| − δ/2) outside.

    Args:
        r (`np.ndarray`):
            Residuals.
        delta (`float`):
            δ, the threshold between the quadratic and the linear part.
    """
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_lbfgs_grid(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
    starts: Sequence[Sequence[float]],
    *,
    maxiter: int = 15_000,
    polish: bool = True,
) -> FitResult:
    """Minimise `objective` (returns value and gradient) with L-BFGS-B from every start.

    The smallest objective wins; if that start did not report success, the result says so
    (`converged=False`) and a `FitWarning` names the best objective reached.

    With `polish`, the winner is refined by a BFGS run with a tight gradient tolerance.
    scipy's default stopping rule (the one Hoffmann et al. and Besiroglu et al. used) halts
    starts early on the nearly flat Huber objective, so without polishing the answer depends
    on where each start stalled; polished, a few starts reach the same minimum as the full grid.

    Args:
        objective (`Callable[[np.ndarray], tuple[float, np.ndarray]]`):
            Function of the parameter vector returning the objective value and its gradient.
        starts (`Sequence[Sequence[float]]`):
            Initial parameter vectors, tried in order; of equal objectives the first wins.
        maxiter (`int`, *optional*, defaults to `15000`):
            Most iterations per L-BFGS-B start (and for the BFGS polish).
        polish (`bool`, *optional*, defaults to `True`):
            Refine the winning start with BFGS (`gtol=1e-10`), keeping the result only if it does not get worse.
    """
    from scipy.optimize import minimize

    best = None
    failed = 0
    for start in starts:
        with np.errstate(all="ignore"):
            res = minimize(objective, np.asarray(start, float), jac=True, method="L-BFGS-B", options={"maxiter": maxiter})
        if not np.isfinite(res.fun):
            failed += 1
            continue
        if best is None or res.fun < best[0].fun:
            best = (res, start)
    if best is None:
        raise FitError(
            f"L-BFGS-B gave no finite objective from any of {len(starts)} starts. Check that every N, D and "
            "loss is positive and finite, or pass starts= closer to the expected parameters."
        )
    res, start = best
    grid_objective = float(res.fun)
    if polish:
        with np.errstate(all="ignore"):
            refined = minimize(objective, res.x, jac=True, method="BFGS", options={"maxiter": maxiter, "gtol": 1e-10})
        # BFGS often ends with "precision loss" at the optimum of this objective: keep any improvement.
        if np.isfinite(refined.fun) and refined.fun <= res.fun:
            x, fun = refined.x, refined.fun
        else:
            x, fun = res.x, res.fun
    else:
        x, fun = res.x, res.fun
    result = FitResult(np.asarray(x, float), float(fun), bool(res.success), len(starts), failed, tuple(start), str(res.message),
                       info={"grid_objective": grid_objective, "polished": polish})
    if not res.success:
        warnings.warn(
            f"The best L-BFGS-B start did not converge ({res.message}); best objective {res.fun:.6g}. "
            "The parameters are reported but may be off: try more starts or a larger maxiter.",
            FitWarning,
            stacklevel=3,
        )
    return result
