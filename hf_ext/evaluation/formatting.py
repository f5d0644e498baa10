"""One way to turn an instruction row into a prompt and a completion, shared by the ``sft``
job (what is trained on) and the response NLL (what is scored), so both see the same text.

With a chat template the pair is conversational (TRL's prompt-completion format: a user turn
and an assistant turn); without one it is plain text, prompt ``instruction\\n\\ninput\\n\\n``.

>>> to_prompt_completion({"instruction": "Add 2 and 3.", "input": "", "output": "5"}, chat=False)
{'prompt': 'Add 2 and 3.\\n\\n', 'completion': '5'}
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError

__all__ = ["prompt_text", "to_prompt_completion", "context_continuation", "check_columns"]


def prompt_text(instruction: str, context: str | None = None) -> str:
    """The user's message: the instruction, then the input/context after a blank line if any.

    Args:
        instruction (`str`):
            The instruction (stripped).
        context (`str` or `None`, *optional*, defaults to `None`):
            The optional input; empty or whitespace-only counts as none.
    """
    context = (context or "").strip()
    return f"{instruction.strip()}\n\n{context}" if context else instruction.strip()


def to_prompt_completion(row: dict[str, Any], *, chat: bool, instruction_column: str = "instruction",
                         input_column: str | None = "input", response_column: str = "output") -> dict[str, Any]:
    """TRL prompt-completion fields for one row (conversational when `chat`).

    Args:
        row (`dict[str, Any]`):
            One example, keyed by column name.
        chat (`bool`):
            Give a user turn and an assistant turn (for a chat template); otherwise plain text, the prompt ending in
            a blank line.
        instruction_column (`str`, *optional*, defaults to `"instruction"`):
            Column with the instruction.
        input_column (`str` or `None`, *optional*, defaults to `"input"`):
            Column with the optional input; `None` when the data has none.
        response_column (`str`, *optional*, defaults to `"output"`):
            Column with the response, the completion.
    """
    user = prompt_text(row[instruction_column], row.get(input_column) if input_column else None)
    if chat:
        return {"prompt": [{"role": "user", "content": user}], "completion": [{"role": "assistant", "content": row[response_column]}]}
    return {"prompt": user + "\n\n", "completion": row[response_column]}


def context_continuation(example: dict[str, Any], tokenizer) -> tuple[str, str]:
    """(context, continuation) strings of a prompt-completion example, as TRL tokenizes it:
    the chat template with the generation prompt for the context; the continuation is the
    rest of the templated conversation (or the completion plus EOS for plain text).

    Args:
        example (`dict[str, Any]`):
            A prompt-completion example (:func:`to_prompt_completion`): strings, or lists of chat messages.
        tokenizer (`PreTrainedTokenizerBase`):
            Renders conversational examples with its chat template and gives the EOS token of plain ones.
    """
    prompt, completion = example["prompt"], example["completion"]
    if isinstance(prompt, str):
        return prompt, completion + (tokenizer.eos_token or "")
    context = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    if not full.startswith(context):
        raise InputError("The chat template renders the prompt differently with and without the response; "
                         "set chat_template: false to score plain text.")
    return context, full[len(context):]


def check_columns(column_names: list[str], *, instruction_column: str, input_column: str | None, response_column: str,
                  what: str) -> None:
    """InputError naming a missing instruction/input/response column and the field to set.

    Args:
        column_names (`list[str]`):
            The data's columns.
        instruction_column (`str`):
            Column expected to hold the instruction.
        input_column (`str` or `None`):
            Column expected to hold the optional input; `None` is not checked.
        response_column (`str`):
            Column expected to hold the response.
        what (`str`):
            What the data is, for the message (e.g. ``"Pool 'dolly'"``).
    """
    for field_name, column in (("instruction_column", instruction_column), ("input_column", input_column),
                               ("response_column", response_column)):
        if column is not None and column not in column_names:
            raise InputError(f"{what} has no column {column!r} (field `{field_name}`); its columns are {column_names}. "
                             f"Set `{field_name}` to the right column" + (" or null." if field_name == "input_column" else "."))
