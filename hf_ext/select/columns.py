"""Selection's own checks and fields: the budget, the Alpaca prompt, the pool/target columns.

The column checks every domain uses live in :mod:`hf_ext.columns` (re-exported here for selection's modules).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..columns import require_columns, require_rows, require_strings
from ..errors import InputError

__all__ = ["require_columns", "require_strings", "require_rows", "check_budget", "join_prompt", "PoolTargetColumns"]


def check_budget(budget: int, pool_size: int) -> None:
    """Refuse a budget that is not a positive integer or that is larger than the pool (an `InputError`).

    Args:
        budget (`int`):
            Number of examples to select.
        pool_size (`int`):
            Number of examples in the pool the budget is taken from.
    """
    if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
        raise InputError(f"budget must be a positive integer, got {budget!r}.")
    if budget > pool_size:
        raise InputError(
            f"budget={budget} is larger than the pool ({pool_size} examples). Lower the budget to at most {pool_size}, "
            "or use a larger pool."
        )


def join_prompt(instruction: str, input_text: str | None) -> str:
    """Instruction and optional input as one prompt, the Alpaca way.

    Args:
        instruction (`str`):
            The instruction.
        input_text (`str` or `None`):
            Optional input; when empty or `None` the prompt is the instruction alone, otherwise it follows the
            instruction after a blank line.
    """
    return f"{instruction}\n\n{input_text}" if input_text else instruction


@dataclass
class PoolTargetColumns:
    """The pool to select from and the target examples to match, with the columns each is read from.

    One set of fields for the target-matching selection jobs (LESS's `less_select` and the
    embedding baseline `embedding_select`), so both read a recipe's data settings the same way.

    Args:
        dataset (`str`, *optional*, defaults to `"dolly_alpagasus_3k"`):
            Pool to select from (bundled name, file/folder or Hub id).
        dataset_split (`str`, *optional*, defaults to `"train"`):
            Split of the pool.
        dataset_license (`str` or `None`, *optional*, defaults to `None`):
            Licence of the pool, for the card.
        instruction_column (`str`, *optional*, defaults to `"instruction"`):
            Pool column with the instruction.
        input_column (`str` or `None`, *optional*, defaults to `"input"`):
            Pool column with the optional input (null if none).
        response_column (`str`, *optional*, defaults to `"output"`):
            Pool column with the response.
        source_column (`str` or `None`, *optional*, defaults to `None`):
            Pool column naming each row's source, counted per selection.
        target_dataset (`str`, *optional*, defaults to `"openai/gsm8k"`):
            Target (validation) examples to match.
        target_split (`str`, *optional*, defaults to `"test"`):
            Split of the target dataset.
        target_instruction_column (`str`, *optional*, defaults to `"question"`):
            Target column with the instruction.
        target_input_column (`str` or `None`, *optional*, defaults to `None`):
            Target column with an optional input.
        target_response_column (`str`, *optional*, defaults to `"answer"`):
            Target column with the response.
        target_subtask_column (`str` or `None`, *optional*, defaults to `None`):
            Target column labelling subtasks: scores are averaged within each, then maxed.
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
