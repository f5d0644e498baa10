"""Turn the public preference sets into (prompt, chosen, rejected) rows.

- AlpacaEval annotations (``instruction, output_1, output_2, preference``): preference 1
  means output_1 won, 2 means output_2 won; ties (0, 1.5) and missing labels are dropped.
- Anthropic hh-rlhf (``chosen``, ``rejected`` full transcripts): the shared dialogue up to the
  last ``"\\n\\nAssistant:"`` is the prompt, the two last turns are the responses.

All models in AlpacaEval answer the same 805 prompts, so :func:`split_by_prompt` keeps every
prompt on one side of a train/test split.

>>> hh_rlhf_pair({"chosen": "\\n\\nHuman: Hi\\n\\nAssistant: Hello!", "rejected": "\\n\\nHuman: Hi\\n\\nAssistant: Go away."})
{'prompt': '\\n\\nHuman: Hi\\n\\nAssistant:', 'chosen': ' Hello!', 'rejected': ' Go away.'}
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import InputError
from ..columns import require_columns

_ASSISTANT = "\n\nAssistant:"


def alpaca_eval_pairs(dataset: Any) -> Any:
    """AlpacaEval annotations → prompt/chosen/rejected rows (ties and missing labels dropped).

    Args:
        dataset (`datasets.Dataset`):
            Rows with ``instruction``, ``output_1``, ``output_2`` and ``preference`` (1 or 2: the winning output);
            other columns are kept, ``output_1`` / ``output_2`` are removed.
    """
    require_columns(dataset.column_names, ["instruction", "output_1", "output_2", "preference"], what="alpaca_eval_pairs")

    def is_decided(p: Any) -> bool:
        return p is not None and float(p) in (1.0, 2.0)

    def convert(example: dict[str, Any]) -> dict[str, Any]:
        first_wins = float(example["preference"]) == 1.0
        return {
            "prompt": example["instruction"],
            "chosen": example["output_1"] if first_wins else example["output_2"],
            "rejected": example["output_2"] if first_wins else example["output_1"],
        }

    decided = dataset.filter(lambda p: [is_decided(x) for x in p], input_columns="preference", batched=True)
    return decided.map(convert, remove_columns=[c for c in ("output_1", "output_2") if c in decided.column_names])


def hh_rlhf_pair(example: dict[str, Any]) -> dict[str, str]:
    """Split one hh-rlhf row at the last assistant turn into prompt, chosen and rejected.

    Args:
        example (`dict[str, Any]`):
            A row with the ``chosen`` and ``rejected`` transcripts; when they differ before the last
            ``"\\n\\nAssistant:"``, the prompt is their longest shared prefix.
    """
    chosen, rejected = example["chosen"], example["rejected"]
    cut = chosen.rfind(_ASSISTANT) + len(_ASSISTANT)
    if cut < len(_ASSISTANT) or chosen[:cut] != rejected[:cut]:
        # The transcripts differ before the last assistant turn: keep the longest shared prefix.
        cut = 0
        while cut < min(len(chosen), len(rejected)) and chosen[cut] == rejected[cut]:
            cut += 1
    return {"prompt": chosen[:cut], "chosen": chosen[cut:], "rejected": rejected[cut:]}


def hh_rlhf_pairs(dataset: Any) -> Any:
    """hh-rlhf transcripts → prompt/chosen/rejected rows (rows whose responses are equal dropped).

    Args:
        dataset (`datasets.Dataset`):
            Rows with ``chosen`` and ``rejected`` transcripts; rows with an equal or blank response are dropped.
    """
    require_columns(dataset.column_names, ["chosen", "rejected"], what="hh_rlhf_pairs")
    pairs = dataset.map(hh_rlhf_pair)
    return pairs.filter(lambda c, r: [a != b and a.strip() != "" and b.strip() != "" for a, b in zip(c, r)],
                        input_columns=["chosen", "rejected"], batched=True)


def split_by_prompt(dataset: Any, test_fraction: float = 0.2, *, prompt_column: str = "prompt", seed: int = 0) -> tuple[Any, Any]:
    """Train/test split where every prompt lands on one side (by a seeded hash of its text).

    Args:
        dataset (`datasets.Dataset`):
            The rows to split; returned as ``(train, test)`` in their original order.
        test_fraction (`float`, *optional*, defaults to `0.2`):
            Expected share of distinct prompts in the test split, in (0, 1).
        prompt_column (`str`, *optional*, defaults to `"prompt"`):
            Column holding the prompt text that is hashed.
        seed (`int`, *optional*, defaults to `0`):
            Salt of the hash: another seed gives another split.
    """
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must be between 0 and 1, got {test_fraction!r}.")
    require_columns(dataset.column_names, [prompt_column], what="split_by_prompt")

    def in_test(prompt: str) -> bool:
        digest = hashlib.sha256(f"{seed}:{prompt}".encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction

    flags = [in_test(p) for p in dataset[prompt_column]]
    return (dataset.select([i for i, f in enumerate(flags) if not f]), dataset.select([i for i, f in enumerate(flags) if f]))
