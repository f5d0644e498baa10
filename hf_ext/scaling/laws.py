"""Scaling laws as small objects: named parameters, `fit`, `predict`, bootstrap intervals.

* `OvertrainingLaw` — loss of a model with N parameters trained on M tokens per parameter
  (Gadre et al. 2024, arXiv 2403.08540): L(N, M) = E + (a·M^η + b·M^−η)·C^−η with C = 6ND,
  fitted in the paper's form L = α·N^β + β′·6^(β/2)·(M·N)^β + E (β = −2η < 0).
* `DownstreamErrorLaw` — average top-1 error from loss: Err(L) = ε − k·exp(−γ·L).
* `ChinchillaLaw` — L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. 2022), fitted with
  Chinchilla's approach 3 (Huber δ = 1e-3 on log loss, L-BFGS-B over a grid of starts).

Every law takes its data as columns (``N``, ``M`` or ``D``, ``loss``, an error column) from
a `Runs` table, a dict, a `datasets.Dataset` or a pandas DataFrame, or as keyword arrays:

>>> import numpy as np
>>> truth = OvertrainingLaw({"alpha": 150.0, "beta_prime": 300.0, "beta": -0.27, "E": 1.9})
>>> N = np.array([1e7, 8e7, 1.5e8, 4e8, 1e7]); M = np.array([20, 20, 20, 20, 320])
>>> law = OvertrainingLaw().fit(N=N, M=M, loss=truth.predict(N=N, M=M))
>>> round(law.params["beta"], 3)
-0.27
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError
from .fitting import FitResult, curve_fit_grid, grid, huber, huber_lbfgs_grid

# Columns that are sizes, token counts or losses: they must be > 0 (a fit in log space or
# with power laws is meaningless otherwise).
POSITIVE_COLUMNS = ("N", "D", "M", "loss")


def _column(data: Any, name: str) -> np.ndarray | None:
    if data is None:
        return None
    try:
        values = data[name]
    except (KeyError, IndexError, ValueError, TypeError):
        return None
    return np.asarray(values, dtype=float).reshape(-1)


class ScalingLaw:
    """Base class: a parametric law with named parameters fitted to columns of runs.

    Args:
        params (`Mapping[str, float]` or `None`, *optional*, defaults to `None`):
            Known parameter values (all of `param_names`), e.g. a paper's fit; ``None``: call `fit`.
        starts (`Sequence[Sequence[float]]` or `None`, *optional*, defaults to `None`):
            Optimiser starting points, one tuple per start in the law's parameter order; ``None``: `default_starts`.
    """

    name: ClassVar[str] = "law"
    formula: ClassVar[str] = ""
    param_names: ClassVar[tuple[str, ...]] = ()
    inputs: ClassVar[tuple[str, ...]] = ()
    target: str = "loss"
    _registry: ClassVar[dict[str, type[ScalingLaw]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        ScalingLaw._registry[cls.name] = cls

    def __init__(self, params: Mapping[str, float] | None = None, *, starts: Sequence[Sequence[float]] | None = None):
        self.params: dict[str, float] | None = None
        if params is not None:
            missing = [p for p in self.param_names if p not in params]
            if missing:
                raise InputError(f"{type(self).__name__} needs parameters {list(self.param_names)}; missing {missing}.")
            self.params = {p: float(params[p]) for p in self.param_names}
        self.starts = [tuple(map(float, s)) for s in starts] if starts is not None else None
        self.fit_info: dict[str, Any] = {}
        self.intervals: dict[str, tuple[float, float]] | None = None
        self._x: dict[str, np.ndarray] | None = None
        self._y: np.ndarray | None = None

    # ---- the law -------------------------------------------------------------------
    def _fn(self, x: dict[str, np.ndarray], theta: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _fit_arrays(self, x: dict[str, np.ndarray], y: np.ndarray, starts: Sequence[Sequence[float]]) -> FitResult:
        raise NotImplementedError

    def default_starts(self) -> list[tuple[float, ...]]:
        raise NotImplementedError

    def _derive(self, cols: dict[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
        return cols

    # ---- data handling -------------------------------------------------------------
    def _gather(self, data: Any, columns: dict[str, Any], names: Sequence[str]) -> dict[str, np.ndarray]:
        extra = sorted(set(columns) - {*names, "N", "D", "M"})
        if extra:
            raise InputError(f"{type(self).__name__} got unknown column(s) {extra}; it uses {list(names)}.")
        cols = {n: (np.asarray(columns[n], float).reshape(-1) if n in columns else _column(data, n)) for n in {*names, "N", "D", "M"}}
        cols = self._derive(cols)
        missing = [n for n in names if cols.get(n) is None]
        if missing:
            have = list(getattr(data, "column_names", None) or (list(data) if isinstance(data, Mapping) else []))
            raise InputError(
                f"{type(self).__name__} needs column(s) {missing} (it uses {list(names)}); "
                f"the data has {have or 'none'}. Pass them as keywords, e.g. law.fit(runs, {missing[0]}=[...])."
            )
        out = {n: cols[n] for n in names}
        lengths = {n: len(v) for n, v in out.items()}
        if len(set(lengths.values())) > 1:
            raise InputError(f"Columns have different lengths: {lengths}.")
        return out

    @staticmethod
    def _check_positive(cols: dict[str, np.ndarray]) -> None:
        for name, values in cols.items():
            if name in POSITIVE_COLUMNS:
                bad = np.flatnonzero(values <= 0)
                if bad.size:
                    raise InputError(
                        f"Column {name!r} must be positive, but row {int(bad[0])} has {values[bad[0]]!r} "
                        f"({bad.size} such rows). Parameter counts, token counts and losses are > 0; fix or drop those runs."
                    )

    def _fit_data(self, data: Any, columns: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray, list[int]]:
        cols = self._gather(data, columns, (*self.inputs, self.target))
        finite = np.all([np.isfinite(v) for v in cols.values()], axis=0)
        dropped = [int(i) for i in np.flatnonzero(~finite)]
        if dropped:
            warnings.warn(
                f"{type(self).__name__}.fit dropped {len(dropped)} row(s) with NaN/inf in {list(cols)}: rows {dropped}.",
                stacklevel=3,
            )
            cols = {k: v[finite] for k, v in cols.items()}
        self._check_positive(cols)
        n, k = len(cols[self.target]), len(self.param_names)
        if n < k:
            raise InputError(
                f"{type(self).__name__} has {k} parameters ({', '.join(self.param_names)}) but got {n} fit point(s)"
                f"{' after dropping NaN rows' if dropped else ''}; a fit needs at least {k}. Add runs or choose a rule that keeps more points."
            )
        y = cols.pop(self.target)
        return cols, y, dropped

    # ---- public API ----------------------------------------------------------------
    def fit(self, data: Any = None, *, starts: Sequence[Sequence[float]] | None = None, **columns: Any) -> ScalingLaw:
        """Fit the parameters to `data` (runs, dict, Dataset, DataFrame) and/or column keywords.

        Rows with NaN are dropped (with a warning, listed in ``fit_info["dropped_rows"]``);
        non-positive N/D/M/loss and too few points raise `InputError`.
        """
        x, y, dropped = self._fit_data(data, columns)
        starts = [tuple(map(float, s)) for s in starts] if starts is not None else (self.starts or self.default_starts())
        result = self._fit_arrays(x, y, starts)
        self.params = dict(zip(self.param_names, map(float, self._to_params(result.params)), strict=True))
        self.fit_info = {"n_points": int(len(y)), "dropped_rows": dropped, **result.as_dict()}
        self.intervals = None
        self._x, self._y = x, y
        return self

    def _to_params(self, theta: np.ndarray) -> np.ndarray:
        return theta

    def _to_theta(self) -> np.ndarray:
        return np.array([self.params[p] for p in self.param_names])

    def _require_params(self) -> None:
        if self.params is None:
            raise InputError(f"This {type(self).__name__} has no parameters yet: call .fit(...) or pass params=.")

    def predict(self, data: Any = None, **columns: Any) -> np.ndarray:
        """The law's value at the given inputs (same column conventions as `fit`)."""
        self._require_params()
        x = self._gather(data, columns, self.inputs)
        return self._fn(x, self._to_theta())

    def __call__(self, data: Any = None, **columns: Any) -> np.ndarray:
        return self.predict(data, **columns)

    def bootstrap(self, n_resamples: int = 200, *, level: float = 0.95, seed: int = 0, starts: str = "point") -> dict[str, tuple[float, float]]:
        """Percentile confidence intervals by resampling the fit points with replacement.

        Each resample is refitted from the point estimate (``starts="point"``, as Besiroglu
        et al. bootstrap Chinchilla's fit) or from the full grid (``starts="grid"``, slower).
        Resamples with fewer distinct points than parameters, or whose fit fails, are skipped
        and counted in ``fit_info["bootstrap"]``. Deterministic for a given `seed`.
        """
        from .fitting import FitError

        if self._x is None or self.params is None:
            raise InputError("bootstrap() needs a fitted law: call .fit(...) first.")
        if not 0 < level < 1:
            raise InputError(f"level must be in (0, 1), got {level}.")
        if starts not in ("point", "grid"):
            raise InputError(f"starts must be 'point' or 'grid', got {starts!r}.")
        rng = np.random.default_rng(seed)
        n, k = len(self._y), len(self.param_names)
        point = [tuple(self._theta_for_fit())]
        grid_starts = self.starts or self.default_starts()
        samples, skipped = [], 0
        for _ in range(n_resamples):
            idx = rng.integers(0, n, size=n)
            if len(np.unique(idx)) < k:
                skipped += 1
                continue
            x = {key: v[idx] for key, v in self._x.items()}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = self._fit_arrays(x, self._y[idx], point if starts == "point" else grid_starts)
            except FitError:
                skipped += 1
                continue
            samples.append(self._to_params(result.params))
        if len(samples) < 2:
            raise InputError(
                f"Only {len(samples)} of {n_resamples} bootstrap resamples could be fitted ({n} points, {k} parameters); "
                "add fit points or raise n_resamples."
            )
        samples = np.asarray(samples)
        tail = (1 - level) / 2 * 100
        lo, hi = np.percentile(samples, [tail, 100 - tail], axis=0)
        self.intervals = {p: (float(a), float(b)) for p, a, b in zip(self.param_names, lo, hi, strict=True)}
        self.fit_info["bootstrap"] = {"n_resamples": n_resamples, "n_used": len(samples), "n_skipped": skipped, "level": level, "seed": seed, "starts": starts}
        self._bootstrap_samples = samples
        return self.intervals

    def _theta_for_fit(self) -> np.ndarray:
        return self._to_theta()

    # ---- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {"law": self.name, "formula": self.formula, "params": self.params, "target": self.target}
        if self.intervals:
            out["intervals"] = {k: list(v) for k, v in self.intervals.items()}
        if self.fit_info:
            out["fit_info"] = self.fit_info
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScalingLaw:
        law_cls = ScalingLaw._registry.get(d.get("law", cls.name), None)
        if law_cls is None or (cls is not ScalingLaw and not issubclass(law_cls, cls)):
            raise InputError(f"Unknown or mismatched law {d.get('law')!r}; known laws: {sorted(ScalingLaw._registry)}.")
        law = law_cls(d["params"], **({"target": d["target"]} if law_cls is DownstreamErrorLaw and "target" in d else {}))
        law.fit_info = dict(d.get("fit_info", {}))
        if d.get("intervals"):
            law.intervals = {k: tuple(v) for k, v in d["intervals"].items()}
        return law

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ScalingLaw:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __repr__(self) -> str:
        if self.params is None:
            return f"{type(self).__name__}(unfitted)"
        inner = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        return f"{type(self).__name__}({inner})"


