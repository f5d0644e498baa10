"""Checks on the dataset columns a component reads, with errors that name the fix.

Used by every domain that reads rows (selection, critique); each check raises one
:class:`~hf_ext.errors.InputError` before any expensive work.

>>> require_columns(["instruction", "output"], ["instruction", None], what="The judge")
>>> require_columns(["text"], ["output"], what="The judge")
Traceback (most recent call last):
...
hf_ext.errors.InputError: The judge needs a column 'output', but the dataset has ['text']. Rename your column, or point the config at it (e.g. response_column / instruction_column).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .errors import InputError

__all__ = ["require_columns", "require_strings", "require_rows"]


def require_columns(column_names: Iterable[str], needed: Sequence[str | None], *, what: str) -> None:
    """Raise one clear error when a needed column is missing (None entries are skipped).

    Args:
        column_names (`Iterable[str]`):
            The dataset's columns, e.g. ``ds.column_names``.
        needed (`Sequence[str | None]`):
            Columns the component reads; `None` stands for an optional column that is not configured.
        what (`str`):
            The component, named at the start of the error (e.g. ``"The judge"``).
    """
    available = list(column_names)
    for name in needed:
        if name is not None and name not in available:
            raise InputError(
                f"{what} needs a column {name!r}, but the dataset has {available}. "
                f"Rename your column, or point the config at it (e.g. response_column / instruction_column)."
            )


def require_strings(values: Sequence[Any], column: str, *, allow_none: bool = False) -> None:
    """Text columns must hold strings; name the first offending row and its type.

    Args:
        values (`Sequence[Any]`):
            The column's values in one batch.
        column (`str`):
            The column's name, for the error message.
        allow_none (`bool`, *optional*, defaults to `False`):
            Accept `None` values (an optional text column).
    """
    for i, value in enumerate(values):
        if isinstance(value, str) or (allow_none and value is None):
            continue
        raise InputError(
            f"Column {column!r} must hold strings, but row {i} of this batch is {type(value).__name__} ({value!r:.60}). "
            f"Convert it first, e.g. ds.map(lambda x: {{{column!r}: str(x[{column!r}])}})."
        )


def require_rows(num_rows: int, *, what: str) -> None:
    """Refuse an empty dataset before any scoring or selection.

    Args:
        num_rows (`int`):
            Number of rows of the dataset.
        what (`str`):
            The component, named at the start of the error (e.g. ``"The selector"``).
    """
    if num_rows == 0:
        raise InputError(f"{what} got an empty dataset: there is nothing to score or select. Check the split and any filters.")
