"""Read the score at the end of a critique, and the ranking a meta-judge returns.

>>> parse_score("Clear and correct.\\nScore: 8")
8.0
>>> parse_score("Rated 7/10 overall.")
7.0
>>> parse_score("Score: 42") is None  # outside 1..10: not a valid score
True
>>> parse_ranking("Ranking: 2 > 1 > 3", 3)
[1, 0, 2]
"""

from __future__ import annotations

import re

from .prompts import SCORE_MAX, SCORE_MIN

_SCORE = re.compile(r"score\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_OUT_OF = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*" + str(SCORE_MAX) + r"\b")
_RANKING = re.compile(r"ranking\s*:?\s*([\d\s>,]+)", re.IGNORECASE)


def parse_score(text: str | None, low: float = SCORE_MIN, high: float = SCORE_MAX) -> float | None:
    """The critique's score: the LAST "Score: N" (else the last "N/10"); None when there is
    none or it lies outside [low, high]. Critiques without a score are dropped and counted.

    Args:
        text (`str` or `None`):
            The critique; anything but a string gives None.
        low (`float`, *optional*, defaults to `SCORE_MIN`):
            Smallest valid score (1).
        high (`float`, *optional*, defaults to `SCORE_MAX`):
            Largest valid score (10).
    """
    if not isinstance(text, str):
        return None
    matches = _SCORE.findall(text) or _OUT_OF.findall(text)
    if not matches:
        return None
    value = float(matches[-1])
    return value if low <= value <= high else None


def parse_ranking(text: str | None, n: int) -> list[int] | None:
    """0-based indices of `n` numbered reviews, best first, from "Ranking: 2 > 1 > 3".

    Numbers outside 1..n and repeats are ignored; reviews the judge left out follow in their
    original order. None when the text has no ranking at all.

    Args:
        text (`str` or `None`):
            The meta-judge's answer; anything but a string gives None.
        n (`int`):
            Number of reviews that were ranked; the result is a permutation of ``range(n)``.
    """
    if not isinstance(text, str):
        return None
    match = _RANKING.search(text)
    if not match:
        return None
    order: list[int] = []
    for token in re.findall(r"\d+", match.group(1)):
        index = int(token) - 1
        if 0 <= index < n and index not in order:
            order.append(index)
    if not order:
        return None
    return order + [i for i in range(n) if i not in order]
