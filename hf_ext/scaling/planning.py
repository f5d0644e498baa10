"""Compute planning with fitted laws: how big, how many tokens, how many FLOPs.

* `plan_for_loss`: the model size N (and D = M·N, FLOPs = 6ND) that reaches a target loss at
  a chosen token multiplier M, under an `OvertrainingLaw` (or a `ChinchillaLaw`).
* `plan_for_error`: the same for a target downstream error, through a `DownstreamErrorLaw`.
* `compute_optimal`: Chinchilla's N*(C), D*(C) for a compute budget.

>>> from hf_ext.scaling import OvertrainingLaw
>>> law = OvertrainingLaw({"alpha": 166.2, "beta_prime": 366.7, "beta": -0.2729, "E": 1.8366})
>>> plan = plan_for_loss(law, 2.45, multiplier=20)
>>> f"{plan.N:.2e}", round(float(law.predict(N=[plan.N], M=[20])[0]), 4)
('6.56e+09', 2.45)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError
from .laws import ChinchillaLaw, DownstreamErrorLaw, OvertrainingLaw, ScalingLaw


@dataclass
class Plan:
    """A training plan: parameters, tokens, tokens per parameter, FLOPs (6ND), predicted loss.

    Args:
        N (`float`):
            Model parameters.
        D (`float`):
            Training tokens.
        M (`float`):
            Tokens per parameter, D / N.
        flops (`float`):
            Training compute, 6·N·D.
        loss (`float`):
            The loss law's prediction for (N, D).
        error (`float` or `None`, *optional*, defaults to `None`):
            The error law's prediction at that loss (set by `plan_for_error`).
    """

    N: float
    D: float
    M: float
    flops: float
    loss: float
    error: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _loss(law: ScalingLaw, N: float, M: float) -> float:
    if isinstance(law, OvertrainingLaw):
        return float(law.predict(N=[N], M=[M])[0])
    if isinstance(law, ChinchillaLaw):
        return float(law.predict(N=[N], D=[M * N])[0])
    raise InputError(f"Planning needs a loss law (OvertrainingLaw or ChinchillaLaw), got {type(law).__name__}.")


def _finite(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(float(value)):
            raise InputError(f"{name} must be a finite number, got {value} (--{name} in `hf-ext scaling plan`).")


def plan_for_loss(law: ScalingLaw, target_loss: float, *, multiplier: float = 20.0, n_range: tuple[float, float] = (1e5, 1e15)) -> Plan:
    """Smallest N whose predicted loss at M = `multiplier` is `target_loss` (loss falls with N).

    Raises `InputError` when the target is at or below the law's floor (E) or outside what
    sizes in `n_range` reach.

    Args:
        law (`ScalingLaw`):
            A fitted loss law: `OvertrainingLaw` or `ChinchillaLaw`.
        target_loss (`float`):
            Loss to reach.
        multiplier (`float`, *optional*, defaults to `20.0`):
            Tokens per parameter M (D = M·N); must be positive.
        n_range (`tuple[float, float]`, *optional*, defaults to `(1e5, 1e15)`):
            Smallest and largest N searched; if the smallest already reaches the target, it is returned.
    """
    from scipy.optimize import brentq

    if law.params is None:
        raise InputError("plan_for_loss needs a fitted law.")
    _finite(target_loss=target_loss, multiplier=multiplier)
    if multiplier <= 0:
        raise InputError(f"multiplier (tokens per parameter) must be positive, got {multiplier}.")
    lo, hi = (math.log(n) for n in n_range)
    f = lambda log_n: _loss(law, math.exp(log_n), multiplier) - target_loss  # noqa: E731
    f_lo, f_hi = f(lo), f(hi)
    if f_lo < 0:
        N = math.exp(lo)
    elif f_hi > 0:
        floor = law.params.get("E")
        raise InputError(
            f"Target loss {target_loss} is not reached by any N up to {n_range[1]:.0e} at M = {multiplier:g} "
            f"(predicted loss there: {f_hi + target_loss:.4f}; the law's irreducible loss E = {floor}). Choose a higher target."
        )
    else:
        N = math.exp(brentq(f, lo, hi, xtol=1e-12, rtol=1e-12))
    D = multiplier * N
    return Plan(N=N, D=D, M=multiplier, flops=6 * N * D, loss=_loss(law, N, multiplier))


def plan_for_error(loss_law: ScalingLaw, error_law: DownstreamErrorLaw, target_error: float, *, multiplier: float = 20.0) -> Plan:
    """The plan whose predicted downstream error is `target_error`: invert Err(L), then L(N, M).

    Args:
        loss_law (`ScalingLaw`):
            A fitted loss law: `OvertrainingLaw` or `ChinchillaLaw`.
        error_law (`DownstreamErrorLaw`):
            A fitted law of downstream error as a function of loss.
        target_error (`float`):
            Downstream error to reach (a fraction, as the error law's target column).
        multiplier (`float`, *optional*, defaults to `20.0`):
            Tokens per parameter M (D = M·N); must be positive.
    """
    _finite(target_error=target_error, multiplier=multiplier)
    target_loss = error_law.loss_for_error(target_error)
    plan = plan_for_loss(loss_law, target_loss, multiplier=multiplier)
    plan.error = float(error_law.predict(loss=[plan.loss])[0])
    return plan


def compute_optimal(law: ChinchillaLaw, flops: float) -> Plan:
    """Chinchilla's compute-optimal allocation of `flops` = 6ND.

    Args:
        law (`ChinchillaLaw`):
            A fitted Chinchilla law L(N, D).
        flops (`float`):
            Compute budget C in FLOPs; must be positive.
    """
    if not isinstance(law, ChinchillaLaw):
        raise InputError(f"compute_optimal needs a ChinchillaLaw, got {type(law).__name__}.")
    _finite(flops=flops)
    if flops <= 0:
        raise InputError(f"flops must be positive, got {flops}.")
    N, D = law.compute_optimal(flops)
    N, D = float(N), float(D)
    return Plan(N=N, D=D, M=D / N, flops=float(flops), loss=float(law.predict(N=[N], D=[D])[0]))


def loss_at_compute(law: ScalingLaw, flops: np.ndarray, multiplier: float) -> np.ndarray:
    """Predicted loss along compute at a fixed M (N = sqrt(C / 6M)), for plots and tables.

    Args:
        law (`ScalingLaw`):
            A fitted loss law: `OvertrainingLaw` or `ChinchillaLaw`.
        flops (`np.ndarray`):
            Compute values C in FLOPs.
        multiplier (`float`):
            Tokens per parameter M held fixed along the curve.
    """
    flops = np.asarray(flops, float)
    N = np.sqrt(flops / (6 * multiplier))
    M = np.full_like(N, multiplier)
    if isinstance(law, ChinchillaLaw):
        return law.predict(N=N, D=M * N)
    return law.predict(N=N, M=M)