class OvertrainingLaw(ScalingLaw):
    """L(N, M) = α·N^β + β′·6^(β/2)·(M·N)^β + E, i.e. E + (a·M^η + b·M^−η)·C^−η.

    Inputs ``N`` (parameters) and ``M`` (tokens per parameter; derived as D/N when only
    ``D`` is given). The default starts are the paper's grid: α, β′ ∈ {1e2, 3e2, 1e3, 3e3},
    β ∈ {−0.1, −0.3}, E ∈ {0, 1, 2, 10}.
    """

    name = "overtraining"
    formula = "L(N, M) = alpha * N^beta + beta_prime * 6^(beta/2) * (M N)^beta + E"
    param_names = ("alpha", "beta_prime", "beta", "E")
    inputs = ("N", "M")

    def default_starts(self):
        return grid([1e2, 3e2, 1e3, 3e3], [1e2, 3e2, 1e3, 3e3], [-1e-1, -3e-1], [0.0, 1.0, 2.0, 10.0])

    def _derive(self, cols):
        if cols.get("M") is None and cols.get("N") is not None and cols.get("D") is not None:
            cols["M"] = cols["D"] / cols["N"]
        return cols

    @staticmethod
    def _curve(x, alpha, beta_prime, beta, E):
        N, M = x
        return alpha * np.power(N, beta) + beta_prime * np.power(6.0, beta / 2) * np.power(M * N, beta) + E

    def _fn(self, x, theta):
        return self._curve((x["N"], x["M"]), *theta)

    def _fit_arrays(self, x, y, starts):
        return curve_fit_grid(self._curve, np.vstack([x["N"], x["M"]]), y, starts)

    # The paper's (a, b, η) parameterisation of the same law.
    @property
    def eta(self) -> float:
        self._require_params()
        return -self.params["beta"] / 2

    @property
    def a(self) -> float:
        self._require_params()
        return self.params["alpha"] * 6.0 ** (-self.params["beta"] / 2)

    @property
    def b(self) -> float:
        self._require_params()
        return self.params["beta_prime"]

    def loss_at_compute(self, C: float | np.ndarray, M: float | np.ndarray) -> np.ndarray:
        """Predicted loss for compute C = 6ND at token multiplier M (N = sqrt(C / 6M))."""
        C, M = np.asarray(C, float), np.asarray(M, float)
        N = np.sqrt(C / (6 * M))
        return self.predict(N=np.atleast_1d(N), M=np.atleast_1d(M * np.ones_like(N)))


