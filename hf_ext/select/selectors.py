"""Selectors: pure functions over score/feature columns that return indices for ``ds.select``.

A selector declares the columns it reads; the selection pipeline runs the featurizers that
produce them first. A selector function is called as ``fn(columns, budget, *, seed, pool_size,
**options)`` with `columns` holding only the columns it declared. Register new ones with :func:`register_selector`:

>>> import numpy as np
>>> @register_selector("shortest", requires=("response_tokens",))
... def select_shortest(columns, budget, *, seed=0, pool_size):
...     return np.argsort(np.asarray(columns["response_tokens"]), kind="stable")[:budget].tolist()
>>> get_selector("shortest").select({"response_tokens": [5, 1, 3]}, 2)
[1, 2]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .columns import check_budget, require_columns
from .judge import ALPAGASUS_THRESHOLD

SelectFn = Callable[..., list[int]]


@dataclass(frozen=True)
class Selector:
    """A named selection method: the columns it reads and the function that picks.

    ``prefix`` is the default prefix of the columns it reads when a featurizer writes them
    (``"sae"`` for ``sae_ids``): ``select(..., prefix="np2")`` reads ``np2_ids`` instead, the
    columns a featurizer built with ``prefix="np2"`` wrote (one setting for both steps).

    Args:
        name (`str`):
            The method's name (its key in `SELECTORS`, the `method` of a recipe).
        requires (`tuple[str, ...]`):
            Columns the function reads, named with the default `prefix`.
        fn (`Callable[..., list[int]]`):
            The function that picks: ``fn(columns, budget, *, seed, pool_size, **options)`` returns row indices.
        description (`str`, *optional*, defaults to `""`):
            One line for listings and cards.
        prefix (`str` or `None`, *optional*, defaults to `None`):
            Prefix of the featurizer columns in `requires` (``"sae"`` for ``sae_ids``); `None` for a method that reads
            no featurizer columns (it then takes no ``prefix=``).
    """

    name: str
    requires: tuple[str, ...]
    fn: SelectFn
    description: str = ""
    prefix: str | None = None

    def columns_for(self, prefix: str | None = None) -> dict[str, str]:
        """{column the function reads: column of the dataset} for a featurizer `prefix`."""
        if prefix is None or self.prefix is None or prefix == self.prefix:
            return {c: c for c in self.requires}
        if not isinstance(prefix, str) or not prefix:
            raise InputError(f"prefix must be a non-empty string (the featurizer's prefix), got {prefix!r}.")
        head = f"{self.prefix}_"
        return {c: prefix + "_" + c[len(head):] if c.startswith(head) else c for c in self.requires}

    def options_class(self) -> type:
        """The method's own options as a dataclass named after its function: the function's keyword-only
        parameters but ``seed`` and ``pool_size`` (which every selector takes), with their types and defaults."""
        import inspect
        import typing
        from dataclasses import field, make_dataclass

        hints = typing.get_type_hints(self.fn)
        params = [p for p in inspect.signature(self.fn).parameters.values()
                  if p.kind is p.KEYWORD_ONLY and p.name not in ("seed", "pool_size")]
        return make_dataclass(self.fn.__name__, [(p.name, hints.get(p.name, Any), field(default=p.default, metadata={"help": ""}))
                                                 for p in params])

    def select(self, columns: Mapping[str, Sequence[Any]], budget: int, *, seed: int = 0, prefix: str | None = None,
               **kwargs: Any) -> list[int]:
        """Pick `budget` row indices from `columns` (a Dataset or a dict of columns).

        Args:
            prefix (`str` or `None`, *optional*, defaults to `None`):
                The featurizer's column prefix (``SAEFeaturizer(prefix=...)``); None: the default.
        """
        if prefix is not None and self.prefix is None:
            raise InputError(f"Selector {self.name!r} reads no featurizer columns; it takes no prefix (got {prefix!r}).")
        names = columns.column_names if hasattr(columns, "column_names") else list(columns.keys())
        mapping = self.columns_for(prefix)
        missing = [col for col in mapping.values() if col not in names]
        if missing and self.prefix is not None and prefix is None:
            suffixes = tuple(c[len(self.prefix) + 1:] for c in self.requires)
            found = sorted({n[: -len(sfx) - 1] for n in names for sfx in suffixes if n.endswith("_" + sfx)})
            if found:
                raise InputError(f"Selector {self.name!r} reads {missing}, which the pool lacks; it has columns with the "
                                 f"prefix(es) {found}: pass prefix={found[0]!r} (the featurizer's prefix).")
        require_columns(names, list(mapping.values()), what=f"Selector {self.name!r}")
        pool_size = len(columns) if hasattr(columns, "column_names") else len(next(iter(columns.values()), []))
        if pool_size == 0:
            raise InputError(f"Selector {self.name!r} got an empty pool: nothing to select.")
        check_budget(budget, pool_size)
        data = {c: columns[source] for c, source in mapping.items()}
        return [int(i) for i in self.fn(data, budget, seed=seed, pool_size=pool_size, **kwargs)]


SELECTORS: dict[str, Selector] = {}


def register_selector(name: str, *, requires: tuple[str, ...] = (), description: str = "",
                      prefix: str | None = None) -> Callable[[SelectFn], SelectFn]:
    """Register `fn` as method `name`; `prefix`: the featurizer prefix its `requires` columns carry.

    Args:
        name (`str`):
            The method's name (a key of `SELECTORS`, the `method` of a recipe).
        requires (`tuple[str, ...]`, *optional*, defaults to `()`):
            Columns the function reads; the selection job runs the featurizers that produce them first.
        description (`str`, *optional*, defaults to `""`):
            One line for listings; default: the first line of the function's docstring.
        prefix (`str` or `None`, *optional*, defaults to `None`):
            The featurizer prefix its `requires` columns carry (``"sae"`` for ``sae_ids``), so ``prefix=`` can redirect them.
    """

    def decorator(fn: SelectFn) -> SelectFn:
        SELECTORS[name] = Selector(name, tuple(requires), fn, description or (fn.__doc__ or "").strip().split("\n")[0], prefix)
        return fn

    return decorator


def get_selector(name: str) -> Selector:
    """The registered :class:`Selector` called `name`.

    Args:
        name (`str`):
            A key of `SELECTORS`.

    Raises:
        InputError: for an unknown name, listing the registered ones.
    """
    if name not in SELECTORS:
        raise InputError(f"Unknown selection method {name!r}. Available: {sorted(SELECTORS)}.")
    return SELECTORS[name]


@register_selector("longest", requires=("response_tokens",))
def select_longest(columns: Mapping[str, Sequence[int]], budget: int, *, seed: int = 0, pool_size: int) -> list[int]:
    """Top-k by response length in tokens (Zhao et al. 2024); ties keep pool order.

    Args:
        columns (`Mapping[str, Sequence[int]]`):
            Holds `response_tokens`, the response length of each row in tokens.
        budget (`int`):
            How many rows to pick.
        seed (`int`, *optional*, defaults to `0`):
            Unused (the order is deterministic); taken like every selector.
        pool_size (`int`):
            Number of rows in the pool.
    """
    lengths = np.asarray(columns["response_tokens"], dtype=np.int64)
    # Stable sort on the negated length: equal lengths stay in pool order.
    return np.argsort(-lengths, kind="stable")[:budget].tolist()


@register_selector("random")
def select_random(columns: Mapping[str, Sequence[Any]], budget: int, *, seed: int = 0, pool_size: int) -> list[int]:
    """Uniform sample without replacement, seeded; returned in pool order.

    Args:
        columns (`Mapping[str, Sequence[Any]]`):
            Unused: the method reads no columns.
        budget (`int`):
            How many rows to draw.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the draw.
        pool_size (`int`):
            Number of rows in the pool.
    """
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool_size, size=budget, replace=False)).tolist()


@register_selector("alpagasus", requires=("judge_score",))
def select_alpagasus(
    columns: Mapping[str, Sequence[float]], budget: int, *, seed: int = 0, pool_size: int, threshold: float = ALPAGASUS_THRESHOLD
) -> list[int]:
    """Examples the judge rated >= threshold (AlpaGasus: 4.5 of 5), best first, up to the budget.

    Args:
        columns (`Mapping[str, Sequence[float]]`):
            Holds `judge_score`, the judge's rating of each row (NaN where no score was parsed).
        budget (`int`):
            The most rows to pick; fewer when fewer rows reach the threshold.
        seed (`int`, *optional*, defaults to `0`):
            Unused (the order is deterministic); taken like every selector.
        pool_size (`int`):
            Number of rows in the pool.
        threshold (`float`, *optional*, defaults to `4.5`):
            Lowest judge score kept (`ALPAGASUS_THRESHOLD`, AlpaGasus's 4.5 of 5).
    """
    scores = np.asarray(columns["judge_score"], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order[:budget] if scores[i] >= threshold]


def select(dataset, method: str, budget: int, *, seed: int = 0, **kwargs: Any) -> list[int]:
    """Indices of `dataset` chosen by `method`: ``ds.select(select(ds, "longest", 300))``;
    ``prefix=featurizer.prefix`` for SAE methods over a featurizer with its own prefix.

    Args:
        dataset (`datasets.Dataset` or `Mapping[str, Sequence]`):
            The pool, holding the columns the method reads (see `Selector.requires`).
        method (`str`):
            A registered selection method (a key of `SELECTORS`: longest, random, alpagasus, sae_greedy, ...).
        budget (`int`):
            How many rows to pick; at most the pool's size.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the methods that draw at random (random, kcenter's first center).
        **kwargs:
            The method's own options (``threshold=`` for alpagasus, ``similarity=`` for sae_simscale) and ``prefix=``,
            the featurizer's column prefix.
    """
    return get_selector(method).select(dataset, budget, seed=seed, **kwargs)
