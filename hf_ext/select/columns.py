"""Checks on the columns that featurizers and selectors read, with errors that name the fix."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import InputError


def require_columns(column_names: Iterable[str], needed: Sequence[str | None], *, what: str) -> None:
    """Raise one clear error when a needed column is missing (None entries are skipped)."""
    available = list(column_names)
    for name in needed:
        if name is not None and name not in available:
            raise InputError(
                f"{what} needs a column {name!r}, but the dataset has {available}. "
                f"Rename your column, or point the config at it (e.g. response_column / instruction_column)."
            )


def require_strings(values: Sequence[Any], column: str, *, allow_none: bool = False) -> None:
    """Text columns must hold strings; name the first offending row and its type."""
    for i, value in enumerate(values):
        if isinstance(value, str) or (allow_none and value is None):
            continue
        raise InputError(
            f"Column {column!r} must hold strings, but row {i} of this batch is {type(value).__name__} ({value!r:.60}). "
            f"Convert it first, e.g. ds.map(lambda x: {{{column!r}: str(x[{column!r}])}})."
        )


def require_rows(num_rows: int, *, what: str) -> None:
    if num_rows == 0:
        raise InputError(f"{what} got an empty dataset: there is nothing to score or select. Check the split and any filters.")


def check_budget(budget: int, pool_size: int) -> None:
    if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
        raise InputError(f"budget must be a positive integer, got {budget!r}.")
    if budget > pool_size:
        raise InputError(
            f"budget={budget} is larger than the pool ({pool_size} examples). Lower the budget to at most {pool_size}, "
            "or use a larger pool."
        )


def join_prompt(instruction: str, input_text: str | None) -> str:
    """Instruction and optional input as one prompt, the Alpaca way."""
    return f"{instruction}\n\n{input_text}" if input_text else instruction