class DownstreamErrorLaw(ScalingLaw):
    """Err(L) = ε − k·exp(−γ·L): average top-1 error as a function of loss.

    Input ``loss``; the target column is ``target`` (default ``"error"``; the paper's runs
    have ``err17`` and ``err46``). The default start is the paper's: curve_fit's default
    p0 (all ones).

    Args:
        params (`Mapping[str, float]` or `None`, *optional*, defaults to `None`):
            Known ``epsilon``, ``k`` and ``gamma``; ``None``: call `fit`.
        target (`str`, *optional*, defaults to `"error"`):
            Column of the runs the law predicts.
        starts (`Sequence[Sequence[float]]` or `None`, *optional*, defaults to `None`):
            Starting points of curve_fit; ``None``: all ones (the paper's).
    """

    name = "downstream_error"
    formula = "Err(L) = epsilon - k * exp(-gamma * L)"
    param_names = ("epsilon", "k", "gamma")
    inputs = ("loss",)

    def __init__(self, params=None, *, target: str = "error", starts=None):
        self.target = target
        super().__init__(params, starts=starts)

    def default_starts(self):
        return [(1.0, 1.0, 1.0)]

    @staticmethod
    def _curve(L, epsilon, k, gamma):
        return epsilon - k * np.exp(-gamma * L)

    def _fn(self, x, theta):
        return self._curve(x["loss"], *theta)

    def _fit_arrays(self, x, y, starts):
        return curve_fit_grid(self._curve, x["loss"], y, starts)

    def loss_for_error(self, error: float) -> float:
        """Invert the law: the loss at which the predicted error equals `error`."""
        self._require_params()
        eps, k, gamma = (self.params[p] for p in self.param_names)
        ratio = (eps - error) / k
        if not (ratio > 0 and gamma != 0):
            raise InputError(
                f"Error {error} is not reachable under this law (ε = {eps:.4g} is its ceiling as loss grows, "
                f"and the error falls toward ε − k = {eps - k:.4g} as loss falls); pick a target between those."
            )
        return float(-math.log(ratio) / gamma)


