"""Prompt/response formatting shared by the LESS warmup and the gradient featurizer.

Both must tokenise an example the same way, so the loss whose gradient LESS takes is exactly
the loss the warmup trained: next-token cross-entropy on the response tokens only (prompt
positions carry the label -100). The default template is the Tulu format LESS uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from ...errors import InputError

IGNORE_INDEX = -100
TULU_TEMPLATE = "<|user|>\n{prompt}\n<|assistant|>\n"


@dataclass(frozen=True)
class ExampleFormat:
    """Which columns hold the instruction, the optional input and the response, and the template.

    Args:
        instruction_column (`str`, *optional*, defaults to `"instruction"`):
            Column with the instruction.
        input_column (`str` or `None`, *optional*, defaults to `"input"`):
            Column with the optional input, appended to the instruction after a blank line; `None` when the data
            has none.
        response_column (`str`, *optional*, defaults to `"output"`):
            Column with the response (the tokens the loss is taken on).
        template (`str`, *optional*, defaults to `TULU_TEMPLATE`):
            Prompt template with a `{prompt}` placeholder (the Tulu format LESS uses).
        max_length (`int`, *optional*, defaults to `512`):
            Tokens per example at most (prompt and response together); longer examples are truncated.
    """

    instruction_column: str = "instruction"
    input_column: Optional[str] = "input"
    response_column: str = "output"
    template: str = TULU_TEMPLATE
    max_length: int = 512

    def check_columns(self, names: Sequence[str], what: str) -> None:
        wanted = [self.instruction_column, self.response_column] + ([self.input_column] if self.input_column else [])
        missing = [c for c in wanted if c not in names]
        if missing:
            raise InputError(
                f"{what} needs the column(s) {missing}, but the data has {list(names)}. "
                "Set instruction_column / input_column / response_column to the names your data uses."
            )

    def prompt(self, row: Mapping[str, Any]) -> str:
        text = str(row[self.instruction_column] or "")
        extra = row.get(self.input_column) if self.input_column else None
        if extra:
            text = f"{text}\n\n{extra}"
        return self.template.format(prompt=text)


def tokenize_example(tokenizer, fmt: ExampleFormat, row: Mapping[str, Any]) -> dict[str, list[int]]:
    """``input_ids`` = [bos] + prompt + response + [eos]; ``labels`` = -100 on [bos] + prompt.

    Truncated to ``fmt.max_length`` tokens; an example whose response is cut away entirely has
    no response token (all labels -100): the featurizer skips and counts it.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer; its bos/eos tokens are added when it has them.
        fmt (`ExampleFormat`):
            The columns, template and maximum length.
        row (`Mapping[str, Any]`):
            One example, keyed by column name.
    """
    prompt_ids = tokenizer(fmt.prompt(row), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(str(row[fmt.response_column] or ""), add_special_tokens=False)["input_ids"]
    if response_ids and tokenizer.eos_token_id is not None:
        response_ids = response_ids + [tokenizer.eos_token_id]
    head = ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + prompt_ids
    ids = (head + response_ids)[: fmt.max_length]
    labels = ([IGNORE_INDEX] * len(head) + response_ids)[: fmt.max_length]
    return {"input_ids": ids, "labels": labels}


def tokenize_batch(tokenizer, fmt: ExampleFormat, batch: Mapping[str, Sequence[Any]]) -> dict[str, list[list[int]]]:
    """Batched :func:`tokenize_example` for ``ds.map(batched=True)``.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer.
        fmt (`ExampleFormat`):
            The columns, template and maximum length.
        batch (`Mapping[str, Sequence[Any]]`):
            A batch of examples, keyed by column name.
    """
    n = len(batch[fmt.response_column])
    rows = [{k: v[i] for k, v in batch.items()} for i in range(n)]
    out = [tokenize_example(tokenizer, fmt, row) for row in rows]
    return {"input_ids": [o["input_ids"] for o in out], "labels": [o["labels"] for o in out]}
