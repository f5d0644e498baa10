"""DCLM-Baseline's heuristic rules (RefinedWeb / Gopher), with DCLM's exact semantics.

Each rule keeps a document unless its statistic crosses the threshold; the comparison
(``>`` or ``<``) is DCLM's and is tested at the boundary. Where DCLM and datatrove differ
(documented on each class), DCLM's behaviour is implemented; `hf_ext.curate.datatrove_steps`
wraps datatrove's own filters for the rules they share.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

import numpy as np

from . import kernels
from .base import Doc, Filter
from .text import ngram_keys, word_ids

_NO_ASCII_LETTER = re.compile(r"(?<!\S)[^A-Za-z\s]+(?!\S)")  # whitespace tokens without an ASCII letter
DCLM_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
DCLM_BULLETS = ("●", "•", "*", "-")
DCLM_ELLIPSES = ("...", ". . .", "\u2026")


class PageLengthFilter(Filter):
    """Keep ``min_words <= words <= max_words``, counting DCLM's way: fastText's whitespace
    tokens that start with an alphanumeric character (`hf_ext.curate.text.fasttext_words`;
    "--", "(see" and "</s>" are not words, "don't" and "3.5%" are one each).

    datatrove's Gopher filter counts spaCy tokens that are not pure punctuation: the same
    rule on a different tokenizer.

    Args:
        min_words (`int`, *optional*, defaults to `50`):
            Fewest words a kept document has (inclusive; DCLM's default).
        max_words (`int`, *optional*, defaults to `100_000`):
            Most words a kept document has (inclusive; DCLM's default).
    """

    name = "page_length"

    def __init__(self, min_words: int = 50, max_words: int = 100_000):
        self.min_words, self.max_words = min_words, max_words

    def check(self, doc: Doc):
        n = doc.fasttext_word_count
        return (True, None) if self.min_words <= n <= self.max_words else (False, self.name)


class WordLengthFilter(Filter):
    """Keep mean ``str.split()`` word length in ``[min_length, max_length]``; drop empty documents.

    Args:
        min_length (`float`, *optional*, defaults to `3`):
            Smallest mean word length (characters) kept, inclusive (DCLM's default).
        max_length (`float`, *optional*, defaults to `10`):
            Largest mean word length (characters) kept, inclusive (DCLM's default).
    """

    name = "word_length"

    def __init__(self, min_length: float = 3, max_length: float = 10):
        self.min_length, self.max_length = min_length, max_length

    def check(self, doc: Doc):
        ws = doc.ws_words
        if not ws:
            return False, self.name
        mean = sum(map(len, ws)) / len(ws)
        return (True, None) if self.min_length <= mean <= self.max_length else (False, self.name)


class SymbolRatioFilter(Filter):
    """Drop if (#, "...", ". . .", "…" occurrences) / words > ``max_ratio``.

    DCLM counts hashes and ellipses together and also counts ". . ."; datatrove checks hashes
    and ellipses separately and divides by its token count (punctuation included).

    Args:
        max_ratio (`float`, *optional*, defaults to `0.1`):
            A document whose symbol count per ``str.split()`` word is above this is dropped (DCLM's default);
            one without words is always dropped.
    """

    name = "symbol_ratio"

    def __init__(self, max_ratio: float = 0.1):
        self.max_ratio = max_ratio

    def check(self, doc: Doc):
        n = len(doc.ws_words)
        symbols = sum(doc.text.count(s) for s in ("#", *DCLM_ELLIPSES))
        return (False, self.name) if n == 0 or symbols / n > self.max_ratio else (True, None)


class BulletLinesFilter(Filter):
    """Drop if more than ``max_ratio`` of non-empty lines start with a bullet (● • * -).

    Lines are stripped first and empty lines do not count (DCLM's ``split_paragraphs``).
    Differs from datatrove, which checks only "•" and "-" (``bullets=("•", "-")``) on
    left-stripped lines and counts empty lines in the denominator.

    Args:
        max_ratio (`float`, *optional*, defaults to `0.9`):
            A document whose share of bullet lines is above this is dropped (DCLM's default).
        bullets (`tuple[str, ...]`, *optional*, defaults to `DCLM_BULLETS`):
            Prefixes that make a stripped line a bullet line; DCLM's are ``("●", "•", "*", "-")``.
    """

    name = "bullet_lines"

    def __init__(self, max_ratio: float = 0.9, bullets: tuple[str, ...] = DCLM_BULLETS):
        self.max_ratio, self.bullets = max_ratio, tuple(bullets)

    def check(self, doc: Doc):
        lines = doc.lines
        count = sum(line.startswith(self.bullets) for line in lines)
        return (False, self.name) if count > self.max_ratio * len(lines) else (True, None)


class EllipsisLinesFilter(Filter):
    """Drop if more than ``max_ratio`` of non-empty (stripped) lines end with "...", ". . ." or "…".

    Args:
        max_ratio (`float`, *optional*, defaults to `0.3`):
            A document whose share of lines ending in an ellipsis is above this is dropped (DCLM's default).
    """

    name = "ellipsis_lines"

    def __init__(self, max_ratio: float = 0.3):
        self.max_ratio = max_ratio

    def check(self, doc: Doc):
        lines = doc.lines
        count = sum(line.endswith(DCLM_ELLIPSES) for line in lines)
        return (False, self.name) if count > self.max_ratio * len(lines) else (True, None)


class AlphabeticWordsFilter(Filter):
    """Drop if the fraction of ``str.split()`` words without any letter is > ``max_ratio``.

    Args:
        max_ratio (`float`, *optional*, defaults to `0.2`):
            A document whose share of words holding no alphabetic character (``str.isalpha``) is above this is
            dropped (DCLM's default); one without words is always dropped.
    """

    name = "alphabetic_words"

    def __init__(self, max_ratio: float = 0.2):
        self.max_ratio = max_ratio

    def check(self, doc: Doc):
        ws = doc.ws_words
        if not ws:
            return False, self.name
        # exact str.isalpha semantics; the regex only narrows to tokens without ASCII letters
        non_alpha = sum(1 for w in _NO_ASCII_LETTER.findall(doc.text) if not any(c.isalpha() for c in w))
        return (True, None) if non_alpha / len(ws) <= self.max_ratio else (False, self.name)


class StopWordsFilter(Filter):
    """Keep documents with at least ``min_stop_words`` stop words.

    DCLM counts every occurrence (``count_unique=False``: "the the" counts 2) of lower-cased
    ``str.split()`` words; datatrove (Gopher) counts distinct stop words among its tokens.

    Args:
        min_stop_words (`int`, *optional*, defaults to `2`):
            Fewest stop words a kept document holds, inclusive (DCLM's default).
        count_unique (`bool`, *optional*, defaults to `False`):
            Count distinct stop words (datatrove's Gopher rule) instead of every occurrence (DCLM's).
        stop_words (`tuple[str, ...]`, *optional*, defaults to `DCLM_STOP_WORDS`):
            Lower-case words that count, matched against the lower-cased words; DCLM's are "the", "be", "to", "of",
            "and", "that", "have", "with".
    """

    name = "stop_words"

    def __init__(self, min_stop_words: int = 2, count_unique: bool = False, stop_words: tuple[str, ...] = DCLM_STOP_WORDS):
        self.min_stop_words, self.count_unique, self.stop_words = min_stop_words, count_unique, frozenset(stop_words)

    def check(self, doc: Doc):
        ws, hit = doc.ws_words, self.stop_words.__contains__
        if not self.count_unique and sum(map(hit, map(str.lower, ws[:64]))) >= self.min_stop_words:
            return True, None  # enough in the first words already (DCLM stops counting there too)
        lowered = list(map(str.lower, ws))
        count = len(self.stop_words.intersection(lowered)) if self.count_unique else sum(map(hit, lowered))
        return (True, None) if count >= self.min_stop_words else (False, self.name)


def _segment_fractions(segs: list[str]) -> tuple[float, float]:
    """DCLM: (share of segments that occur more than once, counting every occurrence; share of
    their characters). datatrove counts only the repeats after the first occurrence."""
    counts = Counter(segs)
    if len(counts) == len(segs):
        return 0.0, 0.0
    total_chars = sum(map(len, segs))
    dup = dup_chars = 0
    for seg, c in counts.items():
        if c > 1:
            dup += c
            dup_chars += len(seg) * c
    return dup / len(segs), (dup_chars / total_chars if total_chars else 0.0)


def top_ngram_char_fraction(ids: np.ndarray, lengths: np.ndarray, n: int, keys: np.ndarray, total_chars: int,
                            window_chars: np.ndarray | None = None, with_count: bool = False):
    """Characters of the most frequent n-gram (longest among ties) times its count / all word
    characters (with `with_count`, also that count).

    Args:
        ids (`np.ndarray`):
            The document's ``uint64`` word ids (`hf_ext.curate.text.word_ids`); not read: `keys` already encode the
            n-grams.
        lengths (`np.ndarray`):
            Character length of each word, in document order.
        n (`int`):
            N-gram length of `keys`.
        keys (`np.ndarray`):
            N-gram keys of the words (`hf_ext.curate.text.ngram_keys` for this `n`); equal keys are the same n-gram.
        total_chars (`int`):
            Characters of all words (``lengths.sum()``), the denominator.
        window_chars (`np.ndarray` or `None`, *optional*, defaults to `None`):
            Characters of the n-gram starting at each position (sum of `n` consecutive `lengths`); computed from
            `lengths` when `None`.
        with_count (`bool`, *optional*, defaults to `False`):
            Return ``(fraction, count)`` with the most frequent n-gram's occurrence count instead of the fraction alone.
    """
    order = np.argsort(keys)
    s = keys.take(order)
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    counts = ends.copy()
    counts[1:] -= ends[:-1]
    counts[0] += 1
    top = int(counts.max())
    if top <= 1:
        return (0.0, top) if with_count else 0.0
    if window_chars is None:
        window_chars = np.lib.stride_tricks.sliding_window_view(lengths, n).sum(axis=1)
    members = order[np.repeat(counts == top, counts)]  # positions of the most frequent n-grams
    value = float(window_chars.take(members).max() * top) / total_chars
    return (value, top) if with_count else value


def dup_ngram_char_fraction(lengths: np.ndarray, n: int, keys: np.ndarray, total_chars: int) -> float:
    """Characters of words covered by any n-gram occurring more than once / all word characters.

    Args:
        lengths (`np.ndarray`):
            Character length of each word, in document order; the lengths of the covered words are summed.
        n (`int`):
            N-gram length of `keys`: a repeated n-gram starting at word ``i`` covers words ``i`` to ``i + n - 1``.
        keys (`np.ndarray`):
            One key per n-gram start (`hf_ext.curate.text.ngram_keys`); a key found twice or more is a repeated n-gram.
        total_chars (`int`):
            The denominator: characters of all words (``lengths.sum()``).
    """
    order = np.argsort(keys)
    s = keys.take(order)
    same = s[1:] == s[:-1]
    if not same.any():
        return 0.0
    repeated = np.zeros(len(s), dtype=bool)
    repeated[1:] = same
    repeated[:-1] |= same
    starts = order[repeated]
    cover = np.bincount(starts, minlength=len(lengths) + 1)[: len(lengths) + 1]
    cover[n:] -= np.bincount(starts + n, minlength=len(lengths) + 1)[n : len(lengths) + 1]
    return float(lengths[np.cumsum(cover[: len(lengths)]) > 0].sum()) / total_chars


GOPHER_TOP_NGRAMS = ((2, 0.20), (3, 0.18), (4, 0.16))
GOPHER_DUP_NGRAMS = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))


class GopherRepetitionFilter(Filter):
    """Gopher repetition rules in DCLM's order and semantics (``massive_web_repetition_filters``).

    Drop when: duplicate-line fraction > 0.3, duplicate-paragraph fraction > 0.3, duplicate-line
    char fraction > 0.2, duplicate-paragraph char fraction > 0.2, top 2/3/4-gram char fraction >
    0.20/0.18/0.16, duplicate 5..10-gram char fraction > 0.15 .. 0.10. Differences from datatrove:
    DCLM counts every occurrence of a repeated line (datatrove only the repeats), divides by
    the characters of the segments/words (datatrove by the whole text), and marks all words of
    repeated n-grams (datatrove skips ahead greedily). With numba installed (the ``curate``
    extra), `check` segments, hashes and counts in compiled loops (`hf_ext.curate.kernels`,
    about 5x faster per page on C4); `statistics`, and installs without numba, hash and count with
    numpy. Both give the same decisions.

    Args:
        dup_line_frac (`float`, *optional*, defaults to `0.3`):
            Drop when the share of lines that occur more than once (every occurrence counted) is above this.
        dup_para_frac (`float`, *optional*, defaults to `0.3`):
            Drop when the share of paragraphs that occur more than once (every occurrence counted) is above this.
        dup_line_char_frac (`float`, *optional*, defaults to `0.2`):
            Drop when the characters of repeated lines, over the characters of all lines, are above this.
        dup_para_char_frac (`float`, *optional*, defaults to `0.2`):
            Drop when the characters of repeated paragraphs, over the characters of all paragraphs, are above this.
        top_ngrams (`tuple`, *optional*, defaults to `GOPHER_TOP_NGRAMS`):
            ``(n, limit)`` pairs: drop when the most frequent n-gram's characters times its count, over all word
            characters, are above `limit`; Gopher's are ``((2, 0.20), (3, 0.18), (4, 0.16))``.
        dup_ngrams (`tuple`, *optional*, defaults to `GOPHER_DUP_NGRAMS`):
            ``(n, limit)`` pairs: drop when the characters of words inside repeated n-grams, over all word
            characters, are above `limit`; Gopher's are 5..10-grams at 0.15 down to 0.10.
        skip_paragraph (`bool`, *optional*, defaults to `False`):
            Skip the two paragraph rules (lines and n-grams are still checked).
    """

    name = "gopher_repetition"

    def __init__(
        self,
        dup_line_frac: float = 0.3,
        dup_para_frac: float = 0.3,
        dup_line_char_frac: float = 0.2,
        dup_para_char_frac: float = 0.2,
        top_ngrams: tuple = GOPHER_TOP_NGRAMS,
        dup_ngrams: tuple = GOPHER_DUP_NGRAMS,
        skip_paragraph: bool = False,
    ):
        self.dup_line_frac, self.dup_para_frac = dup_line_frac, dup_para_frac
        self.dup_line_char_frac, self.dup_para_char_frac = dup_line_char_frac, dup_para_char_frac
        self.top_ngrams = tuple(tuple(x) for x in top_ngrams)
        self.dup_ngrams = tuple(tuple(x) for x in dup_ngrams)
        self.skip_paragraph = skip_paragraph

    def statistics(self, doc: Doc) -> dict[str, float]:
        """Every repetition statistic of `doc` (no early exit), for audits and tests."""
        out = {}
        for unit, segs in (("line", doc.lines), ("para", doc.paragraphs)):
            frac, chars = _segment_fractions(segs) if len(segs) > 1 else (0.0, 0.0)
            out[f"dup_{unit}_frac"], out[f"dup_{unit}_char_frac"] = frac, chars
        out.update(self._ngram_stats(doc, early=None))
        return out

    def _ngram_stats(self, doc: Doc, early):
        """n-gram statistics in DCLM's order; with `early`, the first failing rule's name (or None).

        Early mode skips work that cannot change the decision: without a repeated bigram no
        n-gram repeats; the most frequent n-gram occurs at most as often as the most frequent
        shorter one, which bounds its character fraction; the words covered by repeated (n+1)-grams are a subset of those covered
        by repeated n-grams, so once a duplicate fraction is at most every remaining limit,
        the remaining duplicate rules pass."""
        tokens = doc.words
        out = {}
        if not tokens:
            return out if early is None else None
        ids = word_ids(tokens)
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        total = int(lengths.sum())
        cum = np.concatenate(([0], np.cumsum(lengths)))
        top_limits, dup_limits = dict(self.top_ngrams), dict(self.dup_ngrams)
        keys, key_n, top_count = ids, 1, None  # top_count: occurrences of the most frequent shorter n-gram
        for n in sorted({*top_limits, *dup_limits}):
            if len(ids) < n:
                break
            while key_n < n:  # extend the (n-1)-gram keys
                keys, key_n = ngram_keys(ids, key_n + 1, keys if key_n > 1 else None), key_n + 1
            if n in top_limits:
                limit, kind, window = top_limits[n], "top", cum[n:] - cum[:-n]
                if early is not None and top_count is not None and top_count * int(window.max()) / total <= limit:
                    continue  # even the longest n-gram, as often as the top shorter one, stays under the limit
                value, top_count = top_ngram_char_fraction(ids, lengths, n, keys, total, window, with_count=True)
                out[f"top_{n}_gram_char_frac"] = value
            else:
                value = out[f"dup_{n}_gram_char_frac"] = dup_ngram_char_fraction(lengths, n, keys, total)
                limit, kind = dup_limits[n], "dup"
            if early is None:
                continue
            if value > limit:
                return f"{kind}_{n}_gram"
            if n == 2 and value == 0.0 and 1 not in top_limits and 1 not in dup_limits:
                return None  # no repeated bigram: no n-gram repeats
            later_dup = [v for m, v in dup_limits.items() if m > n]
            if kind == "dup" and not [m for m in top_limits if m > n] and (not later_dup or value <= min(later_dup)):
                return None
        return out if early is None else None

    def check(self, doc: Doc):
        if not doc.text:
            return False, self.name
        checks = [("line", doc.lines, self.dup_line_frac, self.dup_line_char_frac)]
        if not self.skip_paragraph:
            checks.append(("para", doc.paragraphs, self.dup_para_frac, self.dup_para_char_frac))
        fracs = {}
        for unit, segs, _, _ in checks:
            if len(segs) == 0:
                return False, f"{self.name}:empty"
            fracs[unit] = _segment_fractions(segs) if len(segs) > 1 else (0.0, 0.0)
        for unit, _, max_frac, _ in checks:  # DCLM checks both counts before both char fractions
            if fracs[unit][0] > max_frac:
                return False, f"{self.name}:dup_{unit}_frac"
        for unit, _, _, max_chars in checks:
            if fracs[unit][1] > max_chars:
                return False, f"{self.name}:dup_{unit}_char_frac"
        reason = self._compiled_ngram_reason(doc) if kernels.available() else self._ngram_stats(doc, early=True)
        return (False, f"{self.name}:{reason}") if reason else (True, None)

    def _compiled_ngram_reason(self, doc: Doc) -> str | None:
        """`_ngram_stats(doc, early=True)` in `hf_ext.curate.kernels`' compiled loops."""
        arrays = kernels.word_arrays(doc.text)
        if arrays is None:  # text that needs the full UAX #29 rules: the words come from `words`
            tokens = doc.words
            ids, lengths = word_ids(tokens), np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        else:
            ids, _, lengths = arrays
        return _ngram_rules(self.top_ngrams, self.dup_ngrams).first_failure(ids, lengths)


@lru_cache(maxsize=16)
def _ngram_rules(top_ngrams: tuple, dup_ngrams: tuple) -> kernels.NgramRules:
    # Module-level, so the filter's pickle (and datasets' map fingerprint) stays the same after use.
    return kernels.NgramRules(top_ngrams, dup_ngrams)