class ChinchillaLaw(ScalingLaw):
    """L(N, D) = E + A/N^α + B/D^β, fitted with Chinchilla's approach 3.

    The fit minimises Σ Huber_δ(LSE(a − α·log N, b − β·log D, e) − log L) over
    (a, b, e, α, β) = (log A, log B, log E, α, β) with L-BFGS-B from each start of
    Hoffmann et al.'s grid (α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25}),
    keeping the smallest objective, then polishing it (see `huber_lbfgs_grid`). Starts are
    given in that (a, b, e, α, β) space. The full grid has 4,500 starts (minutes on a busy
    CPU); pass a few starts for a quick fit: polished, they reach the same minimum.

    Args:
        params (`Mapping[str, float]` or `None`, *optional*, defaults to `None`):
            Known ``E``, ``A``, ``B``, ``alpha`` and ``beta``; ``None``: call `fit`.
        delta (`float`, *optional*, defaults to `1e-3`):
            δ of the Huber loss on log L.
        starts (`Sequence[Sequence[float]]` or `None`, *optional*, defaults to `None`):
            Starts in (a, b, e, α, β) space; ``None``: Hoffmann et al.'s grid.
        polish (`bool`, *optional*, defaults to `True`):
            Polish the best start's minimum (see `huber_lbfgs_grid`).
    """

    name = "chinchilla"
    formula = "L(N, D) = E + A / N^alpha + B / D^beta"
    param_names = ("E", "A", "B", "alpha", "beta")
    inputs = ("N", "D")

    def __init__(self, params=None, *, delta: float = 1e-3, starts=None, polish: bool = True):
        self.delta = float(delta)
        self.polish = polish
        super().__init__(params, starts=starts)

    @staticmethod
    def coarse_starts() -> list[tuple[float, ...]]:
        """A 108-start subset of Hoffmann et al.'s grid, for quick fits (polishing does the rest)."""
        return [(a, b, e, al, be) for al, be, e, a, b in grid([0.5, 1.5], [0.5, 1.5], [-1, 0, 1], [0, 10, 20], [0, 10, 20])]

    def default_starts(self):
        a = b = np.arange(0, 30, 5)
        e = np.arange(-1, 1.5, 0.5)
        alpha = beta = np.arange(0, 2.5, 0.5)
        return [(ai, bi, ei, al, be) for al, be, ei, ai, bi in grid(alpha, beta, e, a, b)]

    def _derive(self, cols):
        if cols.get("D") is None and cols.get("N") is not None and cols.get("M") is not None:
            cols["D"] = cols["M"] * cols["N"]
        return cols

    def _fn(self, x, theta):
        E, A, B, alpha, beta = theta
        return E + A / np.power(x["N"], alpha) + B / np.power(x["D"], beta)

    def _to_params(self, theta):
        a, b, e, alpha, beta = theta
        return np.array([math.exp(e), math.exp(a), math.exp(b), alpha, beta])

    def _theta_for_fit(self):
        p = self.params
        return np.array([math.log(p["A"]), math.log(p["B"]), math.log(p["E"]), p["alpha"], p["beta"]])

    def _fit_arrays(self, x, y, starts):
        log_n, log_d, log_y, delta = np.log(x["N"]), np.log(x["D"]), np.log(y), self.delta

        def objective(theta):
            a, b, e, alpha, beta = theta
            terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
            top = terms.max(axis=0)
            w = np.exp(terms - top)
            total = w.sum(axis=0)
            r = top + np.log(total) - log_y  # log-sum-exp prediction minus log loss
            w /= total
            g = np.clip(r, -delta, delta)  # d Huber / d r
            grad = np.array([(g * w[0]).sum(), (g * w[1]).sum(), (g * w[2]).sum(), -(g * w[0] * log_n).sum(), -(g * w[1] * log_d).sum()])
            return float(huber(r, delta).sum()), grad

        return huber_lbfgs_grid(objective, starts, polish=self.polish)

    def compute_optimal(self, C: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Compute-optimal (N*, D*) for budget C = 6ND: N* = G·(C/6)^(β/(α+β)), G = (αA/(βB))^(1/(α+β))."""
        self._require_params()
        p = self.params
        if p["alpha"] <= 0 or p["beta"] <= 0:
            raise InputError(f"compute_optimal needs α > 0 and β > 0, got α={p['alpha']:.4g}, β={p['beta']:.4g}.")
        C = np.asarray(C, float)
        G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
        N = G * (C / 6) ** (p["beta"] / (p["alpha"] + p["beta"]))
        return N, C / (6 * N)


LAWS = ScalingLaw._registry
