"""Text units shared by the rules: words, lines, paragraphs, and n-gram keys.

DCLM counts page length and repetition over words from Unicode word segmentation with
punctuation dropped (uniseg, ``ignore_punctuation=True``); ``words`` approximates that with one
regex (letters/digits joined by the UAX #29 mid-word characters ``. ' ’ :``), which keeps
"don't", "3.5" and "U.S.A" whole and drops punctuation, at regex speed. The other DCLM rules
(word length, symbols, alphabetic words, stop words) use ``str.split()`` exactly as DCLM does.
"""

from __future__ import annotations

import re

import numpy as np

_WORD_RE = re.compile(r"\w+(?:[.'’:]\w+)*")
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier for rolling n-gram keys


def words(text: str) -> list[str]:
    """Words with punctuation dropped (DCLM's ``split_words(..., ignore_punctuation=True)``)."""
    return _WORD_RE.findall(text)


def segments(text: str, sep: str = "\n") -> list[str]:
    """Non-empty lines (``sep="\\n"``) or paragraphs (``sep="\\n\\n"``), as DCLM's ``split_paragraphs``."""
    return [s for s in text.split(sep) if s.strip()]


def word_ids(tokens: list[str]) -> np.ndarray:
    """Dense per-document ids (equal words get equal ids)."""
    vocab: dict[str, int] = {}
    return np.fromiter((vocab.setdefault(w, len(vocab)) for w in tokens), dtype=np.uint64, count=len(tokens))


def ngram_keys(ids: np.ndarray, n: int, prev: np.ndarray | None = None) -> np.ndarray:
    """64-bit keys of every n-gram of `ids` (collisions ~2^-64). Pass the (n-1)-gram keys as
    `prev` to extend them in O(len) instead of recomputing."""
    if len(ids) < n:
        return np.zeros(0, dtype=np.uint64)
    if prev is None:
        keys = ids[: len(ids) - n + 1].copy() + np.uint64(1)
        for k in range(1, n):
            keys = keys * _MIX + ids[k : len(ids) - n + 1 + k] + np.uint64(1)
        return keys
    return prev[:-1] * _MIX + ids[n - 1 :] + np.uint64(1)
