"""Checks on the columns that featurizers and selectors read, with errors that name the fix."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

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


@dataclass
class PoolTargetColumns:
    """The pool to select from and the target examples to match, with the columns each is read from.

    One set of fields for the target-matching selection jobs (LESS's `less_select` and the
    embedding baseline `embedding_select`), so both read a recipe's data settings the same way.
    """

    dataset: str = field(default="dolly_alpagasus_3k", metadata={"help": "Pool to select from (bundled name, file/folder or Hub id)."})
    dataset_split: str = field(default="train", metadata={"help": "Split of the pool."})
    dataset_license: Optional[str] = field(default=None, metadata={"help": "Licence of the pool, for the card."})
    instruction_column: str = field(default="instruction", metadata={"help": "Pool column with the instruction."})
    input_column: Optional[str] = field(default="input", metadata={"help": "Pool column with the optional input (null if none)."})
    response_column: str = field(default="output", metadata={"help": "Pool column with the response."})
    source_column: Optional[str] = field(default=None, metadata={"help": "Pool column naming each row's source, counted per selection."})
    target_dataset: str = field(default="openai/gsm8k", metadata={"help": "Target (validation) examples to match."})
    target_split: str = field(default="test", metadata={"help": "Split of the target dataset."})
    target_instruction_column: str = field(default="question", metadata={"help": "Target column with the instruction."})
    target_input_column: Optional[str] = field(default=None, metadata={"help": "Target column with an optional input."})
    target_response_column: str = field(default="answer", metadata={"help": "Target column with the response."})
    target_subtask_column: Optional[str] = field(
        default=None, metadata={"help": "Target column labelling subtasks: scores are averaged within each, then maxed."}
    )
