"""Compiled per-document loops of the Gopher repetition rule (numba, from the ``curate`` extra).

The repetition rule is the slowest heuristic of the DCLM chain: segmenting a page into UAX #29
words, hashing them and counting 2- to 10-grams takes ~180 µs a document in regex and numpy
(about 30 small numpy calls). Here the same work is two loops over the text's code points:

- `word_arrays`: the words of `hf_ext.curate.text.words` (same segmentation, from a table of
  each BMP character's Word_Break class) as 64-bit ids, offsets and character lengths, without
  building the strings. Equal words get equal ids (FNV-1a over the code points, the length
  mixed in, then murmur3's finaliser; not a keyed hash, so text built to collide could, but two
  different words of ordinary text collide with probability ~2^-64). Text that
  needs the full UAX #29 rules (combining marks, format characters, ZWJ, Hebrew letters,
  katakana, characters beyond the BMP) returns ``None``: the caller segments it with
  `hf_ext.curate.text.words`.
- `NgramRules.first_failure`: the top-n-gram and duplicate-n-gram rules in DCLM's order with
  the early exits of `GopherRepetitionFilter`, counting n-grams in an open-addressing table
  over the same rolling keys as `hf_ext.curate.text.ngram_keys`.

Decisions depend only on which words (and n-grams) are equal, so they equal the numpy path's
(`GopherRepetitionFilter.statistics` keeps that path; tests compare the two on every bundled
document and on generated text). Without numba, `available()` is False and the filter uses
the numpy path. Compiled functions are cached on disk (``cache=True``), so a worker process
loads them instead of compiling.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .text import _MIX, word_break_sets  # _MIX: the rolling n-gram keys' multiplier, as in ngram_keys

try:
    import numba
except ImportError:  # numba is in the `curate` extra; the numpy path gives the same decisions
    numba = None

# Word_Break classes of the table (low three bits) and flags.
OTHER, ALETTER, NUMERIC, EXTENDNUMLET, OTHER_ALNUM, FULL_RULES = 0, 1, 2, 3, 4, 5
MID_LETTER, MID_NUM, ALNUM = 8, 16, 32

TOP, DUP = 0, 1


def available() -> bool:
    """Whether numba is installed (the compiled path is used)."""
    return numba is not None


@lru_cache(maxsize=1)
def word_break_table() -> np.ndarray:
    """``uint8[65536]``: each BMP character's class for `hf_ext.curate.text.words`' fast
    pattern (`ALETTER`, `NUMERIC`, `EXTENDNUMLET`, `OTHER_ALNUM`: a one-character word,
    `FULL_RULES`: needs the full UAX #29 rules) plus the `MID_LETTER`, `MID_NUM` and `ALNUM`
    (``str.isalnum``) flags, from the same Word_Break sets."""
    sets = word_break_sets()
    table = np.zeros(0x10000, dtype=np.uint8)
    for cls, chars in ((ALETTER, sets["letters"]), (NUMERIC, sets["digits"]), (EXTENDNUMLET, sets["joiners"]),
                       (OTHER_ALNUM, sets["other_alnum"]), (FULL_RULES, sets["full_rules"])):
        table[np.fromiter(map(ord, chars), dtype=np.int64)] = cls
    for flag, chars in ((MID_LETTER, sets["mid_letter"]), (MID_NUM, sets["mid_num"])):
        table[np.fromiter(map(ord, chars), dtype=np.int64)] |= flag
    alnum = [c for c in range(0x10000) if not 0xD800 <= c < 0xE000 and chr(c).isalnum()]
    table[alnum] |= ALNUM
    return table


def code_points(text: str) -> np.ndarray:
    """The text's code points as ``uint32`` (lone surrogates kept as their values).

    Args:
        text (`str`):
            The text to convert.
    """
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _word_arrays(cps, table):
    n = cps.shape[0]
    ids = np.empty(n, dtype=np.uint64)
    starts = np.empty(n, dtype=np.int64)
    lengths = np.empty(n, dtype=np.int64)
    count = 0
    i = 0
    while i < n:
        c = cps[i]
        if c > 0xFFFF:
            return ids[:0], starts[:0], lengths[:0], False
        t = table[c]
        base = t & 7
        if base == FULL_RULES:
            return ids[:0], starts[:0], lengths[:0], False
        if base == ALETTER or base == NUMERIC or base == EXTENDNUMLET:
            start = i
            i += 1
            while True:
                while i < n:
                    c = cps[i]
                    if c > 0xFFFF:
                        return ids[:0], starts[:0], lengths[:0], False
                    b = table[c] & 7
                    if b == FULL_RULES:
                        return ids[:0], starts[:0], lengths[:0], False
                    if b != ALETTER and b != NUMERIC and b != EXTENDNUMLET:
                        break
                    i += 1
                # WB6/7 and WB11/12: one mid character between two letters or two digits
                if i + 1 < n and cps[i] <= 0xFFFF and cps[i + 1] <= 0xFFFF:
                    prev = table[cps[i - 1]] & 7
                    mid = table[cps[i]]
                    nxt = table[cps[i + 1]] & 7
                    if prev == ALETTER and (mid & MID_LETTER) and nxt == ALETTER:
                        i += 2
                        continue
                    if prev == NUMERIC and (mid & MID_NUM) and nxt == NUMERIC:
                        i += 2
                        continue
                break
        elif base == OTHER_ALNUM:  # a word of its own
            start = i
            i += 1
        else:
            i += 1
            continue
        if table[cps[start]] & ALNUM:  # DCLM drops words that do not start alphanumeric
            h = np.uint64(0xCBF29CE484222325)
            for k in range(start, i):
                h = (h ^ np.uint64(cps[k])) * np.uint64(0x100000001B3)
            h ^= np.uint64(i - start) * np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(33)
            h *= np.uint64(0xFF51AFD7ED558CCD)
            h ^= h >> np.uint64(33)
            h *= np.uint64(0xC4CEB9FE1A85EC53)
            h ^= h >> np.uint64(33)
            ids[count] = h
            starts[count] = start
            lengths[count] = i - start
            count += 1
    return ids[:count], starts[:count], lengths[:count], True


def _first_failing_ngram_rule(ids, lengths, ns, limits, kinds, stop_if_no_bigram, has_later_top, min_later_dup):
    """Index of the first failing rule (rules sorted by n), or -1: `GopherRepetitionFilter`'s
    early-mode loop, step for step."""
    m = ids.shape[0]
    if m == 0:
        return -1
    total = 0
    for i in range(m):
        total += lengths[i]
    cum = np.zeros(m + 1, dtype=np.int64)
    for i in range(m):
        cum[i + 1] = cum[i] + lengths[i]
    cap = 1
    while cap < 2 * m:
        cap *= 2
    mask = np.uint64(cap - 1)
    slot_keys = np.empty(cap, dtype=np.uint64)
    slot_counts = np.zeros(cap, dtype=np.int64)
    pos_slot = np.empty(m, dtype=np.int64)
    cover = np.zeros(m + 1, dtype=np.int64)
    keys = ids.copy()
    key_n = 1
    top_count = -1  # occurrences of the most frequent shorter n-gram (-1: none yet)
    for r in range(ns.shape[0]):
        n = ns[r]
        if m < n:
            break
        while key_n < n:  # extend the (n-1)-gram keys, as ngram_keys does
            if key_n == 1:
                for i in range(m):
                    keys[i] = ids[i] + np.uint64(1)
            for i in range(m - key_n):
                keys[i] = keys[i] * _MIX + ids[i + key_n] + np.uint64(1)
            key_n += 1
        k = m - n + 1  # number of n-grams
        if kinds[r] == TOP:
            max_window = 0
            for i in range(k):
                w = cum[i + n] - cum[i]
                if w > max_window:
                    max_window = w
            if top_count >= 0 and top_count * max_window / total <= limits[r]:
                continue  # even the longest n-gram, as often as the top shorter one, stays under
        # count the n-grams
        for s in range(cap):
            slot_counts[s] = 0
        for i in range(k):
            key = keys[i]
            s = np.int64(key & mask)
            while slot_counts[s] != 0 and slot_keys[s] != key:
                s = (s + 1) & (cap - 1)
            if slot_counts[s] == 0:
                slot_keys[s] = key
            slot_counts[s] += 1
            pos_slot[i] = s
        if kinds[r] == TOP:
            top = 0
            for i in range(k):
                if slot_counts[pos_slot[i]] > top:
                    top = slot_counts[pos_slot[i]]
            if top <= 1:
                value = 0.0
            else:
                longest = 0
                for i in range(k):
                    if slot_counts[pos_slot[i]] == top:
                        w = cum[i + n] - cum[i]
                        if w > longest:
                            longest = w
                value = float(longest * top) / total
            top_count = top
        else:
            any_repeat = False
            for i in range(m + 1):
                cover[i] = 0
            for i in range(k):
                if slot_counts[pos_slot[i]] > 1:
                    any_repeat = True
                    cover[i] += 1
                    cover[i + n] -= 1
            if not any_repeat:
                value = 0.0
            else:
                covered = 0
                depth = 0
                for i in range(m):
                    depth += cover[i]
                    if depth > 0:
                        covered += lengths[i]
                value = float(covered) / total
        if value > limits[r]:
            return r
        if stop_if_no_bigram[r] and value == 0.0:
            return -1  # no repeated bigram: no n-gram repeats
        if kinds[r] == DUP and not has_later_top[r] and value <= min_later_dup[r]:
            return -1
    return -1


if numba is not None:
    _word_arrays_jit = numba.njit(cache=True, nogil=True)(_word_arrays)
    _first_failing_ngram_rule_jit = numba.njit(cache=True, nogil=True)(_first_failing_ngram_rule)


def word_arrays(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(ids, starts, lengths)`` of ``words(text)``: ``uint64`` ids (equal words, equal ids),
    ``int64`` start offsets and character lengths (word ``j`` is
    ``text[starts[j]:starts[j] + lengths[j]]``), or ``None`` when the text needs the full UAX #29
    rules (segment it with `hf_ext.curate.text.words`).

    Args:
        text (`str`):
            The document text.
    """
    ids, starts, lengths, ok = _word_arrays_jit(code_points(text), word_break_table())
    return (ids, starts, lengths) if ok else None


class NgramRules:
    """A `GopherRepetitionFilter`'s n-gram rules as the arrays `first_failing_ngram_rule` takes.

    Args:
        top_ngrams (`tuple`):
            ``(n, limit)`` pairs of the top-n-gram rules.
        dup_ngrams (`tuple`):
            ``(n, limit)`` pairs of the duplicate-n-gram rules (an `n` in both is a top rule, as in the numpy path).
    """

    def __init__(self, top_ngrams: tuple, dup_ngrams: tuple):
        top, dup = dict(top_ngrams), dict(dup_ngrams)
        self.ns = np.array(sorted({*top, *dup}), dtype=np.int64)
        self.kinds = np.array([TOP if n in top else DUP for n in self.ns], dtype=np.int64)
        self.names = [f"{'top' if n in top else 'dup'}_{n}_gram" for n in self.ns]
        self.limits = np.array([top[n] if n in top else dup[n] for n in self.ns], dtype=np.float64)
        self.stop_if_no_bigram = np.array([n == 2 and 1 not in top and 1 not in dup for n in self.ns])
        self.has_later_top = np.array([any(m > n for m in top) for n in self.ns])
        self.min_later_dup = np.array([min([v for m, v in dup.items() if m > n], default=np.inf) for n in self.ns])

    def first_failure(self, ids: np.ndarray, lengths: np.ndarray) -> str | None:
        """Name of the first failing rule (``"top_2_gram"``, ``"dup_5_gram"``...), or ``None``."""
        r = _first_failing_ngram_rule_jit(ids, lengths, self.ns, self.limits, self.kinds, self.stop_if_no_bigram,
                                          self.has_later_top, self.min_later_dup)
        return None if r < 0 else self.names[r]
