"""Llama 3's web-data heuristics (arXiv 2407.21783 §3.1.1): line-level dedup across a bucket
of documents, duplicated n-gram coverage, dirty-word counting and the KL divergence of a
document's token distribution from a reference corpus.

>>> dedup_lines_in_bucket(["menu\\nunique a", "menu\\nunique b", "menu\\nunique c"], max_occurrences=2)[0]
['unique a', 'unique b', 'unique c']
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import Doc, Filter
from .heuristics import GOPHER_DUP_NGRAMS, dup_ngram_char_fraction
from .text import ngram_keys, word_ids


def dedup_lines_in_bucket(texts: list[str], max_occurrences: int = 6) -> tuple[list[str], int]:
    """Remove every line that appears more than ``max_occurrences`` times across the bucket
    (Llama 3: 6, over buckets of 30M documents). Returns the new texts and lines removed.

    Args:
        texts (`list[str]`):
            The bucket's documents; lines are compared stripped, and blank lines are never removed.
        max_occurrences (`int`, *optional*, defaults to `6`):
            A line seen more often than this across the bucket is removed from every document (Llama 3's value).
    """
    counts = Counter(line.strip() for text in texts for line in text.split("\n") if line.strip())
    out, removed = [], 0
    for text in texts:
        kept = []
        for line in text.split("\n"):
            if line.strip() and counts[line.strip()] > max_occurrences:
                removed += 1
            else:
                kept.append(line)
        out.append("\n".join(kept))
    return out, removed


class DuplicatedNgramCoverageFilter(Filter):
    """Drop documents whose words are covered by repeated n-grams beyond a limit (Gopher's
    duplicated n-gram character coverage, which Llama 3 uses against logs and boilerplate).

    Args:
        limits (`tuple`, *optional*, defaults to `GOPHER_DUP_NGRAMS`):
            ``(n, max fraction)`` pairs: drop when the characters covered by repeated n-grams exceed the fraction
            (Gopher: 0.15 for 5-grams down to 0.10 for 10-grams).
    """

    name = "dup_ngram_coverage"

    def __init__(self, limits: tuple = GOPHER_DUP_NGRAMS):
        self.limits = tuple(tuple(x) for x in limits)

    def check(self, doc: Doc):
        tokens = doc.words
        if not tokens:
            return True, None
        ids = word_ids(tokens)
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        total = int(lengths.sum())
        for n, limit in self.limits:
            keys = ngram_keys(ids, n)
            if len(keys) and dup_ngram_char_fraction(lengths, n, keys, total) > limit:
                return False, f"{self.name}:{n}"
        return True, None


def default_dirty_words() -> list[str]:
    """datatrove's banned-words list (adult terms from RefinedWeb's URL filter)."""
    try:
        from datatrove.utils._import_utils import ASSETS_PATH
    except ImportError:
        raise InputError("The default dirty-word list comes with datatrove: pip install 'hf-ext[curate]', or pass words.") from None
    return [w.strip().lower() for w in Path(ASSETS_PATH, "banned_words.txt").read_text().splitlines() if w.strip()]


class DirtyWordsFilter(Filter):
    """Drop documents where dirty words make up more than ``max_ratio`` of the words (or occur
    more than ``max_count`` times when given). The list is configurable.

    Args:
        words (`list[str]` or `None`, *optional*, defaults to `None`):
            The dirty words (compared lower-cased); ``None``: the bundled list.
        max_ratio (`float`, *optional*, defaults to `0.01`):
            Largest share of dirty words kept.
        max_count (`int` or `None`, *optional*, defaults to `None`):
            Instead of the ratio, the most dirty-word occurrences kept.
    """

    name = "dirty_words"

    def __init__(self, words: list[str] | None = None, max_ratio: float = 0.01, max_count: int | None = None):
        self.words = frozenset(w.lower() for w in (words if words is not None else default_dirty_words()))
        self.max_ratio, self.max_count = max_ratio, max_count

    def check(self, doc: Doc):
        tokens = doc.words
        if not tokens:
            return True, None
        count = sum(1 for w in tokens if w.lower() in self.words)
        if self.max_count is not None and count > self.max_count:
            return False, self.name
        return (False, self.name) if count / len(tokens) > self.max_ratio else (True, None)


class TokenKLFilter(Filter):
    """Drop documents whose token distribution is far from a reference corpus:
    KL(P_doc || Q_ref) > ``max_kl`` nats, with Q add-``alpha`` smoothed over the reference
    vocabulary plus one bucket for unseen tokens. Tokens are lower-cased words by default.

    Fit it on reference text with `fit`, save it with `save` and reload with `load`.

    Args:
        max_kl (`float`, *optional*, defaults to `2.0`):
            Largest KL(P_doc || Q_ref) in nats kept.
        alpha (`float`, *optional*, defaults to `0.5`):
            Add-alpha smoothing of the reference distribution.
        reference_counts (`dict[str, int]` or `None`, *optional*, defaults to `None`):
            Token counts of the reference corpus; ``None``: call `fit` first.
    """

    name = "token_kl"

    def __init__(self, max_kl: float = 2.0, alpha: float = 0.5, reference_counts: dict[str, int] | None = None):
        self.max_kl, self.alpha = max_kl, alpha
        self.reference_counts = dict(reference_counts or {})
        self._prepare()

    def _prepare(self):
        self._total = sum(self.reference_counts.values())
        self._denominator = self._total + self.alpha * (len(self.reference_counts) + 1)

    def fit(self, texts) -> "TokenKLFilter":
        counts = Counter()
        for text in texts:
            counts.update(w.lower() for w in Doc(text).words)
        self.reference_counts = dict(counts)
        self._prepare()
        return self

    def divergence(self, doc: Doc) -> float:
        if not self.reference_counts:
            raise InputError("TokenKLFilter has no reference corpus: call fit(reference_texts) or pass reference_counts.")
        counts = Counter(w.lower() for w in doc.words)
        n = sum(counts.values())
        if n == 0:
            return 0.0
        kl = 0.0
        for token, c in counts.items():
            p = c / n
            q = (self.reference_counts.get(token, 0) + self.alpha) / self._denominator
            kl += p * math.log(p / q)
        return kl

    def check(self, doc: Doc):
        kl = doc.meta["token_kl"] = self.divergence(doc)
        return (False, self.name) if kl > self.max_kl else (True, None)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps({"max_kl": self.max_kl, "alpha": self.alpha, "reference_counts": self.reference_counts}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TokenKLFilter":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(f"{path!r} is not a TokenKLFilter file written by save(): {exc}") from None
