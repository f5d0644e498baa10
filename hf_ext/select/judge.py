"""AlpaGasus judge scorer (Chen et al. 2023, arXiv 2307.08701).

A judge LM rates each (instruction, input, response) on a 0–5 scale; AlpaGasus keeps the
examples rated ≥ 4.5 (about 9k of Alpaca-52k). The prompt below is the paper's rating prompt
(dimension "accuracy"). The parser follows the reference: the first line as a float, else a
"Score: x" pattern anywhere, else −1. A score off the 0–5 scale (``99``, ``inf``, ``nan``, ``-3``)
is a judge that did not follow the prompt, not a high rating: it counts as unparsable (−1), so
it is never selected.

The backend is pluggable (`hf_ext.critique.backends`): a local transformers model or an
OpenAI-compatible server.

>>> parse_alpagasus_score("4.5\\nThe response is accurate.")
4.5
>>> parse_alpagasus_score("I would rate it.\\nScore: 4")
4.0
>>> parse_alpagasus_score("no idea")
-1.0
>>> parse_alpagasus_score("99"), parse_alpagasus_score("inf")
(-1.0, -1.0)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..critique.backends import Conversation, OpenAIBackend, TransformersBackend
from .columns import join_prompt, require_columns, require_strings

ALPAGASUS_SYSTEM_PROMPT = (
    "We would like to request your feedback on the performance of AI assistant in response to the "
    "instruction and the given input displayed following."
)
ALPAGASUS_USER_TEMPLATE = (
    "###Instruction: {instruction}\n\n### Input: {input}\n\n### Response: {response}\n\n"
    "Please rate according to the {dimension} of the response to the instruction and the input. "
    "Each assistant receives a score on a scale of 0 to 5, where a higher score indicates higher level "
    "of the {dimension}. Please first output a single line containing value indicating the scores. "
    "In the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding "
    "any potential bias."
)
ALPAGASUS_THRESHOLD = 4.5
ALPAGASUS_SCALE = (0.0, 5.0)  # the prompt's "scale of 0 to 5"

_SCORE_PATTERN = re.compile(r"score\s*[:=]?\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_alpagasus_score(text: str, scale: tuple[float, float] = ALPAGASUS_SCALE) -> float:
    """Parse a judge's answer: the first line as a float, else "Score: x", else −1; a score
    outside `scale` (or not finite) is −1 too.

    Args:
        text (`str`):
            The judge's answer; anything but a string gives −1.
        scale (`tuple[float, float]`, *optional*, defaults to `(0.0, 5.0)`):
            Lowest and highest valid score (`ALPAGASUS_SCALE`, the prompt's 0 to 5), both included.
    """
    if not isinstance(text, str):
        return -1.0
    stripped = text.strip()
    first_line = stripped.split("\n", 1)[0].strip() if stripped else ""
    try:
        score = float(first_line)
    except ValueError:
        match = _SCORE_PATTERN.search(stripped)
        score = float(match.group(1)) if match else -1.0
    low, high = scale
    return score if math.isfinite(score) and low <= score <= high else -1.0


def alpagasus_conversation(instruction: str, input_text: str | None, response: str, dimension: str = "accuracy") -> Conversation:
    """The judge prompt for one example, as chat messages.

    Args:
        instruction (`str`):
            The example's instruction.
        input_text (`str` or `None`):
            The example's optional input; `None` leaves the prompt's input section empty.
        response (`str`):
            The response the judge rates.
        dimension (`str`, *optional*, defaults to `"accuracy"`):
            What the judge rates ("accuracy" in AlpaGasus; "helpfulness" is the other).
    """
    user = ALPAGASUS_USER_TEMPLATE.format(instruction=instruction, input=input_text or "", response=response, dimension=dimension)
    return [{"role": "system", "content": ALPAGASUS_SYSTEM_PROMPT}, {"role": "user", "content": user}]


@dataclass
class JudgeScorer:
    """``ds.map(batched=True)`` callable adding ``judge_score`` (float, −1 when unparsable)
    and ``judge_raw`` (the judge's text).

    Args:
        backend (`TransformersBackend` or `OpenAIBackend`, *optional*, defaults to `TransformersBackend()`):
            A `TransformersBackend` or `OpenAIBackend` (settings only are pickled).
        instruction_column (`str`, *optional*, defaults to `"instruction"`):
            Column with the instruction.
        input_column (`str` or `None`, *optional*, defaults to `"input"`):
            Column with the optional input; ``None`` when the pool has no separate input.
        response_column (`str`, *optional*, defaults to `"output"`):
            Column with the response the judge rates.
        dimension (`str`, *optional*, defaults to `"accuracy"`):
            What the judge rates ("accuracy" in AlpaGasus; "helpfulness" is the other).
        score_column (`str`, *optional*, defaults to `"judge_score"`):
            Name of the added score column.
        raw_column (`str`, *optional*, defaults to `"judge_raw"`):
            Name of the added column with the judge's text.
    """

    backend: TransformersBackend | OpenAIBackend = field(default_factory=TransformersBackend)
    instruction_column: str = "instruction"
    input_column: str | None = "input"
    response_column: str = "output"
    dimension: str = "accuracy"
    score_column: str = "judge_score"
    raw_column: str = "judge_raw"

    def __call__(self, batch: dict[str, list]) -> dict[str, list[Any]]:
        require_columns(batch.keys(), [self.instruction_column, self.input_column, self.response_column], what="JudgeScorer")
        instructions, responses = batch[self.instruction_column], batch[self.response_column]
        inputs = batch[self.input_column] if self.input_column else [None] * len(instructions)
        require_strings(instructions, self.instruction_column)
        require_strings(responses, self.response_column)
        require_strings(inputs, self.input_column or "input", allow_none=True)
        conversations = [alpagasus_conversation(i, x, r, self.dimension) for i, x, r in zip(instructions, inputs, responses)]
        raw = self.backend.generate(conversations)
        return {self.score_column: [parse_alpagasus_score(t) for t in raw], self.raw_column: raw}


def judge_summary(scores: list[float], threshold: float = ALPAGASUS_THRESHOLD) -> dict[str, Any]:
    """Counts for metrics and the card: scored, unparsable (−1, including off-scale answers),
    at or above `threshold`, and the highest valid score (None when none parsed).

    Args:
        scores (`list[float]`):
            The parsed judge scores (−1 where unparsable).
        threshold (`float`, *optional*, defaults to `4.5`):
            Score counted as selectable (`ALPAGASUS_THRESHOLD`).
    """
    valid = [s for s in scores if s >= 0]
    return {"scored": len(scores), "unparsable": len(scores) - len(valid), "threshold": threshold,
            "at_or_above_threshold": sum(s >= threshold for s in valid), "max_score": max(valid) if valid else None}


__all__ = [
    "ALPAGASUS_SYSTEM_PROMPT",
    "ALPAGASUS_SCALE",
    "ALPAGASUS_THRESHOLD",
    "ALPAGASUS_USER_TEMPLATE",
    "JudgeScorer",
    "alpagasus_conversation",
    "judge_summary",
    "join_prompt",
    "parse_alpagasus_score",
]
